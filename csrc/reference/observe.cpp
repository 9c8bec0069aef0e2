// Reference kernels of the observe family.
#include "reference/observe.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>

#include "ops/schemas.h"
#include "reference/fake_quantize.h"

namespace coreai_opt::reference {

std::pair<at::Tensor, at::Tensor> batch_range(const at::Tensor& x,
                                              const std::vector<int64_t>& q_sizes) {
  const auto v = blocked_view(x.sizes(), q_sizes);
  const auto xf = x.to(at::kFloat).reshape(v.x_shape);
  if (v.reduce_dims.empty()) return {xf.reshape(q_sizes).clone(), xf.reshape(q_sizes).clone()};
  return {at::amin(xf, v.reduce_dims, true).reshape(q_sizes),
          at::amax(xf, v.reduce_dims, true).reshape(q_sizes)};
}

std::pair<at::Tensor, at::Tensor> folded_range(const at::Tensor& lo, const at::Tensor& hi,
                                               const at::Tensor& rmin, const at::Tensor& rmax,
                                               ops::RangeMethod method, double c64) {
  const float c = static_cast<float>(c64);
  const double one_minus_c = 1.0f - c;
  const double inf = std::numeric_limits<double>::infinity();
  switch (method) {
    case ops::RangeMethod::Static:
      return {lo, hi};
    case ops::RangeMethod::MovingAverage:
      return {at::where(rmin == inf, lo, lo * static_cast<double>(c) + rmin * one_minus_c),
              at::where(rmax == -inf, hi, hi * static_cast<double>(c) + rmax * one_minus_c)};
    case ops::RangeMethod::GlobalMinMax:
    default:
      return {at::minimum(lo, rmin), at::maximum(hi, rmax)};
  }
}

namespace {

std::tuple<at::Tensor, at::Tensor> minmax(const at::Tensor& x, at::IntArrayRef block_size) {
  const auto q = *ops::check_minmax(x, c10::fromIntArrayRefSlow(block_size));
  auto [lo, hi] = batch_range(x, q);
  return {lo.to(x.scalar_type()), hi.to(x.scalar_type())};
}

void update_range(const at::Tensor& x, const at::Tensor& running_min, const at::Tensor& running_max,
                  at::IntArrayRef block_size, c10::string_view method, double averaging_constant) {
  const auto checked =
      ops::check_update_range(x, running_min, running_max, c10::fromIntArrayRefSlow(block_size),
                              method, averaging_constant);
  const auto [lo, hi] = batch_range(x, *checked.q_sizes);
  auto [nmin, nmax] =
      folded_range(lo, hi, running_min, running_max, checked.method, averaging_constant);
  running_min.copy_(nmin);
  running_max.copy_(nmax);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CompositeExplicitAutograd, m) {
  COREAI_OPT_OBSERVE_OPS(COREAI_OPT_IMPL)
}

}  // namespace coreai_opt::reference
