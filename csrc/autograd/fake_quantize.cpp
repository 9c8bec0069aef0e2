// Autograd of the fake_quantize family: the straight-through estimator with the clipping
// mask, recomputed in backward from the saved input (never a saved float mask).
#include "autograd/differentiable.h"
#include "ops/schemas.h"

namespace coreai_opt::autograd {

namespace {

std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

class FakeQuantizeInt : public torch::autograd::Function<FakeQuantizeInt> {
 public:
  static constexpr const char* kName = "fake_quantize_int";
  static constexpr size_t kGradInputs = 1;  // x
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const std::optional<at::Tensor>& zero_point,
                            const std::optional<at::Tensor>& minval, int64_t quant_min,
                            int64_t quant_max) {
    ctx->save_for_backward(
        {x, scale, zero_point.value_or(at::Tensor()), minval.value_or(at::Tensor())});
    ctx->saved_data["qmin"] = quant_min;
    ctx->saved_data["qmax"] = quant_max;
    return AutogradKernel<FakeQuantizeInt>::below(x, scale, zero_point, minval, quant_min,
                                                  quant_max);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    using BackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const std::optional<at::Tensor>&,
                                   const std::optional<at::Tensor>&, int64_t, int64_t);
    static const auto bw = op_handle<BackwardSig>("fake_quantize_int_backward");
    const auto s = ctx->get_saved_variables();
    const auto gx = bw.call(grads[0], s[0], s[1], opt(s[2]), opt(s[3]),
                            ctx->saved_data["qmin"].toInt(), ctx->saved_data["qmax"].toInt());
    return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class FakeQuantizeFloat : public torch::autograd::Function<FakeQuantizeFloat> {
 public:
  static constexpr const char* kName = "fake_quantize_float";
  static constexpr size_t kGradInputs = 1;  // x
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            c10::ScalarType dtype) {
    ctx->save_for_backward({x, scale});
    ctx->saved_data["dtype"] = dtype;
    return AutogradKernel<FakeQuantizeFloat>::below(x, scale, dtype);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    using BackwardSig =
        at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::ScalarType);
    static const auto bw = op_handle<BackwardSig>("fake_quantize_float_backward");
    const auto s = ctx->get_saved_variables();
    const auto gx = bw.call(grads[0], s[0], s[1], ctx->saved_data["dtype"].toScalarType());
    return {gx, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Autograd, m) {
  m.impl("fake_quantize_int", autograd_kernel<FakeQuantizeInt>);
  m.impl("fake_quantize_float", autograd_kernel<FakeQuantizeFloat>);
  COREAI_OPT_NON_DIFFERENTIABLE(fake_quantize_int_backward)
  COREAI_OPT_NON_DIFFERENTIABLE(fake_quantize_float_backward)
}

}  // namespace coreai_opt::autograd
