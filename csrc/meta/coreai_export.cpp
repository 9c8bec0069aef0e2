// Meta kernels of the coreai_export family: the shared argument check, then the output
// (sizes symbolic where the input's are; FP4 halves / doubles the last dimension).
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::meta {

namespace {

at::Tensor quantize(const at::Tensor& input, const at::Tensor& scale, c10::ScalarType output_dtype,
                    const std::optional<at::Tensor>& zero_point,
                    const std::optional<at::Tensor>& minval, c10::SymInt axis) {
  const auto c = ops::check_quantize(input, scale, output_dtype, zero_point, minval, axis);
  return at::empty_symint(c.out_sizes, input.options().dtype(c.out_dtype));
}

at::Tensor dequantize(const at::Tensor& input, const at::Tensor& scale,
                      const std::optional<at::Tensor>& zero_point,
                      const std::optional<at::Tensor>& minval, c10::SymInt axis,
                      std::optional<c10::ScalarType> input_dtype,
                      std::optional<c10::ScalarType> output_dtype) {
  const auto c =
      ops::check_dequantize(input, scale, zero_point, minval, axis, input_dtype, output_dtype);
  return at::empty_symint(c.out_sizes, input.options().dtype(c.out_dtype));
}

at::Tensor blockwise_shift_scale(const at::Tensor& input, const at::Tensor& scale,
                                 const std::optional<at::Tensor>& zero_point,
                                 const std::optional<at::Tensor>& minval,
                                 std::optional<c10::ScalarType> input_dtype,
                                 std::optional<c10::ScalarType> output_dtype) {
  const auto c =
      ops::check_blockwise_shift_scale(input, scale, zero_point, minval, input_dtype, output_dtype);
  return at::empty_symint(c.out_sizes, input.options().dtype(c.out_dtype));
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Meta, m) { COREAI_OPT_COREAI_EXPORT_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::meta
