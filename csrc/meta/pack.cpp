// Meta kernels of the pack family.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::meta {

namespace {

at::Tensor pack(const at::Tensor& q, c10::ScalarType dtype) {
  const auto checked = ops::check_pack(q, dtype);
  return at::empty_symint(checked.out_sizes, q.options().dtype(at::kByte));
}

at::Tensor unpack(const at::Tensor& packed, c10::ScalarType dtype) {
  const auto checked = ops::check_unpack(packed, dtype);
  const auto& fmt = checked.format;
  const auto out_dtype = fmt.is_float ? at::kFloat : (fmt.is_signed ? at::kChar : at::kByte);
  return at::empty_symint(checked.out_sizes, packed.options().dtype(out_dtype));
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Meta, m) { COREAI_OPT_PACK_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::meta
