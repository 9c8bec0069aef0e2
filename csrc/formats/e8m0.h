// Shared power-of-two (E8M0) scales by the OCP MX FLOOR rule:
//   e     = unbiased exponent field of max_abs (float32 bits, no rounding)
//   e_s   = clamp(e - emax_elem, -127, 128)      emax_elem = 2 (FP4), 8 (E4M3), 15 (E5M2)
//   scale = 2^e_s rebuilt from its bits, then at least 2^-126
// The E8M0 code of the scale is e_s + 127.
#pragma once

#include <cstdint>

#include "formats/bits.h"

namespace coreai_opt::formats {

COREAI_HD int e8m0_exponent(float max_abs, int emax_elem) {
  const int e = static_cast<int>((float_to_bits(max_abs) >> 23) & 0xFF) - 127;
  int es = e - emax_elem;
  if (es < -127) es = -127;
  if (es > 128) es = 128;
  return es;
}

COREAI_HD float e8m0_scale(float max_abs, int emax_elem) {
  const int es = e8m0_exponent(max_abs, emax_elem);
  const float s = bits_to_float(static_cast<uint32_t>(es + 127) << 23);
  const float smallest = bits_to_float(1u << 23);  // 2^-126
  return s < smallest ? smallest : s;
}

// Value of an E8M0 code (torch.float8_e8m0fnu): 2^(code - 127), built from bits (code 0 is
// the subnormal 2^-127), and NaN for 0xFF. No ldexp: per-block scales of a large weight
// number in the hundreds of thousands.
COREAI_HD float e8m0_decode(uint8_t code) {
  if (code == 0xFF) return bits_to_float(0x7FC00000u);
  if (code == 0) return bits_to_float(0x00400000u);
  return bits_to_float(static_cast<uint32_t>(code) << 23);
}

}  // namespace coreai_opt::formats
