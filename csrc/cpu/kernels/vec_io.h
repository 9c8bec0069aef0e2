// Loads and stores that convert float16 / bfloat16 to float32 in registers, two float
// vectors at a time (one 16-bit vector holds as many elements as two float vectors), so no
// kernel ever makes a full-size float32 copy. float64 takes the scalar path.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

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

inline float clamp_nan(float v, float lo, float hi) {
  if (v != v) return v;
  return v < lo ? lo : (v > hi ? hi : v);
}

inline float min_nan(float a, float b) { return (a < b || a != a) ? a : b; }
inline float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }

// 1.0f where the mask lane is set, else 0.0f.
inline fVec mask_to_one(const fVec& mask) { return mask & fVec(1.0f); }

}  // namespace CPU_CAPABILITY
}  // namespace coreai_opt::cpu
