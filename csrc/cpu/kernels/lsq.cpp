// LSQ backward: STE for x plus per-qparam reductions of the scale and zero-point gradients,
// all in one read of grad and x.
#include <ATen/Dispatch.h>

#include <utility>

#include "cpu/kernels/kernels_isa.h"
#include "cpu/kernels/layout_walk.h"
#include "cpu/kernels/vec_io.h"
#include "formats/rounding.h"

namespace coreai_opt::cpu {
inline namespace CPU_CAPABILITY {

namespace {

using Sums = std::pair<double, double>;  // (d scale, d zero_point)

// One element: writes dx and adds this element's scale / zero-point gradients.
inline float lsq_element(float g, float x, float s, float zp, float lo, float hi, float& ds,
                         float& dz) {
  const float q = formats::round_half_even(x / s) + zp;
  if (q >= lo && q <= hi) {
    const float y = (q - zp) * s;
    ds += g * (y - x) / s;
    return g;
  }
  if (q != q) {  // NaN input: propagate into the sums like the tensor formula does
    ds += q;
    dz += q;
    return g * 0.0f;
  }
  const float qc = q < lo ? lo : hi;
  ds += g * (qc - zp);
  dz += -g * s;
  return g * 0.0f;
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
    auto reduce_run = [&](Sums* a, int64_t off, int64_t len, int64_t q) {
      if (!inner_full) {
        const float s = p.scale[q], zp = p.quant_offset[q];
        // Partial sums in float over short stretches, folded into double.
        constexpr int64_t kChunk = 1024;
        for (int64_t c = 0; c < len; c += kChunk) {
          const int64_t n = std::min(kChunk, len - c);
          float ds = 0.0f, dz = 0.0f;
          for (int64_t j = c; j < c + n; ++j) {
            op[off + j] = static_cast<scalar_t>(lsq_element(static_cast<float>(gp[off + j]),
                                                            static_cast<float>(xp[off + j]), s, zp,
                                                            p.qmin, p.qmax, ds, dz));
          }
          a[q].first += ds;
          a[q].second += dz;
        }
      } else {
        for (int64_t j = 0; j < len; ++j) {
          float ds = 0.0f, dz = 0.0f;
          op[off + j] = static_cast<scalar_t>(
              lsq_element(static_cast<float>(gp[off + j]), static_cast<float>(xp[off + j]),
                          p.scale[q + j], p.quant_offset[q + j], p.qmin, p.qmax, ds, dz));
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
