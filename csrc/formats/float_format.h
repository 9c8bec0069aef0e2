// Minifloat formats (OCP FP8 E4M3FN / E5M2, OCP MX FP4 E2M1): their parameters, saturating
// round-to-nearest-even onto the format's grid, and exact encode / decode of codes.
//
// Rounding works in float32 arithmetic: the grid spacing (quantum) inside the binade of |v|
// is 2^(e - mantissa_bits), with e clamped to the smallest normal exponent so subnormals
// share the spacing of the first normal binade. Dividing by a power of two is exact, so
// round_half_even(|v| / quantum) * quantum is the nearest grid point, ties to even code.
#pragma once

#include <cstdint>

#include "formats/bits.h"
#include "formats/rounding.h"

namespace coreai_opt::formats {

enum class FloatFormat : uint8_t { E4M3FN = 0, E5M2 = 1, E2M1 = 2 };

struct FloatFormatInfo {
  int exponent_bits;
  int mantissa_bits;
  int bias;
  float max_value;  // largest finite magnitude
  int max_pow2;     // floor(log2(max_value)), the OCP MX "emax" of the element type
  bool has_inf;     // E5M2 only
  bool has_nan;     // E4M3FN (S.1111.111) and E5M2; E2M1 has no special codes
  int bits;         // total width of one code
};

COREAI_HD FloatFormatInfo float_format_info(FloatFormat f) {
  switch (f) {
    case FloatFormat::E4M3FN:
      return FloatFormatInfo{4, 3, 7, 448.0f, 8, false, true, 8};
    case FloatFormat::E5M2:
      return FloatFormatInfo{5, 2, 15, 57344.0f, 15, true, true, 8};
    case FloatFormat::E2M1:
    default:
      return FloatFormatInfo{2, 1, 1, 6.0f, 2, false, false, 4};
  }
}

// Smallest normal exponent, 1 - bias.
COREAI_HD int min_normal_exponent(const FloatFormatInfo& f) { return 1 - f.bias; }

// Grid spacing for a finite non-negative magnitude a (a <= max_value).
COREAI_HD float grid_quantum(float a, const FloatFormatInfo& f) {
  int e = static_cast<int>((float_to_bits(a) >> 23) & 0xFF) - 127;
  const int emin = min_normal_exponent(f);
  if (e < emin) e = emin;
  return exp2_int(e - f.mantissa_bits);
}

// Saturating round-to-nearest-even of v onto the format's grid. NaN stays NaN; +-inf
// saturate to +-max_value (the reference clamps before casting). The sign of zero is kept.
COREAI_HD float round_to_float_format(float v, const FloatFormatInfo& f) {
  if (v != v) return v;
  const float a_in = v < 0.0f ? -v : v;
  const float a = a_in > f.max_value ? f.max_value : a_in;
  const float q = grid_quantum(a, f);
  const float r = round_half_even(a / q) * q;
  // Copy v's sign bit (negating would turn -0 into +0).
  return bits_to_float(float_to_bits(r) | (float_to_bits(v) & 0x80000000u));
}

// Encodes v (rounded as above) as a code of f.bits bits. NaN maps to the format's NaN code
// (all ones); E2M1 has none, so callers reject NaN before packing FP4.
COREAI_HD uint32_t encode_float_format(float v, const FloatFormatInfo& f) {
  const uint32_t sign = (float_to_bits(v) >> 31) << (f.bits - 1);
  if (v != v) return sign | ((1u << (f.bits - 1)) - 1u);
  const float r = round_to_float_format(v, f);
  const float a = r < 0.0f ? -r : r;
  if (a == 0.0f) return sign;
  int e = static_cast<int>((float_to_bits(a) >> 23) & 0xFF) - 127;
  const int emin = min_normal_exponent(f);
  if (e < emin) {
    // Subnormal: exponent field 0, mantissa counts multiples of the smallest subnormal.
    const float m = a / exp2_int(emin - f.mantissa_bits);
    return sign | static_cast<uint32_t>(m);
  }
  const uint32_t exp_field = static_cast<uint32_t>(e + f.bias);
  const float m = a / exp2_int(e - f.mantissa_bits) - static_cast<float>(1 << f.mantissa_bits);
  return sign | (exp_field << f.mantissa_bits) | static_cast<uint32_t>(m);
}

// Decodes a code of f.bits bits; the inverse of encode on every non-NaN code.
COREAI_HD float decode_float_format(uint32_t code, const FloatFormatInfo& f) {
  const uint32_t sign = (code >> (f.bits - 1)) & 1u;
  const uint32_t exp_field = (code >> f.mantissa_bits) & ((1u << f.exponent_bits) - 1u);
  const uint32_t man = code & ((1u << f.mantissa_bits) - 1u);
  const uint32_t exp_all_ones = (1u << f.exponent_bits) - 1u;
  float a;
  if (f.has_inf && exp_field == exp_all_ones) {
    a = man == 0 ? __builtin_huge_valf() : __builtin_nanf("");
  } else if (!f.has_inf && f.has_nan && exp_field == exp_all_ones &&
             man == (1u << f.mantissa_bits) - 1u) {
    a = __builtin_nanf("");
  } else if (exp_field == 0) {
    a = static_cast<float>(man) * exp2_int(min_normal_exponent(f) - f.mantissa_bits);
  } else {
    const int e = static_cast<int>(exp_field) - f.bias;
    a = static_cast<float>((1u << f.mantissa_bits) + man) * exp2_int(e - f.mantissa_bits);
  }
  return sign ? -a : a;
}

}  // namespace coreai_opt::formats
