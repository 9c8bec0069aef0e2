// Fake-quantize forward and STE backward kernels, integer and float formats.
// One pass over x per call; qparams are read as scalars (innermost Broadcast) or as a
// vector moving with the elements (innermost Full).
#include <ATen/Dispatch.h>
#include <c10/macros/Macros.h>

#include <type_traits>

#include "cpu/kernels/kernels_isa.h"
#include "cpu/kernels/layout_walk.h"
#include "cpu/kernels/vec_io.h"
#include "formats/float_format.h"
#include "formats/rounding.h"

namespace coreai_opt::cpu {
inline namespace CPU_CAPABILITY {

namespace {

// ---- per-element math, vector and scalar forms kept side by side -------------------------

// Generic form q = round((x - f) / s) + o, y = (clamp(q) - o) * s + f. kMinval false is the
// zp form (f == 0), which drops the two float-offset operations; with f == 0 both forms give
// identical bits, so the specialisation is purely for speed.
template <bool kMinval>
struct IntMath {
  static fVec pre(const fVec& x, const fVec& s, const fVec& o, const fVec& f) {
    if constexpr (kMinval) return ((x - f) / s).round() + o;
    return (x / s).round() + o;
  }
  static float pre(float x, float s, float o, float f) {
    if constexpr (kMinval) return formats::round_half_even((x - f) / s) + o;
    return formats::round_half_even(x / s) + o;
  }
  // The value of a pre-rounded code c = pre(x): clamp, remove the offsets, rescale.
  static fVec value(const fVec& c, const fVec& s, const fVec& o, const fVec& f, const fVec& lo,
                    const fVec& hi) {
    const fVec y = (clamp_nan(c, lo, hi) - o) * s;
    if constexpr (kMinval) return y + f;
    return y;
  }
  static float value(float c, float s, float o, float f, float lo, float hi) {
    const float y = (clamp_nan(c, lo, hi) - o) * s;
    if constexpr (kMinval) return y + f;
    return y;
  }
  static fVec fq(const fVec& x, const fVec& s, const fVec& o, const fVec& f, const fVec& lo,
                 const fVec& hi) {
    return value(pre(x, s, o, f), s, o, f, lo, hi);
  }
  static float fq(float x, float s, float o, float f, float lo, float hi) {
    return value(pre(x, s, o, f), s, o, f, lo, hi);
  }
  static fVec grad(const fVec& g, const fVec& x, const fVec& s, const fVec& o, const fVec& f,
                   const fVec& lo, const fVec& hi) {
    const fVec q = pre(x, s, o, f);
    return g * mask_to_one((q >= lo) & (q <= hi));
  }
  static float grad(float g, float x, float s, float o, float f, float lo, float hi) {
    const float q = pre(x, s, o, f);
    return g * ((q >= lo && q <= hi) ? 1.0f : 0.0f);
  }
};

// Round |v| onto the format grid (see formats/float_format.h). The quantum q = 2^(max(e,
// emin) - mantissa_bits) of v's binade is a power of two; adding and subtracting M = q * 2^23
// rounds onto multiples of q: a + M lies in [M, 2M) where floats are exactly q apart, so the
// addition rounds half to even onto the grid (M / q = 2^23 is even) and the subtraction is
// exact. Same bits as round(a / q) * q, without the division.
struct FloatGrid {
  fVec max_value, neg_max, min_normal, magic_factor, exp_mask, sign_mask;
  explicit FloatGrid(const formats::FloatFormatInfo& f)
      : max_value(f.max_value),
        neg_max(-f.max_value),
        min_normal(formats::exp2_int(formats::min_normal_exponent(f))),
        magic_factor(formats::exp2_int(23 - f.mantissa_bits)),
        exp_mask(formats::bits_to_float(0x7F800000u)),
        sign_mask(formats::bits_to_float(0x80000000u)) {}
  fVec round(const fVec& v) const {  // v already clamped to [-max, max]
    const fVec a = v.abs();
    // a & exp_mask is 0, a power of two or inf (for NaN a), never NaN.
    const fVec magic = max_not_nan(a & exp_mask, min_normal) * magic_factor;
    const fVec r = (a + magic) - magic;
    return r | (v & sign_mask);
  }
};

// A normal power of two: its reciprocal is exact, so x * (1 / s) is the same real number as
// x / s and rounds to the same float. MX (E8M0) scales are such powers.
inline bool is_normal_power_of_two(float s) {
  const uint32_t b = formats::float_to_bits(s);
  const uint32_t e = (b >> 23) & 0xFFu;
  return (b & 0x807FFFFFu) == 0 && e != 0 && e != 0xFFu;
}

// How a run moves its two-vector steps (see vec_io.h): in element order; lane-wise (the
// function ignores the element position, so bfloat16 skips the cross-lane shuffles; j is then
// meaningless); or lane-wise with streaming stores for outputs larger than the cache.
enum class Io { kOrdered, kLanewise, kStream };

template <Io kIo, typename T>
C10_ALWAYS_INLINE void load_pair(const T* p, fVec& a, fVec& b) {
  if constexpr (kIo == Io::kOrdered) {
    load2(p, a, b);
  } else {
    load2_lanewise(p, a, b);
  }
}

template <Io kIo, typename T>
C10_ALWAYS_INLINE void store_pair(T* p, const fVec& a, const fVec& b) {
  if constexpr (kIo == Io::kOrdered) {
    store2(p, a, b);
  } else if constexpr (kIo == Io::kLanewise) {
    store2_lanewise(p, a, b);
  } else {
    stream2_lanewise(p, a, b);
  }
}

// Streaming stores need 32-byte aligned destinations: runs peel elements until they are.
template <Io kIo, typename T>
C10_ALWAYS_INLINE bool misaligned(const T* p) {
  return kIo == Io::kStream && stream_misaligned(p);
}

// Runs of exactly N elements (N a multiple of kStep): a loop the compiler fully unrolls.
template <int64_t N, Io kIo, typename T, typename VecFn>
C10_ALWAYS_INLINE void map_run_fixed(const T* x, T* y, const VecFn& vf) {
  for (int64_t j = 0; j < N; j += kStep) {
    fVec a, b;
    load_pair<kIo>(x + j, a, b);
    store_pair<kIo>(y + j, vf(a, j), vf(b, j + kF));
  }
}

template <Io kIo = Io::kOrdered, typename T, typename VecFn, typename ScalarFn>
C10_ALWAYS_INLINE void map_run(const T* x, T* y, int64_t n, const VecFn& vf, const ScalarFn& sf) {
  int64_t j = 0;
  if constexpr (kVectorizable<T>) {
    if (!misaligned<kIo>(y)) {
      // The usual block sizes of per-block and MX formats get straight-line code.
      if (n == 32 && 32 % kStep == 0) return map_run_fixed<32, kIo>(x, y, vf);
      if (n == 64 && 64 % kStep == 0) return map_run_fixed<64, kIo>(x, y, vf);
    }
    for (; j < n && misaligned<kIo>(y + j); ++j) y[j] = static_cast<T>(sf(float(x[j]), j));
    for (; j + kStep <= n; j += kStep) {
      fVec a, b;
      load_pair<kIo>(x + j, a, b);
      store_pair<kIo>(y + j, vf(a, j), vf(b, j + kF));
    }
    for (; j + kF <= n; j += kF) store1(y + j, vf(load1(x + j), j));
  }
  for (; j < n; ++j) y[j] = static_cast<T>(sf(static_cast<float>(x[j]), j));
}

template <Io kIo = Io::kOrdered, typename T, typename VecFn, typename ScalarFn>
C10_ALWAYS_INLINE void map2_run(const T* g, const T* x, T* y, int64_t n, const VecFn& vf,
                                const ScalarFn& sf) {
  int64_t j = 0;
  if constexpr (kVectorizable<T>) {
    for (; j < n && misaligned<kIo>(y + j); ++j) {
      y[j] = static_cast<T>(sf(static_cast<float>(g[j]), static_cast<float>(x[j]), j));
    }
    for (; j + kStep <= n; j += kStep) {
      fVec ga, gb, xa, xb;
      load_pair<kIo>(g + j, ga, gb);
      load_pair<kIo>(x + j, xa, xb);
      store_pair<kIo>(y + j, vf(ga, xa, j), vf(gb, xb, j + kF));
    }
    for (; j + kF <= n; j += kF) store1(y + j, vf(load1(g + j), load1(x + j), j));
  }
  for (; j < n; ++j) {
    y[j] = static_cast<T>(sf(static_cast<float>(g[j]), static_cast<float>(x[j]), j));
  }
}

// Walks every run of an elementwise kernel writing `out`. run(offset, length, q, inner_full,
// stream) must be always-inline: layouts of rows ([F, B]) go through for_each_row with
// inner_full a literal false, so each row is a straight loop; the rest through for_each_run.
// Outputs of kStreamBytes and more are streamed, and every parallel chunk then ends with a
// fence.
template <typename Run>
void walk_elementwise(const QParamLayout& layout, const at::Tensor& out, const Run& run) {
  const bool stream = out.nbytes() >= kStreamBytes;
  auto fence = [&] {
    if (stream) stream_fence();
  };
  auto row = [&](int64_t off, int64_t len, int64_t q)
                 C10_ALWAYS_INLINE_ATTRIBUTE { run(off, len, q, false, stream); };
  if (for_each_row(layout, row, fence)) return;
  const bool inner_full = layout.inner_full();
  for_each_run(
      layout, [&](int64_t off, int64_t len, int64_t q) { run(off, len, q, inner_full, stream); },
      fence);
}

// ---- integer ----------------------------------------------------------------------------

// One run of the integer kernel: forward (g == nullptr) or STE backward. Qparams are one
// value for the run (inner Broadcast) or advance with the element (inner Full).
template <bool kMinval, typename T>
C10_ALWAYS_INLINE void int_run(const T* g, const T* x, T* y, int64_t n, const IntParams& p,
                               int64_t q, bool inner_full, bool stream) {
  using M = IntMath<kMinval>;
  const fVec lo(p.qmin), hi(p.qmax);
  const float qmin = p.qmin, qmax = p.qmax;
  if (!inner_full) {
    const float s = p.scale[q], o = p.quant_offset.at(q);
    const float f = kMinval ? p.float_offset[q] : 0.0f;
    const fVec vs(s), vo(o), vf(f);
    auto go = [&](auto io) C10_ALWAYS_INLINE_ATTRIBUTE {
      constexpr Io kIo = decltype(io)::value;
      if (g == nullptr) {
        map_run<kIo>(
            x, y, n,
            [&](const fVec& v, int64_t)
                C10_ALWAYS_INLINE_ATTRIBUTE { return M::fq(v, vs, vo, vf, lo, hi); },
            [&](float v, int64_t) { return M::fq(v, s, o, f, qmin, qmax); });
      } else {
        map2_run<kIo>(
            g, x, y, n,
            [&](const fVec& gv, const fVec& v, int64_t)
                C10_ALWAYS_INLINE_ATTRIBUTE { return M::grad(gv, v, vs, vo, vf, lo, hi); },
            [&](float gv, float v, int64_t) { return M::grad(gv, v, s, o, f, qmin, qmax); });
      }
    };
    // Every NaN this run can produce comes from x or is the default NaN when the offsets
    // are not NaN (scales are checked positive): the condition of the lane-wise bfloat16
    // store. float32 stores are exact whatever the NaN.
    const bool nan_free = std::is_same_v<T, float> || (o == o && f == f);
    if constexpr (kStreamable<T>) {
      if (stream && nan_free) return go(std::integral_constant<Io, Io::kStream>{});
    }
    if constexpr (kLanewiseIo<T>) {
      if (nan_free) return go(std::integral_constant<Io, Io::kLanewise>{});
    }
    go(std::integral_constant<Io, Io::kOrdered>{});
    return;
  }
  const float* s = p.scale + q;
  const auto& o = p.quant_offset;
  const float* f = kMinval ? p.float_offset + q : nullptr;
  auto vf = [&](int64_t j) { return kMinval ? fVec::loadu(f + j) : fVec(0.0f); };
  auto sf = [&](int64_t j) { return kMinval ? f[j] : 0.0f; };
  if (g == nullptr) {
    map_run(
        x, y, n,
        [&](const fVec& v, int64_t j) {
          return M::fq(v, fVec::loadu(s + j), load_offsets(o, q + j), vf(j), lo, hi);
        },
        [&](float v, int64_t j) { return M::fq(v, s[j], o.at(q + j), sf(j), qmin, qmax); });
  } else {
    map2_run(
        g, x, y, n,
        [&](const fVec& gv, const fVec& v, int64_t j) {
          return M::grad(gv, v, fVec::loadu(s + j), load_offsets(o, q + j), vf(j), lo, hi);
        },
        [&](float gv, float v, int64_t j) {
          return M::grad(gv, v, s[j], o.at(q + j), sf(j), qmin, qmax);
        });
  }
}

// grad == nullptr: forward into out; else STE backward into out.
void int_kernel(const at::Tensor* grad, const at::Tensor& x, const at::Tensor& out,
                const QParamLayout& layout, const IntParams& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fq_int", [&] {
    const scalar_t* gp = grad ? grad->const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    // The formulation is chosen once per call, outside the walk, so each run (as short as
    // one 32-element block) is a straight inlined loop.
    auto walk = [&](auto minval_form) {
      constexpr bool kMinval = decltype(minval_form)::value;
      walk_elementwise(layout, out,
                       [&](int64_t off, int64_t len, int64_t q, bool inner_full, bool stream)
                           C10_ALWAYS_INLINE_ATTRIBUTE {
                             int_run<kMinval>(gp ? gp + off : nullptr, xp + off, op + off, len, p,
                                              q, inner_full, stream);
                           });
    };
    if (p.float_offset != nullptr) {
      walk(std::true_type{});
    } else {
      walk(std::false_type{});
    }
  });
}

void fake_quantize_int(const at::Tensor& x, const at::Tensor& y, const QParamLayout& layout,
                       const IntParams& p) {
  int_kernel(nullptr, x, y, layout, p);
}

void fake_quantize_int_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& gx,
                                const QParamLayout& layout, const IntParams& p) {
  int_kernel(&grad, x, gx, layout, p);
}

// ---- float formats ----------------------------------------------------------------------

// One run of the float fake-quantize: one scale (inner Broadcast) or one per element.
template <typename T>
C10_ALWAYS_INLINE void float_run(const T* x, T* y, int64_t n, const float* scale, int64_t q,
                                 bool inner_full, bool stream, const FloatGrid& grid,
                                 const formats::FloatFormatInfo& info) {
  auto scalar_fq = [&](float v, float s) {
    return formats::round_to_float_format(clamp_nan(v / s, -info.max_value, info.max_value), info) *
           s;
  };
  if (inner_full) {
    const float* s = scale + q;
    map_run(
        x, y, n,
        [&](const fVec& v, int64_t j) {
          const fVec vs = fVec::loadu(s + j);
          return grid.round(clamp_nan(v / vs, grid.neg_max, grid.max_value)) * vs;
        },
        [&](float v, int64_t j) { return scalar_fq(v, s[j]); });
    return;
  }
  const float s = scale[q];
  const fVec vs(s), vr(1.0f / s);
  // Scales are checked positive, so every NaN stored comes from x or is the default NaN:
  // the lane-wise store's condition holds for every run.
  auto go = [&](auto io, auto exact_reciprocal) C10_ALWAYS_INLINE_ATTRIBUTE {
    constexpr Io kIo = decltype(io)::value;
    constexpr bool kReciprocal = decltype(exact_reciprocal)::value;
    map_run<kIo>(
        x, y, n,
        [&](const fVec& v, int64_t) C10_ALWAYS_INLINE_ATTRIBUTE {
          const fVec u = kReciprocal ? v * vr : v / vs;
          return grid.round(clamp_nan(u, grid.neg_max, grid.max_value)) * vs;
        },
        [&](float v, int64_t) { return scalar_fq(v, s); });
  };
  auto with_io = [&](auto io) C10_ALWAYS_INLINE_ATTRIBUTE {
    if (is_normal_power_of_two(s)) {
      go(io, std::true_type{});
    } else {
      go(io, std::false_type{});
    }
  };
  if constexpr (kStreamable<T>) {
    if (stream) return with_io(std::integral_constant<Io, Io::kStream>{});
  }
  with_io(std::integral_constant < Io, kLanewiseIo<T> ? Io::kLanewise : Io::kOrdered > {});
}

void fake_quantize_float(const at::Tensor& x, const at::Tensor& y, const QParamLayout& layout,
                         const FloatParams& p) {
  const formats::FloatFormatInfo info = formats::float_format_info(p.format);
  const FloatGrid grid(info);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fq_float", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    walk_elementwise(layout, y,
                     [&](int64_t off, int64_t len, int64_t q, bool inner_full, bool stream)
                         C10_ALWAYS_INLINE_ATTRIBUTE {
                           float_run(xp + off, yp + off, len, p.scale, q, inner_full, stream, grid,
                                     info);
                         });
  });
}

void fake_quantize_float_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& gx,
                                  const QParamLayout& layout, const FloatParams& p) {
  const float mx = formats::float_format_info(p.format).max_value;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fq_float_bw", [&] {
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* op = gx.mutable_data_ptr<scalar_t>();
    const fVec lo(-mx), hi(mx);
    const bool inner_full = layout.inner_full();
    auto vec_g = [&](const fVec& g, const fVec& v, const fVec& s) {
      const fVec r = v / s;
      return g * mask_to_one((r >= lo) & (r <= hi));
    };
    auto scalar_g = [&](float g, float v, float s) {
      const float r = v / s;
      return g * ((r >= -mx && r <= mx) ? 1.0f : 0.0f);
    };
    for_each_run(layout, [&](int64_t off, int64_t len, int64_t q) {
      if (!inner_full) {
        const float s = p.scale[q];
        const fVec vs(s);
        map2_run(
            gp + off, xp + off, op + off, len,
            [&](const fVec& g, const fVec& v, int64_t) { return vec_g(g, v, vs); },
            [&](float g, float v, int64_t) { return scalar_g(g, v, s); });
      } else {
        const float* s = p.scale + q;
        map2_run(
            gp + off, xp + off, op + off, len,
            [&](const fVec& g, const fVec& v, int64_t j) {
              return vec_g(g, v, fVec::loadu(s + j));
            },
            [&](float g, float v, int64_t j) { return scalar_g(g, v, s[j]); });
      }
    });
  });
}

// ---- forward with the straight-through mask (float32) ---------------------------------------

// One run of the integer forward that also stores, per element, whether its code lay in
// [qmin, qmax] (the straight-through gradient passes) into m. The same arithmetic as
// int_run's forward, element order kept.
template <bool kMinval>
C10_ALWAYS_INLINE void int_run_masked(const float* x, float* y, bool* m, int64_t n,
                                      const IntParams& p, int64_t q, bool inner_full) {
  using M = IntMath<kMinval>;
  const fVec lo(p.qmin), hi(p.qmax);
  const float qmin = p.qmin, qmax = p.qmax;
  int64_t j = 0;
  if (!inner_full) {
    const float s = p.scale[q], o = p.quant_offset.at(q);
    const float f = kMinval ? p.float_offset[q] : 0.0f;
    const fVec vs(s), vo(o), vf(f);
    for (; j + kF <= n; j += kF) {
      const fVec c = M::pre(fVec::loadu(x + j), vs, vo, vf);
      store_mask(m + j, (c >= lo) & (c <= hi));
      M::value(c, vs, vo, vf, lo, hi).store(y + j);
    }
    for (; j < n; ++j) {
      const float c = M::pre(x[j], s, o, f);
      m[j] = c >= qmin && c <= qmax;
      y[j] = M::value(c, s, o, f, qmin, qmax);
    }
    return;
  }
  const float* s = p.scale + q;
  const auto& o = p.quant_offset;
  const float* f = kMinval ? p.float_offset + q : nullptr;
  for (; j + kF <= n; j += kF) {
    const fVec vs = fVec::loadu(s + j), vo = load_offsets(o, q + j);
    const fVec vf = kMinval ? fVec::loadu(f + j) : fVec(0.0f);
    const fVec c = M::pre(fVec::loadu(x + j), vs, vo, vf);
    store_mask(m + j, (c >= lo) & (c <= hi));
    M::value(c, vs, vo, vf, lo, hi).store(y + j);
  }
  for (; j < n; ++j) {
    const float fj = kMinval ? f[j] : 0.0f;
    const float c = M::pre(x[j], s[j], o.at(q + j), fj);
    m[j] = c >= qmin && c <= qmax;
    y[j] = M::value(c, s[j], o.at(q + j), fj, qmin, qmax);
  }
}

void fake_quantize_int_masked(const at::Tensor& x, const at::Tensor& y, const at::Tensor& mask,
                              const QParamLayout& layout, const IntParams& p) {
  const float* xp = x.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  bool* mp = mask.mutable_data_ptr<bool>();
  auto walk = [&](auto minval_form) {
    constexpr bool kMinval = decltype(minval_form)::value;
    // Plain stores (no streaming): the run writes two outputs in element order.
    for_each_run(layout, [&](int64_t off, int64_t len, int64_t q) {
      int_run_masked<kMinval>(xp + off, yp + off, mp + off, len, p, q, layout.inner_full());
    });
  };
  if (p.float_offset != nullptr) {
    walk(std::true_type{});
  } else {
    walk(std::false_type{});
  }
}

// The float-format forward that also stores whether |x / s| lay within the format's range.
void fake_quantize_float_masked(const at::Tensor& x, const at::Tensor& y, const at::Tensor& mask,
                                const QParamLayout& layout, const FloatParams& p) {
  const formats::FloatFormatInfo info = formats::float_format_info(p.format);
  const FloatGrid grid(info);
  const float* xp = x.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  bool* mp = mask.mutable_data_ptr<bool>();
  const bool inner_full = layout.inner_full();
  const float mx = info.max_value;
  for_each_run(layout, [&](int64_t off, int64_t len, int64_t q) {
    const float* xr = xp + off;
    float* yr = yp + off;
    bool* mr = mp + off;
    int64_t j = 0;
    for (; j + kF <= len; j += kF) {
      // The same quotient as float_run and the backward: x / s (exact as x * (1 / s) for
      // the power-of-two scales float_run multiplies by).
      const fVec vs = inner_full ? fVec::loadu(p.scale + q + j) : fVec(p.scale[q]);
      const fVec u = fVec::loadu(xr + j) / vs;
      store_mask(mr + j, (u >= grid.neg_max) & (u <= grid.max_value));
      (grid.round(clamp_nan(u, grid.neg_max, grid.max_value)) * vs).store(yr + j);
    }
    for (; j < len; ++j) {
      const float s = inner_full ? p.scale[q + j] : p.scale[q];
      const float u = xr[j] / s;
      mr[j] = u >= -mx && u <= mx;
      yr[j] = formats::round_to_float_format(clamp_nan(u, -mx, mx), info) * s;
    }
  });
}

// gx = grad * mask (1.0 or 0.0), float32, all three contiguous.
void ste_mask_backward(const at::Tensor& grad, const at::Tensor& mask, const at::Tensor& gx) {
  const float* gp = grad.const_data_ptr<float>();
  const bool* mp = mask.const_data_ptr<bool>();
  float* op = gx.mutable_data_ptr<float>();
  at::parallel_for(0, gx.numel(), kGrain, [&](int64_t begin, int64_t end) {
    int64_t j = begin;
    for (; j + kF <= end; j += kF) (fVec::loadu(gp + j) * load_mask(mp + j)).store(op + j);
    for (; j < end; ++j) op[j] = gp[j] * (mp[j] ? 1.0f : 0.0f);
  });
}

}  // namespace

void register_fake_quantize(KernelTable& t) {
  t.fake_quantize_int = &fake_quantize_int;
  t.fake_quantize_int_backward = &fake_quantize_int_backward;
  t.fake_quantize_float = &fake_quantize_float;
  t.fake_quantize_float_backward = &fake_quantize_float_backward;
  t.fake_quantize_int_masked = &fake_quantize_int_masked;
  t.fake_quantize_float_masked = &fake_quantize_float_masked;
  t.ste_mask_backward = &ste_mask_backward;
}

}  // namespace CPU_CAPABILITY
}  // namespace coreai_opt::cpu
