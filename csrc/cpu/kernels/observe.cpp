// Range observation: min and max per qparam in one read of x.
#include <ATen/Dispatch.h>

#include <limits>
#include <utility>

#include "cpu/kernels/kernels_isa.h"
#include "cpu/kernels/layout_walk.h"
#include "cpu/kernels/vec_io.h"

namespace coreai_opt::cpu {
inline namespace CPU_CAPABILITY {

namespace {

using MinMax = std::pair<float, float>;

void minmax(const at::Tensor& x, const QParamLayout& layout, float* min_out, float* max_out) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<MinMax> acc(layout.qnumel);
  const bool inner_full = layout.inner_full();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "minmax", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    auto reduce_run = [&](MinMax* a, int64_t off, int64_t len, int64_t q) {
      const scalar_t* p = xp + off;
      int64_t j = 0;
      if (!inner_full) {
        float lo = a[q].first, hi = a[q].second;
        if constexpr (kVectorizable<scalar_t>) {
          if (len >= kStep) {
            fVec vlo(lo), vhi(hi);
            for (; j + kStep <= len; j += kStep) {
              fVec u, v;
              load2(p + j, u, v);
              vlo = at::vec::minimum(vlo, at::vec::minimum(u, v));
              vhi = at::vec::maximum(vhi, at::vec::maximum(u, v));
            }
            float tlo[kF], thi[kF];
            vlo.store(tlo);
            vhi.store(thi);
            for (int64_t k = 0; k < kF; ++k) {
              lo = min_nan(lo, tlo[k]);
              hi = max_nan(hi, thi[k]);
            }
          }
        }
        for (; j < len; ++j) {
          const float v = static_cast<float>(p[j]);
          lo = min_nan(lo, v);
          hi = max_nan(hi, v);
        }
        a[q] = MinMax{lo, hi};
      } else {
        for (; j < len; ++j) {
          const float v = static_cast<float>(p[j]);
          a[q + j].first = min_nan(a[q + j].first, v);
          a[q + j].second = max_nan(a[q + j].second, v);
        }
      }
    };
    auto combine = [](const MinMax& u, const MinMax& v) {
      return MinMax{min_nan(u.first, v.first), max_nan(u.second, v.second)};
    };
    reduce_runs(layout, acc.data(), MinMax{inf, -inf}, reduce_run, combine);
  });
  for (int64_t i = 0; i < layout.qnumel; ++i) {
    min_out[i] = acc[i].first;
    max_out[i] = acc[i].second;
  }
}

}  // namespace

void register_observe(KernelTable& t) { t.minmax = &minmax; }

}  // namespace CPU_CAPABILITY
}  // namespace coreai_opt::cpu
