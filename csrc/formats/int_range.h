// Integer quantization ranges: the one table every kernel, the Python spec and the tests use.
//   signed n-bit   [-2^(n-1), 2^(n-1) - 1]
//   unsigned n-bit [0, 2^n - 1]
//   narrow (symmetric_with_clipping) applies to signed ranges only: [-qmax, qmax].
#pragma once

#include <cstdint>

namespace coreai_opt::formats {

struct IntRange {
  int32_t qmin;
  int32_t qmax;
};

constexpr bool is_supported_int_bits(int bits) { return bits >= 1 && bits <= 8; }

constexpr IntRange int_range(int bits, bool is_signed, bool narrow) {
  if (!is_signed) return IntRange{0, (1 << bits) - 1};
  const int32_t qmax = (1 << (bits - 1)) - 1;
  return IntRange{narrow ? -qmax : -qmax - 1, qmax};
}

// The widest range an int8/uint8 container can hold, used to validate user ranges.
constexpr int32_t kIntContainerMin = -128;
constexpr int32_t kIntContainerMax = 255;

}  // namespace coreai_opt::formats
