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

// The order of the scale / zero-point sums is fixed by the element's position, never by the
// vector width, so every ISA build (and the portable one) returns the same bits: within a
// run, element j adds into float lane j % kLanes, in order; every kChunk elements the lanes
// are folded into the double total in lane order; the last len % kLanes elements go through
// one scalar float sum added at the end. A 16-lane ISA holds the lanes in one vector, an
// 8-lane ISA in two.
constexpr int64_t kLanes = 16;
constexpr int64_t kChunk = 1024;
constexpr int64_t kLaneVecs = kLanes / kF;
static_assert(kLanes % kF == 0 && kChunk % kLanes == 0, "lanes must tile a chunk");

// Lane sums of kLaneVecs vectors, in lane order, as a double.
inline double fold_lanes(const fVec* v) {
  double t = 0.0;
  for (int64_t i = 0; i < kLaneVecs; ++i) {
    float lanes[kF];
    v[i].store(lanes);
    for (int64_t k = 0; k < kF; ++k) t += lanes[k];
  }
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
        // Streaming needs 32-byte aligned stores; the lane order forbids peeling, so only a
        // run whose destination starts aligned streams (every row of a float32 tensor whose
        // rows are a multiple of 8 long).
        const bool stream_run = stream && len >= 256 && !stream_misaligned(o);
        int64_t j = 0;
        if constexpr (kVectorizable<scalar_t>) {
          while (j + kLanes <= len) {
            const int64_t stop = std::min(len, j + kChunk);
            fVec vds[kLaneVecs], vdz[kLaneVecs];
            for (int64_t i = 0; i < kLaneVecs; ++i) vds[i] = vdz[i] = fVec(0.0f);
            for (; j + kLanes <= stop; j += kLanes) {
              if constexpr (kLaneVecs == 2) {
                fVec ga, gb, xa, xb;
                load2(g + j, ga, gb);
                load2(xv + j, xa, xb);
                const fVec da = lv.step(ga, xa, vds[0], vdz[0]);
                const fVec db = lv.step(gb, xb, vds[1], vdz[1]);
                if constexpr (kStreamFloat) {
                  if (stream_run) {
                    stream2_lanewise(o + j, da, db);
                    continue;
                  }
                }
                store2(o + j, da, db);
              } else {
                const fVec d = lv.step(load1(g + j), load1(xv + j), vds[0], vdz[0]);
                store1(o + j, d);
              }
            }
            a[q].first += fold_lanes(vds);
            a[q].second += fold_lanes(vdz);
          }
        }
        if (stream_run) stream_fence();
        float ds = 0.0f, dz = 0.0f;
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
