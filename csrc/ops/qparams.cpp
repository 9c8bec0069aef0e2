// Qparam calculation schemas: from an observed range to scale / zero point / minval.
#include "ops/schemas.h"

namespace coreai_opt::ops {

void define_qparams(torch::Library& m) {
  // choose_qparams_int(min, max, quant_min, quant_max, symmetric, range_min?, range_max?)
  //   -> (scale, zero_point, minval); formulas in csrc/formats/qparams.h. range_min /
  //   range_max (float_range) replace the widened observed ends when given. scale and
  //   minval come back in min's dtype, zero_point as int32.
  m.def(
      "choose_qparams_int(Tensor min, Tensor max, int quant_min, int quant_max, bool symmetric, "
      "float? range_min=None, float? range_max=None) -> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // choose_qparams_float(min, max, dtype, e8m0, range_min?, range_max?) -> scale
  //   e8m0 False: scale = max_abs / max(dtype) >= eps; True: the OCP MX FLOOR rule
  //   (csrc/formats/e8m0.h). scale comes back in min's dtype (float32 values for E8M0).
  m.def(
      "choose_qparams_float(Tensor min, Tensor max, ScalarType dtype, bool e8m0, "
      "float? range_min=None, float? range_max=None) -> Tensor",
      {at::Tag::pt2_compliant_tag});
}

}  // namespace coreai_opt::ops
