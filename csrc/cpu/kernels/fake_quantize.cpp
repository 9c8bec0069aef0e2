// Fake-quantize forward and STE backward kernels, integer and float formats.
// One pass over x per call; qparams are read as scalars (innermost Broadcast) or as a
// vector moving with the elements (innermost Full).
#include <ATen/Dispatch.h>

#include "cpu/kernels/kernels_isa.h"
#include "cpu/kernels/layout_walk.h"
#include "cpu/kernels/vec_io.h"
#include "formats/float_format.h"
#include "formats/rounding.h"

namespace coreai_opt::cpu {
inline namespace CPU_CAPABILITY {

namespace {

// ---- per-element math, vector and scalar forms kept side by side -------------------------

struct IntMath {
  // Pre-clamp quantized value round((x - f) / s) + o.
  static fVec pre(const fVec& x, const fVec& s, const fVec& o, const fVec& f) {
    return ((x - f) / s).round() + o;
  }
  static float pre(float x, float s, float o, float f) {
    return formats::round_half_even((x - f) / s) + o;
  }
  static fVec fq(const fVec& x, const fVec& s, const fVec& o, const fVec& f, const fVec& lo,
                 const fVec& hi) {
    return (clamp_nan(pre(x, s, o, f), lo, hi) - o) * s + f;
  }
  static float fq(float x, float s, float o, float f, float lo, float hi) {
    return (clamp_nan(pre(x, s, o, f), lo, hi) - o) * s + f;
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

// Round |v| onto the format grid (see formats/float_format.h): quantum = 2^(max(e, emin) -
// mantissa_bits) taken from v's exponent bits, which is a power of two, so the division and
// the multiplication are exact.
struct FloatGrid {
  fVec max_value, neg_max, min_normal, quantum_factor, exp_mask, sign_mask;
  explicit FloatGrid(const formats::FloatFormatInfo& f)
      : max_value(f.max_value),
        neg_max(-f.max_value),
        min_normal(formats::exp2_int(formats::min_normal_exponent(f))),
        quantum_factor(formats::exp2_int(-f.mantissa_bits)),
        exp_mask(formats::bits_to_float(0x7F800000u)),
        sign_mask(formats::bits_to_float(0x80000000u)) {}
  fVec round(const fVec& v) const {  // v already clamped to [-max, max]
    const fVec a = v.abs();
    const fVec quantum = at::vec::maximum(a & exp_mask, min_normal) * quantum_factor;
    const fVec r = (a / quantum).round() * quantum;
    return r | (v & sign_mask);
  }
};

template <typename T, typename VecFn, typename ScalarFn>
inline void map_run(const T* x, T* y, int64_t n, const VecFn& vf, const ScalarFn& sf) {
  int64_t j = 0;
  if constexpr (kVectorizable<T>) {
    for (; j + kStep <= n; j += kStep) {
      fVec a, b;
      load2(x + j, a, b);
      store2(y + j, vf(a, j), vf(b, j + kF));
    }
  }
  for (; j < n; ++j) y[j] = static_cast<T>(sf(static_cast<float>(x[j]), j));
}

template <typename T, typename VecFn, typename ScalarFn>
inline void map2_run(const T* g, const T* x, T* y, int64_t n, const VecFn& vf, const ScalarFn& sf) {
  int64_t j = 0;
  if constexpr (kVectorizable<T>) {
    for (; j + kStep <= n; j += kStep) {
      fVec ga, gb, xa, xb;
      load2(g + j, ga, gb);
      load2(x + j, xa, xb);
      store2(y + j, vf(ga, xa, j), vf(gb, xb, j + kF));
    }
  }
  for (; j < n; ++j) {
    y[j] = static_cast<T>(sf(static_cast<float>(g[j]), static_cast<float>(x[j]), j));
  }
}

// ---- integer ----------------------------------------------------------------------------

void fake_quantize_int(const at::Tensor& x, const at::Tensor& y, const QParamLayout& layout,
                       const IntParams& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fq_int", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const fVec lo(p.qmin), hi(p.qmax);
    const bool inner_full = layout.inner_full();
    for_each_run(layout, [&](int64_t off, int64_t len, int64_t q) {
      if (!inner_full) {
        const float s = p.scale[q], o = p.quant_offset[q], f = p.float_offset[q];
        const fVec vs(s), vo(o), vfo(f);
        map_run(
            xp + off, yp + off, len,
            [&](const fVec& v, int64_t) { return IntMath::fq(v, vs, vo, vfo, lo, hi); },
            [&](float v, int64_t) { return IntMath::fq(v, s, o, f, p.qmin, p.qmax); });
      } else {
        const float* s = p.scale + q;
        const float* o = p.quant_offset + q;
        const float* f = p.float_offset + q;
        map_run(
            xp + off, yp + off, len,
            [&](const fVec& v, int64_t j) {
              return IntMath::fq(v, fVec::loadu(s + j), fVec::loadu(o + j), fVec::loadu(f + j), lo,
                                 hi);
            },
            [&](float v, int64_t j) { return IntMath::fq(v, s[j], o[j], f[j], p.qmin, p.qmax); });
      }
    });
  });
}

void fake_quantize_int_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& gx,
                                const QParamLayout& layout, const IntParams& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fq_int_bw", [&] {
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* op = gx.mutable_data_ptr<scalar_t>();
    const fVec lo(p.qmin), hi(p.qmax);
    const bool inner_full = layout.inner_full();
    for_each_run(layout, [&](int64_t off, int64_t len, int64_t q) {
      if (!inner_full) {
        const float s = p.scale[q], o = p.quant_offset[q], f = p.float_offset[q];
        const fVec vs(s), vo(o), vfo(f);
        map2_run(
            gp + off, xp + off, op + off, len,
            [&](const fVec& g, const fVec& v, int64_t) {
              return IntMath::grad(g, v, vs, vo, vfo, lo, hi);
            },
            [&](float g, float v, int64_t) {
              return IntMath::grad(g, v, s, o, f, p.qmin, p.qmax);
            });
      } else {
        const float* s = p.scale + q;
        const float* o = p.quant_offset + q;
        const float* f = p.float_offset + q;
        map2_run(
            gp + off, xp + off, op + off, len,
            [&](const fVec& g, const fVec& v, int64_t j) {
              return IntMath::grad(g, v, fVec::loadu(s + j), fVec::loadu(o + j), fVec::loadu(f + j),
                                   lo, hi);
            },
            [&](float g, float v, int64_t j) {
              return IntMath::grad(g, v, s[j], o[j], f[j], p.qmin, p.qmax);
            });
      }
    });
  });
}

// ---- float formats ----------------------------------------------------------------------

void fake_quantize_float(const at::Tensor& x, const at::Tensor& y, const QParamLayout& layout,
                         const FloatParams& p) {
  const formats::FloatFormatInfo info = formats::float_format_info(p.format);
  const FloatGrid grid(info);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fq_float", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const bool inner_full = layout.inner_full();
    auto vec_fq = [&](const fVec& v, const fVec& s) {
      return grid.round(clamp_nan(v / s, grid.neg_max, grid.max_value)) * s;
    };
    auto scalar_fq = [&](float v, float s) {
      return formats::round_to_float_format(clamp_nan(v / s, -info.max_value, info.max_value),
                                            info) *
             s;
    };
    for_each_run(layout, [&](int64_t off, int64_t len, int64_t q) {
      if (!inner_full) {
        const float s = p.scale[q];
        const fVec vs(s);
        map_run(
            xp + off, yp + off, len, [&](const fVec& v, int64_t) { return vec_fq(v, vs); },
            [&](float v, int64_t) { return scalar_fq(v, s); });
      } else {
        const float* s = p.scale + q;
        map_run(
            xp + off, yp + off, len,
            [&](const fVec& v, int64_t j) { return vec_fq(v, fVec::loadu(s + j)); },
            [&](float v, int64_t j) { return scalar_fq(v, s[j]); });
      }
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

}  // namespace

void register_fake_quantize(KernelTable& t) {
  t.fake_quantize_int = &fake_quantize_int;
  t.fake_quantize_int_backward = &fake_quantize_int_backward;
  t.fake_quantize_float = &fake_quantize_float;
  t.fake_quantize_float_backward = &fake_quantize_float_backward;
}

}  // namespace CPU_CAPABILITY
}  // namespace coreai_opt::cpu
