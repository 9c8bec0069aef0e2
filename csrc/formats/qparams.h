// Scale / zero point / minval from an observed range, scalar form shared by every kernel.
// Formulas (float32 throughout, eps = float32 epsilon):
//   range widened to include 0: lo = min(lo, 0), hi = max(hi, 0), unless fixed by float_range
//   symmetric:  scale = max(-lo, hi) / ((qmax - qmin) / 2) >= eps, zp = int((qmax + qmin + 1) / 2)
//               minval = -max(|lo|, |hi|)
//   asymmetric: scale = (hi - lo) / (qmax - qmin) >= eps,
//               zp = clamp(qmin - round(lo / scale), qmin, qmax), minval = lo
//   float formats: scale = max(-lo, hi) / max_value >= eps, or the E8M0 rule (e8m0.h)
#pragma once

#include <cstdint>

#include "formats/bits.h"
#include "formats/rounding.h"

namespace coreai_opt::formats {

constexpr float kFloat32Eps = 1.1920928955078125e-07f;

struct IntQParams {
  float scale;
  int32_t zero_point;
  float minval;
};

COREAI_HD float widen_lo(float lo) { return lo < 0.0f ? lo : (lo != lo ? lo : 0.0f); }
COREAI_HD float widen_hi(float hi) { return hi > 0.0f ? hi : (hi != hi ? hi : 0.0f); }
COREAI_HD float clamp_eps(float s) { return s < kFloat32Eps ? kFloat32Eps : s; }

// NaN handling follows the tensor formulas: a NaN range gives a NaN scale (clamp keeps NaN).
COREAI_HD float clamp_eps_nan(float s) { return s != s ? s : clamp_eps(s); }

// lo / hi must already be widened (or fixed by float_range).
COREAI_HD IntQParams int_qparams(float lo, float hi, int32_t qmin, int32_t qmax, bool symmetric) {
  IntQParams p{};
  if (symmetric) {
    const float neg = -lo;
    const float max_abs = neg > hi ? neg : (neg != neg ? neg : hi);
    p.scale = clamp_eps_nan(max_abs / (static_cast<float>(qmax - qmin) / 2.0f));
    p.zero_point = static_cast<int32_t>(static_cast<float>(qmax + qmin + 1) / 2.0f);
    p.minval = -max_abs;
  } else {
    p.scale = clamp_eps_nan((hi - lo) / static_cast<float>(qmax - qmin));
    const float zp = static_cast<float>(qmin) - round_half_even(lo / p.scale);
    const float zc = zp < qmin ? qmin : (zp > qmax ? qmax : zp);
    p.zero_point = zc != zc ? qmin : static_cast<int32_t>(zc);
    p.minval = lo;
  }
  return p;
}

COREAI_HD float max_abs_of(float lo, float hi) {
  const float neg = -lo;
  return neg > hi ? neg : (neg != neg ? neg : hi);
}

}  // namespace coreai_opt::formats
