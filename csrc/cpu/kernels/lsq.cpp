// LSQ backward: STE for x plus per-qparam reductions of the scale and zero-point gradients,
// all in one read of grad and x.
#include <ATen/Dispatch.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "cpu/kernels/kernels_isa.h"
#include "cpu/kernels/layout_walk.h"
#include "cpu/kernels/vec_io.h"
#include "formats/rounding.h"

namespace coreai_opt::cpu {
inline namespace CPU_CAPABILITY {

namespace {

using Sums = std::pair<double, double>;  // (d scale, d zero_point)

// One element: returns dx and adds this element's scale / zero-point gradients. Same
// operation order as the vector form and the reference. A NaN input contributes NaN to both
// sums (the scale gradient through clamp, the zero-point gradient explicitly), so a NaN in
// the data shows up in the qparams' gradients instead of vanishing.
inline float lsq_element(float g, float x, float s, float zp, float lo, float hi, float& ds,
                         float& dz) {
  const float q = formats::round_half_even(x / s) + zp;
  const bool inside = q >= lo && q <= hi;
  const float qc = clamp_nan(q, lo, hi);
  if (inside) {
    const float y = (qc - zp) * s;
    ds += g * (y - x) / s;
    return g;
  }
  ds += g * (qc - zp);
  dz += q != q ? q : -g * s;
  return g * 0.0f;
}

// Vector form of lsq_element for one qparam: returns dx, accumulates into ds / dz lanes.
struct LsqVec {
  fVec s, zp, lo, hi;
  fVec step(const fVec& g, const fVec& x, fVec& ds, fVec& dz) const {
    const fVec q = (x / s).round() + zp;
    const fVec inside = (q >= lo) & (q <= hi);
    const fVec qc = clamp_nan(q, lo, hi);
    const fVec y = (qc - zp) * s;
    ds = ds + fVec::blendv(g * (qc - zp), g * (y - x) / s, inside);
    const fVec outside_dz = fVec::blendv(fVec(0.0f) - g * s, q, q != q);
    dz = dz + fVec::blendv(outside_dz, fVec(0.0f), inside);
    return g * mask_to_one(inside);
  }
};

inline double hsum(const fVec& v) {
  float lanes[kF];
  v.store(lanes);
  double t = 0.0;
  for (int64_t k = 0; k < kF; ++k) t += lanes[k];
  return t;
}

void lsq_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& gx,
                  const QParamLayout& layout, const IntParams& p, double* dscale,
                  double* dzero_point) {
  std::vector<Sums> acc(layout.qnumel);
  const bool inner_full = layout.inner_full();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lsq_bw", [&] {
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* op = gx.mutable_data_ptr<scalar_t>();
    // float32 outputs larger than the cache are streamed (vec_io.h); only long runs stream,
    // so the fence that ends each of them is amortised.
    constexpr bool kStreamFloat = kStreamable<scalar_t> && std::is_same_v<scalar_t, float>;
    const bool stream = kStreamFloat && gx.nbytes() >= kStreamBytes;
    auto reduce_run = [&](Sums* a, int64_t off, int64_t len, int64_t q) {
      const scalar_t* g = gp + off;
      const scalar_t* xv = xp + off;
      scalar_t* o = op + off;
      if (!inner_full) {
        const float s = p.scale[q], zp = p.quant_offset.at(q);
        const LsqVec lv{fVec(s), fVec(zp), fVec(p.qmin), fVec(p.qmax)};
        // Float partial sums over short stretches, folded into double.
        constexpr int64_t kChunk = 1024;
        int64_t j = 0;
        float ds = 0.0f, dz = 0.0f;
        const bool stream_run = stream && len >= 256;
        if constexpr (kStreamFloat) {
          for (; stream_run && j < len && stream_misaligned(o + j); ++j) {
            o[j] = lsq_element(g[j], xv[j], s, zp, p.qmin, p.qmax, ds, dz);
          }
        }
        if constexpr (kVectorizable<scalar_t>) {
          while (j + kStep <= len) {
            const int64_t stop = std::min(len, j + kChunk);
            fVec vds(0.0f), vdz(0.0f);
            for (; j + kStep <= stop; j += kStep) {
              fVec ga, gb, xa, xb;
              load2(g + j, ga, gb);
              load2(xv + j, xa, xb);
              const fVec da = lv.step(ga, xa, vds, vdz);
              const fVec db = lv.step(gb, xb, vds, vdz);
              if constexpr (kStreamFloat) {
                if (stream_run) {
                  stream2_lanewise(o + j, da, db);
                  continue;
                }
              }
              store2(o + j, da, db);
            }
            a[q].first += hsum(vds);
            a[q].second += hsum(vdz);
          }
        }
        if (stream_run) stream_fence();
        for (; j < len; ++j) {
          o[j] = static_cast<scalar_t>(lsq_element(
              static_cast<float>(g[j]), static_cast<float>(xv[j]), s, zp, p.qmin, p.qmax, ds, dz));
        }
        a[q].first += ds;
        a[q].second += dz;
      } else {
        for (int64_t j = 0; j < len; ++j) {
          float ds = 0.0f, dz = 0.0f;
          o[j] = static_cast<scalar_t>(
              lsq_element(static_cast<float>(g[j]), static_cast<float>(xv[j]), p.scale[q + j],
                          p.quant_offset.at(q + j), p.qmin, p.qmax, ds, dz));
          a[q + j].first += ds;
          a[q + j].second += dz;
        }
      }
    };
    auto combine = [](const Sums& u, const Sums& v) {
      return Sums{u.first + v.first, u.second + v.second};
    };
    reduce_runs(layout, acc.data(), Sums{0.0, 0.0}, reduce_run, combine);
  });
  for (int64_t i = 0; i < layout.qnumel; ++i) {
    dscale[i] = acc[i].first;
    dzero_point[i] = acc[i].second;
  }
}

}  // namespace

void register_lsq(KernelTable& t) { t.lsq_backward = &lsq_backward; }

}  // namespace CPU_CAPABILITY
}  // namespace coreai_opt::cpu
