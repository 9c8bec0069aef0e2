// channel_scale_shift and its backward in plain ATen ops: the reference kernels (every
// device without its own) and the CPU kernels' path for dtypes and layouts they do not walk.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace coreai_opt::ops {

// [1, C, 1, ...] for x's rank: a per-channel vector as it broadcasts against x.
inline std::vector<int64_t> channel_view_shape(const at::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = -1;
  return shape;
}

// Every dim of x but the channel dim.
inline std::vector<int64_t> non_channel_dims(const at::Tensor& x) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d != 1) dims.push_back(d);
  }
  return dims;
}

inline at::Tensor channel_scale_shift_composite(const at::Tensor& x, const at::Tensor& scale,
                                                const std::optional<at::Tensor>& shift) {
  const auto shape = channel_view_shape(x);
  at::Tensor y = at::empty_like(x);         // x's layout, as every device returns
  at::mul_out(y, x, scale.reshape(shape));  // the product rounded, then the sum
  if (shift.has_value()) y.add_(shift->reshape(shape));
  return y;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_scale_shift_backward_composite(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale) {
  at::Tensor gx = at::empty_like(x);
  at::mul_out(gx, grad, scale.reshape(channel_view_shape(x)));
  const auto dims = non_channel_dims(x);
  // Products and sums in float32 at least (half inputs), returned in x's dtype.
  const auto acc = at::promote_types(x.scalar_type(), at::kFloat);
  at::Tensor gscale = (grad.to(acc) * x.to(acc)).sum(dims).to(x.scalar_type());
  at::Tensor gshift = grad.sum(dims, false, acc).to(x.scalar_type());
  return {gx, gscale, gshift};
}

}  // namespace coreai_opt::ops
