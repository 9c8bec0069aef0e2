// Meta kernels of the qparams family.
#include <torch/library.h>

#include "meta/like.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::meta {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> choose_qparams_int(
    const at::Tensor& min, const at::Tensor& max, int64_t quant_min, int64_t quant_max,
    bool /*symmetric*/, std::optional<double> range_min, std::optional<double> range_max) {
  ops::check_choose_qparams_int(min, max, quant_min, quant_max, range_min, range_max);
  return {like(min), like(min, at::kInt), like(min)};
}

at::Tensor choose_qparams_float(const at::Tensor& min, const at::Tensor& max, c10::ScalarType dtype,
                                bool e8m0, std::optional<double> range_min,
                                std::optional<double> range_max) {
  ops::check_choose_qparams_float(min, max, dtype, range_min, range_max);
  return like(min, e8m0 ? at::kFloat : min.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Meta, m) { COREAI_OPT_QPARAMS_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::meta
