// CPU kernels of channel_scale_shift and its backward. float32 in a layout the kernels walk
// (contiguous, or channels innermost) runs in one pass each way; other dtypes and layouts
// take the ATen composite every device shares (ops/channel_math.h).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "cpu/kernels/kernels.h"
#include "cpu/memory_order.h"
#include "ops/channel_math.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::cpu {

namespace {

// How the kernels walk a float32 x: as planes [outer, channels, inner] (contiguous, inner >
// 1) or as rows [rows, channels] (contiguous with inner == 1, or channels_last).
struct ChannelWalk {
  bool planes = false;
  int64_t outer = 0;  // planes: x.size(0); rows: the number of rows
  int64_t channels = 0;
  int64_t inner = 1;
};

std::optional<ChannelWalk> walk_of(const at::Tensor& x) {
  if (x.scalar_type() != at::kFloat || x.numel() == 0) return std::nullopt;
  ChannelWalk w;
  w.channels = x.size(1);
  if (x.is_contiguous()) {
    w.inner = x.numel() / (x.size(0) * w.channels);
    w.planes = w.inner > 1;
    w.outer = x.size(0);
    return w;
  }
  const auto cl =
      x.dim() == 4 ? at::MemoryFormat::ChannelsLast
                   : (x.dim() == 5 ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::Preserve);
  if (cl != at::MemoryFormat::Preserve && x.is_contiguous(cl)) {
    w.outer = x.numel() / w.channels;
    return w;
  }
  return std::nullopt;
}

at::Tensor channel_scale_shift(const at::Tensor& x, const at::Tensor& scale,
                               const std::optional<at::Tensor>& shift) {
  ops::check_channel_scale_shift(x, scale, shift);
  const auto walk = walk_of(x);
  if (!walk.has_value()) return ops::channel_scale_shift_composite(x, scale, shift);
  const at::Tensor s = scale.contiguous();
  const at::Tensor b = shift.has_value() ? shift->contiguous() : at::Tensor();
  at::Tensor y = at::empty_like(x);  // x's layout: contiguous or channels_last
  const float* bp = b.defined() ? b.const_data_ptr<float>() : nullptr;
  const auto& k = kernels();
  if (walk->planes) {
    k.channel_scale_shift_planes(x.const_data_ptr<float>(), s.const_data_ptr<float>(), bp,
                                 y.mutable_data_ptr<float>(), walk->outer, walk->channels,
                                 walk->inner);
  } else {
    k.channel_scale_shift_rows(x.const_data_ptr<float>(), s.const_data_ptr<float>(), bp,
                               y.mutable_data_ptr<float>(), walk->outer, walk->channels);
  }
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_scale_shift_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale) {
  ops::check_channel_scale_shift_backward(grad, x, scale);
  const auto walk = walk_of(x);
  if (!walk.has_value()) return ops::channel_scale_shift_backward_composite(grad, x, scale);
  const at::Tensor g = in_memory_order_of(grad, x);
  const at::Tensor s = scale.contiguous();
  at::Tensor gx = at::empty_like(x);
  at::Tensor gscale = at::empty({walk->channels}, scale.options());
  at::Tensor gshift = at::empty({walk->channels}, scale.options());
  const auto& k = kernels();
  if (walk->planes) {
    k.channel_scale_shift_backward_planes(
        g.const_data_ptr<float>(), x.const_data_ptr<float>(), s.const_data_ptr<float>(),
        gx.mutable_data_ptr<float>(), gscale.mutable_data_ptr<float>(),
        gshift.mutable_data_ptr<float>(), walk->outer, walk->channels, walk->inner);
  } else {
    k.channel_scale_shift_backward_rows(
        g.const_data_ptr<float>(), x.const_data_ptr<float>(), s.const_data_ptr<float>(),
        gx.mutable_data_ptr<float>(), gscale.mutable_data_ptr<float>(),
        gshift.mutable_data_ptr<float>(), walk->outer, walk->channels);
  }
  return {gx, gscale, gshift};
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CPU, m) { COREAI_OPT_CHANNEL_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::cpu
