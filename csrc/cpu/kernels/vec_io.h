// Loads and stores that convert float16 / bfloat16 to float32 in registers, two float
// vectors at a time (one 16-bit vector holds as many elements as two float vectors), so no
// kernel ever makes a full-size float32 copy. float64 takes the scalar path.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace coreai_opt::cpu {
inline namespace CPU_CAPABILITY {

using fVec = at::vec::Vectorized<float>;
constexpr int64_t kF = fVec::size();
constexpr int64_t kStep = 2 * kF;

template <typename T>
constexpr bool kVectorizable = !std::is_same_v<T, double>;

template <typename T>
inline void load2(const T* p, fVec& a, fVec& b) {
  if constexpr (std::is_same_v<T, float>) {
    a = fVec::loadu(p);
    b = fVec::loadu(p + kF);
  } else {
    auto v = at::vec::Vectorized<T>::loadu(p);
    std::tie(a, b) = at::vec::convert_to_float<T>(v);
  }
}

template <typename T>
inline void store2(T* p, const fVec& a, const fVec& b) {
  if constexpr (std::is_same_v<T, float>) {
    a.store(p);
    b.store(p + kF);
  } else {
    at::vec::convert_from_float<T>(a, b).store(p);
  }
}

// Lane-wise variants for loops whose per-element function does not depend on the element's
// position (one scale for the whole run). bfloat16 on AVX2 then skips the cross-lane
// shuffles: the load interleaves each 128-bit lane's 16-bit values with zeros (giving
// floats in the order 0-3, 8-11 | 4-7, 12-15), and the store's lane-wise pack restores the
// original order. Rounding to bfloat16 is round-half-even by integer arithmetic without
// ATen's NaN blend, which is exact for every float whose NaN payload has zero low 16 bits:
// the caller guarantees that every NaN it stores came from a bfloat16 input or from
// arithmetic on NaN-free qparams (x86 keeps the first NaN operand's payload; new NaNs are
// the default 0xFFC00000). Other dtypes and ISAs use load2 / store2.
template <typename T>
constexpr bool kLanewiseIo =
#if defined(CPU_CAPABILITY_AVX2)
    std::is_same_v<T, c10::BFloat16>;
#else
    false;
#endif

template <typename T>
inline void load2_lanewise(const T* p, fVec& a, fVec& b) {
#if defined(CPU_CAPABILITY_AVX2)
  if constexpr (kLanewiseIo<T>) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i zero = _mm256_setzero_si256();
    a = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));
    b = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));
    return;
  }
#endif
  load2(p, a, b);
}

#if defined(CPU_CAPABILITY_AVX2)
inline __m256i bf16_pack_lanewise(const fVec& a, const fVec& b) {
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
  auto round = [&](const fVec& f) {  // (bits + 0x7fff + lsb) >> 16
    const __m256i i = _mm256_castps_si256(f);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(i, 16), one);
    return _mm256_srli_epi32(_mm256_add_epi32(i, _mm256_add_epi32(bias, lsb)), 16);
  };
  return _mm256_packus_epi32(round(a), round(b));
}
#endif

template <typename T>
inline void store2_lanewise(T* p, const fVec& a, const fVec& b) {
#if defined(CPU_CAPABILITY_AVX2)
  if constexpr (kLanewiseIo<T>) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), bf16_pack_lanewise(a, b));
    return;
  }
#endif
  store2(p, a, b);
}

// Streaming (non-temporal) stores for outputs too large to stay in the last-level cache:
// they skip the read-for-ownership of each destination line, so a pass moves two bytes per
// byte stored instead of three (a standalone 4096x4096 per-block int4 loop on 2 threads:
// 4.0-5.4 ms instead of 5.8-6.9 ms; copy_ 5.3-6.3 ms). AVX2 only, float32 and lane-wise bfloat16
// pairs; p must be 32-byte aligned, and a thread that streamed calls stream_fence() before
// its chunk ends so the stores are visible to whoever reads the output next.
constexpr int64_t kStreamBytes = int64_t{16} << 20;

template <typename T>
constexpr bool kStreamable =
#if defined(CPU_CAPABILITY_AVX2)
    std::is_same_v<T, float> || kLanewiseIo<T>;
#else
    false;
#endif

template <typename T>
inline void stream2_lanewise(T* p, const fVec& a, const fVec& b) {
#if defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    _mm256_stream_ps(p, a);
    _mm256_stream_ps(p + kF, b);
    return;
  } else if constexpr (kLanewiseIo<T>) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), bf16_pack_lanewise(a, b));
    return;
  }
#endif
  store2_lanewise(p, a, b);
}

// True when a streaming store to p would be unaligned: runs store such leading elements
// one at a time.
template <typename T>
inline bool stream_misaligned(const T* p) {
  return (reinterpret_cast<uintptr_t>(p) & 31) != 0;
}

inline void stream_fence() {
#if defined(CPU_CAPABILITY_AVX2)
  _mm_sfence();
#endif
}

// One float vector (kF elements): the step for runs and tails shorter than kStep.
template <typename T>
inline fVec load1(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return fVec::loadu(p);
  } else {
    fVec a;
    at::vec::load_to_float<T>(p, a);
    return a;
  }
}

template <typename T>
inline void store1(T* p, const fVec& a) {
  if constexpr (std::is_same_v<T, float>) {
    a.store(p);
  } else {
    at::vec::convert_from_float<T>(a, a).store(p, kF);
  }
}

// kF offsets starting at q as floats.
template <typename View>
inline fVec load_offsets(const View& v, int64_t q) {
  if (v.f32) return fVec::loadu(v.f32 + q);
  if (v.i32) {
    return at::vec::convert_to_fp_of_same_size<float>(
        at::vec::Vectorized<int32_t>::loadu(v.i32 + q));
  }
  return fVec(v.constant);
}

// NaN-propagating clamp (torch.clamp semantics). The x86 min/max instructions return their
// second operand when either is NaN, and ATen's AVX2/AVX512 clamp passes the value second:
// two instructions. The portable build needs the explicit NaN-aware minimum / maximum.
inline fVec clamp_nan(const fVec& v, const fVec& lo, const fVec& hi) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  return at::vec::clamp(v, lo, hi);
#else
  return at::vec::minimum(at::vec::maximum(v, lo), hi);
#endif
}

// Maximum of two vectors that are never NaN: one instruction where ATen's maximum adds a
// NaN check.
inline fVec max_not_nan(const fVec& a, const fVec& b) {
#if defined(CPU_CAPABILITY_AVX2)
  return _mm256_max_ps(a, b);
#elif defined(CPU_CAPABILITY_AVX512)
  return _mm512_max_ps(a, b);
#else
  return at::vec::maximum(a, b);
#endif
}

inline float clamp_nan(float v, float lo, float hi) {
  if (v != v) return v;
  return v < lo ? lo : (v > hi ? hi : v);
}

inline float min_nan(float a, float b) { return (a < b || a != a) ? a : b; }
inline float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }

// 1.0f where the mask lane is set, else 0.0f.
inline fVec mask_to_one(const fVec& mask) { return mask & fVec(1.0f); }

#if defined(CPU_CAPABILITY_AVX2)
// The kF bytes (one 0 / 1 per bit of an 8-bit lane mask), as one 64-bit store.
struct LaneBytes {
  uint64_t bytes[256];
  constexpr LaneBytes() : bytes() {
    for (int bits = 0; bits < 256; ++bits) {
      for (int k = 0; k < 8; ++k) {
        if (bits & (1 << k)) bytes[bits] |= uint64_t{1} << (8 * k);
      }
    }
  }
};
inline constexpr LaneBytes kLaneBytes{};
#endif

// Stores kF bools: true where the lane of `mask` (all ones or all zeros, as a comparison
// gives) is set.
inline void store_mask(bool* p, const fVec& mask) {
#if defined(CPU_CAPABILITY_AVX512)
  const __mmask16 k = _mm512_movepi32_mask(_mm512_castps_si512(mask));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_maskz_set1_epi8(k, 1));
#elif defined(CPU_CAPABILITY_AVX2)
  const uint64_t bytes = kLaneBytes.bytes[_mm256_movemask_ps(mask)];
  std::memcpy(p, &bytes, sizeof(bytes));
#else
  float lanes[kF];
  mask_to_one(mask).store(lanes);
  for (int64_t k = 0; k < kF; ++k) p[k] = lanes[k] != 0.0f;
#endif
}

// kF bools as floats: 1.0f where true, else 0.0f.
inline fVec load_mask(const bool* p) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
#elif defined(CPU_CAPABILITY_AVX2)
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
#else
  float lanes[kF];
  for (int64_t k = 0; k < kF; ++k) lanes[k] = p[k] ? 1.0f : 0.0f;
  return fVec::loadu(lanes);
#endif
}

}  // namespace CPU_CAPABILITY
}  // namespace coreai_opt::cpu
