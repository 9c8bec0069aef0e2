// Meta kernels of the fused family.
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <tuple>

#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::meta {

namespace {

at::Tensor fused_fake_quantize(const at::Tensor& x, const at::Tensor& observer_on,
                               const at::Tensor& fake_quant_on, const at::Tensor& running_min,
                               const at::Tensor& running_max, const at::Tensor& scale,
                               const at::Tensor& zero_point, const at::Tensor& minval,
                               c10::SymIntArrayRef block_size, c10::ScalarType dtype,
                               int64_t quant_min, int64_t quant_max, bool /*symmetric*/,
                               bool /*use_minval*/, bool /*e8m0*/, c10::string_view method,
                               double averaging_constant, std::optional<double> range_min,
                               std::optional<double> range_max) {
  ops::check_fused_fake_quantize(x, observer_on, fake_quant_on, running_min, running_max, scale,
                                 zero_point, minval, block_size, dtype, quant_min, quant_max,
                                 method, averaging_constant, range_min, range_max);
  return at::empty_like(x);  // x's layout, as every device returns
}

at::Tensor fused_fake_quantize_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& fake_quant_on, const at::Tensor& scale,
                                        const at::Tensor& zero_point, const at::Tensor& minval,
                                        c10::ScalarType dtype, int64_t quant_min, int64_t quant_max,
                                        bool use_minval) {
  ops::check_fused_fake_quantize_backward(grad, x, fake_quant_on, scale, zero_point, minval, dtype,
                                          quant_min, quant_max, use_minval);
  return at::empty_like(x);
}

std::tuple<at::Tensor, at::Tensor> fused_fake_quantize_cachemask(
    const at::Tensor& x, const at::Tensor& observer_on, const at::Tensor& fake_quant_on,
    const at::Tensor& running_min, const at::Tensor& running_max, const at::Tensor& scale,
    const at::Tensor& zero_point, const at::Tensor& minval, c10::SymIntArrayRef block_size,
    c10::ScalarType dtype, int64_t quant_min, int64_t quant_max, bool /*symmetric*/,
    bool /*use_minval*/, bool /*e8m0*/, c10::string_view method, double averaging_constant,
    std::optional<double> range_min, std::optional<double> range_max) {
  ops::check_fused_fake_quantize(x, observer_on, fake_quant_on, running_min, running_max, scale,
                                 zero_point, minval, block_size, dtype, quant_min, quant_max,
                                 method, averaging_constant, range_min, range_max,
                                 "fused_fake_quantize_cachemask");
  return {at::empty_like(x), at::empty_like(x, x.options().dtype(at::kBool))};
}

at::Tensor fake_quantize_mask_backward(const at::Tensor& grad, const at::Tensor& mask) {
  ops::check_fake_quantize_mask_backward(grad, mask);
  return at::empty_like(mask, grad.options().dtype(grad.scalar_type()));
}

void fake_quantize_mask_backward_(const at::Tensor& grad, const at::Tensor& mask) {
  ops::check_fake_quantize_mask_backward(grad, mask, "fake_quantize_mask_backward_");
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Meta, m) { COREAI_OPT_FUSED_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::meta
