// Autograd of the lsq family: gradients for x, scale and zero_point, the qparam gradients
// reduced inside the backward kernel.
#include "autograd/differentiable.h"
#include "ops/schemas.h"

namespace coreai_opt::autograd {

namespace {

class FakeQuantizeLsq : public torch::autograd::Function<FakeQuantizeLsq> {
 public:
  static constexpr const char* kName = "fake_quantize_lsq";
  static constexpr size_t kGradInputs = 3;  // x, scale, zero_point
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max,
                            double grad_factor) {
    ctx->save_for_backward({x, scale, zero_point});
    ctx->saved_data["qmin"] = quant_min;
    ctx->saved_data["qmax"] = quant_max;
    ctx->saved_data["grad_factor"] = grad_factor;
    return AutogradKernel<FakeQuantizeLsq>::below(x, scale, zero_point, quant_min, quant_max,
                                                  grad_factor);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    using BackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
        int64_t, double);
    static const auto bw = op_handle<BackwardSig>("fake_quantize_lsq_backward");
    const auto s = ctx->get_saved_variables();
    auto [dx, ds, dz] =
        bw.call(grads[0], s[0], s[1], s[2], ctx->saved_data["qmin"].toInt(),
                ctx->saved_data["qmax"].toInt(), ctx->saved_data["grad_factor"].toDouble());
    return {dx, ds, dz, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Autograd, m) {
  m.impl("fake_quantize_lsq", autograd_kernel<FakeQuantizeLsq>);
  COREAI_OPT_NON_DIFFERENTIABLE(fake_quantize_lsq_backward)
}

}  // namespace coreai_opt::autograd
