// Autograd of the fused family: the straight-through estimator of the fake-quantize the op
// ran (or the identity when fake_quant_on is off); the state it writes gets no gradient.
#include "autograd/differentiable.h"
#include "autograd/state_copy.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::autograd {

namespace {

class FusedFakeQuantize : public torch::autograd::Function<FusedFakeQuantize> {
 public:
  static constexpr const char* kName = "fused_fake_quantize";
  static constexpr size_t kGradInputs = 1;  // x
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& observer_on, const at::Tensor& fake_quant_on,
                            const at::Tensor& running_min, const at::Tensor& running_max,
                            const at::Tensor& scale, const at::Tensor& zero_point,
                            const at::Tensor& minval, c10::SymIntArrayRef block_size,
                            c10::ScalarType dtype, int64_t quant_min, int64_t quant_max,
                            bool symmetric, bool use_minval, bool e8m0, c10::string_view method,
                            double averaging_constant, std::optional<double> range_min,
                            std::optional<double> range_max) {
    const at::Tensor y = AutogradKernel<FusedFakeQuantize>::below(
        x, observer_on, fake_quant_on, running_min, running_max, scale, zero_point, minval,
        block_size, dtype, quant_min, quant_max, symmetric, use_minval, e8m0, method,
        averaging_constant, range_min, range_max);
    // The state is overwritten by the next step, so backward keeps its own copy of the
    // switch and the qparams this step used (they are small next to x): only those the
    // straight-through mask reads. The backward op ignores the offset of the form not in
    // use (and both for float formats), so the scale's copy stands in for it.
    const at::Tensor fq_on = copy_state(fake_quant_on);
    const at::Tensor s = copy_state(scale);
    at::Tensor zp = s;
    at::Tensor mv = s;
    if (!ops::quant_format_of(dtype, kName).is_float) {
      (use_minval ? mv : zp) = copy_state(use_minval ? minval : zero_point);
    }
    ctx->save_for_backward({x, fq_on, s, zp, mv});
    ctx->saved_data["dtype"] = dtype;
    ctx->saved_data["qmin"] = quant_min;
    ctx->saved_data["qmax"] = quant_max;
    ctx->saved_data["use_minval"] = use_minval;
    return y;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    using BackwardSig =
        at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                   const at::Tensor&, const at::Tensor&, c10::ScalarType, int64_t, int64_t, bool);
    static const auto bw = op_handle<BackwardSig>("fused_fake_quantize_backward");
    const auto s = ctx->get_saved_variables();
    // Straight to the kernels: the backward op is not differentiable, so its Autograd
    // kernel would only box the call and run it below autograd.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const auto gx =
        bw.call(grads[0], s[0], s[1], s[2], s[3], s[4], ctx->saved_data["dtype"].toScalarType(),
                ctx->saved_data["qmin"].toInt(), ctx->saved_data["qmax"].toInt(),
                ctx->saved_data["use_minval"].toBool());
    tensor_list out(19);
    out[0] = gx;
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Autograd, m) {
  m.impl("fused_fake_quantize", autograd_kernel<FusedFakeQuantize>);
  COREAI_OPT_NON_DIFFERENTIABLE(fused_fake_quantize_backward)
}

}  // namespace coreai_opt::autograd
