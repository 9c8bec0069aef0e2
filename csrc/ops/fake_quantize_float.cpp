// Float-format fake-quantize schemas (FP8 E4M3FN / E5M2, FP4 E2M1).
#include "ops/schemas.h"

namespace coreai_opt::ops {

void define_fake_quantize_float(torch::Library& m) {
  // fake_quantize_float(x, scale, dtype) -> y
  //   dtype: torch.float8_e4m3fn, torch.float8_e5m2 or torch.float4_e2m1fn_x2.
  //   y = round_to_format(clamp(x / s, -max, max)) * s, round to nearest even, saturating.
  //   scale: float32 / float16 / bfloat16 / float64, or float8_e8m0fnu (power-of-two MX
  //   scales); its shape encodes the granularity as for fake_quantize_int. NaN stays NaN.
  m.def("fake_quantize_float(Tensor x, Tensor scale, ScalarType dtype) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // fake_quantize_float_backward(grad, x, scale, dtype) -> grad_x
  //   grad_x = grad * [-max <= x / s <= max]
  m.def(
      "fake_quantize_float_backward(Tensor grad, Tensor x, Tensor scale, ScalarType dtype) "
      "-> Tensor",
      {at::Tag::pt2_compliant_tag});
}

}  // namespace coreai_opt::ops
