// Fake-quantize schemas: integer ranges and float formats (FP8 E4M3FN / E5M2, FP4 E2M1).
//
// The shape of `scale` (and of zero_point / minval, which must match it) encodes the
// granularity: it has x's rank and each dimension is 1 (shared), x.size(d) (one per index)
// or x.size(d) / block (one per block along d). A 0-d scale means per-tensor.
//
// Every output of x's shape (y, grad_x) has x's layout, as torch.empty_like(x): a
// channels_last x gives a channels_last y, on every device (csrc/cpu/memory_order.h).
#include "ops/schemas.h"

namespace coreai_opt::ops {

void define_fake_quantize(torch::Library& m) {
  // fake_quantize_int(x, scale, zero_point?, minval?, quant_min, quant_max) -> y
  //   zp form (minval None):  q = clamp(round(x / s) + zp, qmin, qmax);        y = (q - zp) * s
  //   minval form:            q = clamp(round((x - m) / s) + qmin, qmin, qmax); y = (q - qmin) * s
  //   + m zero_point None in the zp form means 0; passing both offsets is an error. round = half to
  //   even; float32 arithmetic; y has x's dtype. NaN in x gives NaN, +-inf saturates to the range's
  //   ends.
  def_layout_preserving(
      m,
      "fake_quantize_int(Tensor x, Tensor scale, Tensor? zero_point, Tensor? minval, "
      "int quant_min, int quant_max) -> Tensor");
  // fake_quantize_int_backward(grad, x, ...) -> grad_x
  //   Straight-through estimator with the clipping mask, recomputed from x:
  //   grad_x = grad * [qmin <= pre-clamp q <= qmax] (pre-clamp q = round(...) + offset).
  def_layout_preserving_backward(
      m,
      "fake_quantize_int_backward(Tensor grad, Tensor x, Tensor scale, Tensor? zero_point, "
      "Tensor? minval, int quant_min, int quant_max) -> Tensor");
  // fake_quantize_float(x, scale, dtype) -> y
  //   dtype: torch.float8_e4m3fn, torch.float8_e5m2 or torch.float4_e2m1fn_x2.
  //   y = round_to_format(clamp(x / s, -max, max)) * s, round to nearest even, saturating.
  //   scale: float32 / float16 / bfloat16 / float64, or float8_e8m0fnu (power-of-two MX
  //   scales); its shape encodes the granularity as for fake_quantize_int. NaN stays NaN.
  def_layout_preserving(m,
                        "fake_quantize_float(Tensor x, Tensor scale, ScalarType dtype) -> Tensor");
  // fake_quantize_float_backward(grad, x, scale, dtype) -> grad_x
  //   grad_x = grad * [-max <= x / s <= max]
  def_layout_preserving_backward(
      m,
      "fake_quantize_float_backward(Tensor grad, Tensor x, Tensor scale, ScalarType dtype) "
      "-> Tensor");
}

}  // namespace coreai_opt::ops
