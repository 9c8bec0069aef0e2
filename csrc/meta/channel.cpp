// Meta kernels of channel_scale_shift: outputs in x's layout, per-channel sums 1-D.
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "meta/like.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::meta {

namespace {

at::Tensor channel_scale_shift(const at::Tensor& x, const at::Tensor& scale,
                               const std::optional<at::Tensor>& shift) {
  ops::check_channel_scale_shift(x, scale, shift);
  return at::empty_like(x);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_scale_shift_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale) {
  ops::check_channel_scale_shift_backward(grad, x, scale);
  return {at::empty_like(x), like(scale), like(scale)};
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Meta, m) { COREAI_OPT_CHANNEL_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::meta
