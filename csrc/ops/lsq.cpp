// Learnable scale / zero point (LSQ-style) fake-quantize schemas, zp formulation.
// y and dx have x's layout (torch.empty_like(x)), as for the fake_quantize family.
#include "ops/schemas.h"

namespace coreai_opt::ops {

void define_lsq(torch::Library& m) {
  // fake_quantize_lsq(x, scale, zero_point, quant_min, quant_max, grad_factor) -> y
  //   zp_r = round(clamp(zero_point, qmin, qmax)); q = round(x / s) + zp_r;
  //   y = (clamp(q, qmin, qmax) - zp_r) * s. scale and zero_point are float tensors with the
  //   granularity shapes of fake_quantize_int; both receive gradients.
  def_layout_preserving(
      m,
      "fake_quantize_lsq(Tensor x, Tensor scale, Tensor zero_point, int quant_min, "
      "int quant_max, float grad_factor=1.0) -> Tensor");
  // fake_quantize_lsq_backward(grad, x, scale, zero_point, ...) -> (dx, dscale, dzero_point)
  //   inside [qmin, qmax]: dx = g, dscale = g * (y - x) / s, dzero_point = 0
  //   below / above:       dx = 0, dscale = g * (qmin|qmax - zp_r), dzero_point = -g * s
  //   dscale and dzero_point are multiplied by grad_factor and summed over each qparam's
  //   elements inside the kernel; they come back in the dtype of scale / zero_point.
  //   A NaN in x gives dx = 0 there and NaN in both sums of its qparam.
  def_layout_preserving_backward(
      m,
      "fake_quantize_lsq_backward(Tensor grad, Tensor x, Tensor scale, Tensor zero_point, "
      "int quant_min, int quant_max, float grad_factor) -> (Tensor, Tensor, Tensor)");
}

}  // namespace coreai_opt::ops
