// CPU kernels of the observe family: per-block ranges and running-range updates.
#include "cpu/observe.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "cpu/kernels/kernels.h"
#include "ops/schemas.h"

namespace coreai_opt::cpu {

BatchRange batch_minmax(const at::Tensor& x, const formats::QParamLayout& layout) {
  BatchRange r;
  r.lo.resize(layout.qnumel);
  r.hi.resize(layout.qnumel);
  if (layout.qnumel > 0 && x.numel() > 0) {
    kernels().minmax(x.contiguous(), layout, r.lo.data(), r.hi.data());
  }
  return r;
}

void fold_range(const BatchRange& b, float* rmin, float* rmax, ops::RangeMethod method,
                double averaging_constant) {
  const float inf = std::numeric_limits<float>::infinity();
  const float c = static_cast<float>(averaging_constant);
  for (size_t i = 0; i < b.lo.size(); ++i) {
    switch (method) {
      case ops::RangeMethod::Static:
        rmin[i] = b.lo[i];
        rmax[i] = b.hi[i];
        break;
      case ops::RangeMethod::MovingAverage:
        rmin[i] = rmin[i] == inf ? b.lo[i] : c * b.lo[i] + (1.0f - c) * rmin[i];
        rmax[i] = rmax[i] == -inf ? b.hi[i] : c * b.hi[i] + (1.0f - c) * rmax[i];
        break;
      case ops::RangeMethod::GlobalMinMax: {
        const float lo = b.lo[i], hi = b.hi[i];
        rmin[i] = (lo < rmin[i] || lo != lo) ? lo : rmin[i];
        rmax[i] = (hi > rmax[i] || hi != hi) ? hi : rmax[i];
        break;
      }
    }
  }
}

namespace {

std::tuple<at::Tensor, at::Tensor> minmax(const at::Tensor& x, at::IntArrayRef block_size) {
  const auto q_sizes = *ops::check_minmax(x, c10::fromIntArrayRefSlow(block_size));
  const auto r = batch_minmax(x, formats::make_qparam_layout(x.sizes().vec(), q_sizes));
  auto lo = at::empty(q_sizes, x.options().dtype(at::kFloat));
  auto hi = at::empty(q_sizes, x.options().dtype(at::kFloat));
  std::copy(r.lo.begin(), r.lo.end(), lo.mutable_data_ptr<float>());
  std::copy(r.hi.begin(), r.hi.end(), hi.mutable_data_ptr<float>());
  return {lo.to(x.scalar_type()), hi.to(x.scalar_type())};
}

void update_range(const at::Tensor& x, const at::Tensor& running_min, const at::Tensor& running_max,
                  at::IntArrayRef block_size, c10::string_view method, double averaging_constant) {
  const auto checked =
      ops::check_update_range(x, running_min, running_max, c10::fromIntArrayRefSlow(block_size),
                              method, averaging_constant);
  const auto layout = formats::make_qparam_layout(x.sizes().vec(), *checked.q_sizes);
  fold_range(batch_minmax(x, layout), running_min.mutable_data_ptr<float>(),
             running_max.mutable_data_ptr<float>(), checked.method, averaging_constant);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CPU, m) { COREAI_OPT_OBSERVE_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::cpu
