// Meta kernels of the observe family.
#include <torch/library.h>

#include "meta/like.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::meta {

namespace {

std::tuple<at::Tensor, at::Tensor> minmax(const at::Tensor& x, c10::SymIntArrayRef block_size) {
  ops::check_minmax(x, block_size);
  const auto q = reduced_sizes(x, block_size);
  return {at::empty_symint(q, x.options()), at::empty_symint(q, x.options())};
}

void update_range(const at::Tensor& x, const at::Tensor& running_min, const at::Tensor& running_max,
                  c10::SymIntArrayRef block_size, c10::string_view method,
                  double averaging_constant) {
  ops::check_update_range(x, running_min, running_max, block_size, method, averaging_constant);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Meta, m) { COREAI_OPT_OBSERVE_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::meta
