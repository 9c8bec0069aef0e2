// Autograd of the fused family: the straight-through estimator of the fake-quantize the op
// ran (or the identity when fake_quant_on is off); the state it writes gets no gradient.
// float32 inputs on the CPU kernels run fused_fake_quantize_cachemask and keep only its
// mask (a byte per element) for fake_quantize_mask_backward; other dtypes, devices and
// traced calls keep x and copies of the qparams.
#include "autograd/differentiable.h"

#include <tuple>

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
    if (x.scalar_type() == at::kFloat && untraced_cpu(x)) {
      // float32 on the CPU kernels: the forward also writes the straight-through mask (one
      // byte per element), and backward keeps only that, not x (4 bytes per element, often
      // held by nobody else) nor copies of the qparams. Traced calls (torch.compile) keep the
      // form below, which is faster there though it saves more: with the mask form (its
      // backward as the op or as a multiply Inductor fuses) SmallCNN's compiled QAT step
      // took 1.38-1.42x float against 1.29-1.32x, for 1.23x float saved bytes against 1.82x
      // (one process per measure, compile caches off).
      using MaskedSig = std::tuple<at::Tensor, at::Tensor>(
          const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
          const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
          c10::SymIntArrayRef, c10::ScalarType, int64_t, int64_t, bool, bool, bool,
          c10::string_view, double, std::optional<double>, std::optional<double>);
      static const auto masked = op_handle<MaskedSig>("fused_fake_quantize_cachemask");
      auto [y, mask] =
          call_below(masked, x, observer_on, fake_quant_on, running_min, running_max, scale,
                     zero_point, minval, block_size, dtype, quant_min, quant_max, symmetric,
                     use_minval, e8m0, method, averaging_constant, range_min, range_max);
      ctx->save_for_backward({mask});
      return y;
    }
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
    using MaskBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&);
    static const auto mask_bw = op_handle<MaskBackwardSig>("fake_quantize_mask_backward");
    const auto s = ctx->get_saved_variables();
    // Straight to the kernels: the backward ops are not differentiable, so their Autograd
    // kernels would only box the call and run it below autograd.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    tensor_list out(19);
    if (s.size() == 1) {  // the float32 form: the mask alone
      out[0] = mask_bw.call(grads[0], s[0]);
      return out;
    }
    const auto gx =
        bw.call(grads[0], s[0], s[1], s[2], s[3], s[4], ctx->saved_data["dtype"].toScalarType(),
                ctx->saved_data["qmin"].toInt(), ctx->saved_data["qmax"].toInt(),
                ctx->saved_data["use_minval"].toBool());
    out[0] = gx;
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Autograd, m) {
  m.impl("fused_fake_quantize", autograd_kernel<FusedFakeQuantize>);
  COREAI_OPT_NON_DIFFERENTIABLE(fused_fake_quantize_backward)
  COREAI_OPT_NON_DIFFERENTIABLE(fused_fake_quantize_cachemask)
  COREAI_OPT_NON_DIFFERENTIABLE(fake_quantize_mask_backward)
}

}  // namespace coreai_opt::autograd
