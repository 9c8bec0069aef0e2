// Bit-level helpers shared by every format header. Header-only and libtorch-free so the
// same code serves the CPU kernels, the Catch2 tests (under ASan/UBSan) and CUDA.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define COREAI_HD __host__ __device__ __forceinline__
#else
#define COREAI_HD inline
#endif

namespace coreai_opt::formats {

COREAI_HD uint32_t float_to_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  uint32_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
#endif
}

COREAI_HD float bits_to_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float v;
  std::memcpy(&v, &b, sizeof(v));
  return v;
#endif
}

// 2^e for e in [-126, 127], built from the exponent field (exact, no libm).
COREAI_HD float exp2_int(int e) { return bits_to_float(static_cast<uint32_t>(e + 127) << 23); }

}  // namespace coreai_opt::formats
