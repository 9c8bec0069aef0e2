// Reference kernels of channel_scale_shift (plain ATen ops): every device without its own.
#include <torch/library.h>

#include "ops/channel_math.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::reference {

namespace {

at::Tensor channel_scale_shift(const at::Tensor& x, const at::Tensor& scale,
                               const std::optional<at::Tensor>& shift) {
  ops::check_channel_scale_shift(x, scale, shift);
  return ops::channel_scale_shift_composite(x, scale, shift);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_scale_shift_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale) {
  ops::check_channel_scale_shift_backward(grad, x, scale);
  return ops::channel_scale_shift_backward_composite(grad, x, scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CompositeExplicitAutograd, m) {
  COREAI_OPT_CHANNEL_OPS(COREAI_OPT_IMPL)
}

}  // namespace coreai_opt::reference
