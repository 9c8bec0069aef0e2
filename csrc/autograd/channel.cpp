// Autograd of channel_scale_shift: gradients for x, scale and shift from one backward op.
#include "autograd/differentiable.h"
#include "ops/schemas.h"

namespace coreai_opt::autograd {

namespace {

class ChannelScaleShift : public torch::autograd::Function<ChannelScaleShift> {
 public:
  static constexpr const char* kName = "channel_scale_shift";
  static constexpr size_t kGradInputs = 3;  // x, scale, shift
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const std::optional<at::Tensor>& shift) {
    ctx->save_for_backward({x, scale});
    ctx->saved_data["has_shift"] = shift.has_value();
    return AutogradKernel<ChannelScaleShift>::below(x, scale, shift);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    using BackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&);
    static const auto bw = op_handle<BackwardSig>("channel_scale_shift_backward");
    const auto s = ctx->get_saved_variables();
    auto [gx, gscale, gshift] = bw.call(grads[0], s[0], s[1]);
    return {gx, gscale, ctx->saved_data["has_shift"].toBool() ? gshift : at::Tensor()};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Autograd, m) {
  m.impl("channel_scale_shift", autograd_kernel<ChannelScaleShift>);
  COREAI_OPT_NON_DIFFERENTIABLE(channel_scale_shift_backward)
}

}  // namespace coreai_opt::autograd
