// Meta kernels of the fake_quantize family: the shared argument check, then the output.
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::meta {

namespace {

at::Tensor fake_quantize_int(const at::Tensor& x, const at::Tensor& scale,
                             const std::optional<at::Tensor>& zero_point,
                             const std::optional<at::Tensor>& minval, int64_t quant_min,
                             int64_t quant_max) {
  ops::check_fake_quantize_int(x, scale, zero_point, minval, quant_min, quant_max);
  return at::empty_like(x);  // x's layout, as every device returns
}

at::Tensor fake_quantize_int_backward(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& scale,
                                      const std::optional<at::Tensor>& zero_point,
                                      const std::optional<at::Tensor>& minval, int64_t quant_min,
                                      int64_t quant_max) {
  ops::check_fake_quantize_int_backward(grad, x, scale, zero_point, minval, quant_min, quant_max);
  return at::empty_like(x);  // x's layout, as every device returns
}

at::Tensor fake_quantize_float(const at::Tensor& x, const at::Tensor& scale,
                               c10::ScalarType dtype) {
  ops::check_fake_quantize_float(x, scale, dtype);
  return at::empty_like(x);  // x's layout, as every device returns
}

at::Tensor fake_quantize_float_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& scale, c10::ScalarType dtype) {
  ops::check_fake_quantize_float_backward(grad, x, scale, dtype);
  return at::empty_like(x);  // x's layout, as every device returns
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Meta, m) { COREAI_OPT_FAKE_QUANTIZE_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::meta
