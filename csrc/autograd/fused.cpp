// Autograd of the fused family: the straight-through estimator of the fake-quantize the op
// ran (or the identity when fake_quant_on is off); the state it writes gets no gradient.
// float32 inputs on CPU run fused_fake_quantize_cachemask and keep only its mask (a byte
// per element): outside tracing in a MaskBackward node, under tracing (torch.compile) in a
// TracedMaskFakeQuantize Function. Other dtypes and devices keep x and copies of the qparams
// (FusedFakeQuantize).
#include "autograd/differentiable.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "autograd/state_copy.h"
#include "ops/checks.h"
#include "ops/fused_op_handle.h"
#include "ops/schemas.h"

namespace coreai_opt::autograd {

namespace {

// A new autograd node held the way this torch holds them: c10::intrusive_ptr in recent
// releases, std::shared_ptr before (Edge::function's type says which).
using NodePtr = decltype(torch::autograd::Edge::function);
template <typename N, typename... A>
NodePtr make_node(A&&... args) {
  if constexpr (std::is_same_v<NodePtr, std::shared_ptr<torch::autograd::Node>>) {
    return std::make_shared<N>(std::forward<A>(args)...);
  } else {
    return c10::make_intrusive<N>(std::forward<A>(args)...);
  }
}

// The ops the mask forms call.
using MaskBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&);

// Arguments of fused_fake_quantize (one gradient slot each in a Function's backward).
constexpr size_t kFusedArgs = 19;

// fused_fake_quantize_cachemask below autograd, given fused_fake_quantize's arguments:
// (y, mask).
template <typename... A>
std::tuple<at::Tensor, at::Tensor> cachemask_below(const A&... args) {
  return call_below(ops::fused_fake_quantize_cachemask_op(), args...);
}

// fake_quantize_mask_backward, the out-of-place backward both mask forms run.
const c10::TypedOperatorHandle<MaskBackwardSig>& mask_backward_op() {
  static const auto op = op_handle<MaskBackwardSig>("fake_quantize_mask_backward");
  return op;
}

// The backward node of the float32 CPU form: grad * the saved straight-through mask. A node
// of its own rather than a torch::autograd::Function, because the engine moves a node's
// incoming gradient into apply(): when that tensor and its storage have no other owner
// (no other node's input, no hook, no .grad, no view), nothing can observe it, and the mask
// multiplies it in place (fake_quantize_mask_backward_), which saves a full-size allocation
// and a write to fresh memory per fake-quantizer: 18-76 us (mean 44 us) of SmallCNN's
// eager QAT step, against the out-of-place op, in one process over 8 rounds.
class MaskBackward : public torch::autograd::Node {
 public:
  explicit MaskBackward(const at::Tensor& mask) : mask_(mask, /*is_output=*/false) {}
  std::string name() const override { return "coreai_opt::FusedFakeQuantizeBackward"; }
  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    const auto& out_of_place = mask_backward_op();
    using InPlaceSig = void(const at::Tensor&, const at::Tensor&);
    static const auto in_place = op_handle<InPlaceSig>("fake_quantize_mask_backward_");
    const at::Tensor mask = mask_.unpack();
    at::Tensor grad = std::move(grads[0]);
    torch::autograd::variable_list out(1);
    if (!grad.defined() || !should_compute_output(0)) return out;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    if (sole_owner(grad) && grad.strides() == mask.strides()) {
      in_place.call(grad, mask);
      out[0] = std::move(grad);
    } else {
      out[0] = out_of_place.call(grad, mask);
    }
    return out;
  }
  void release_variables() override { mask_.reset_data(); }

 private:
  // Nothing but this reference holds the tensor or its storage, and it needs no gradient
  // itself (create_graph off). Its dtype and device are y's (float32, CPU: the only form
  // that records this node); the op's kernel handles any layout it shares with the mask.
  static bool sole_owner(const at::Tensor& t) {
    return t.use_count() == 1 && !t.is_view() && t.storage().use_count() == 1 &&
           !t.requires_grad() && !t.is_inference();
  }
  torch::autograd::SavedVariable mask_;
};

// The float32 CPU form under tracing (torch.compile, dispatch modes): the same ops as the
// node above, but as a Function that AOTAutograd can trace, with the out-of-place backward
// (the in-place one depends on who owns the gradient at run time). Against keeping x and
// the qparams (FusedFakeQuantize), in one process, 5 rounds in each compile order: the
// pre-LN block's compiled QAT step took 0.25-1.76 ms less (1.03-1.07x float instead of
// 1.07-1.09x), SmallCNN's moved by -52 to +47 us per round (no difference), and the saved
// tensors of one step fell from 35.29 to 24.09 MiB (block) and 4.83 to 3.26 MiB (CNN).
class TracedMaskFakeQuantize : public torch::autograd::Function<TracedMaskFakeQuantize> {
 public:
  // x, then the rest of fused_fake_quantize's arguments as the caller passes them.
  template <typename... Rest>
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const Rest&... rest) {
    auto [y, mask] = cachemask_below(x, rest...);
    ctx->save_for_backward({mask});
    return y;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto s = ctx->get_saved_variables();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    tensor_list out(kFusedArgs);
    out[0] = mask_backward_op().call(grads[0], s[0]);
    return out;
  }
};

// Every other call (other dtypes, other devices) saves x and copies of the qparams: the
// backward recomputes the mask from them.
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
    // Straight to the kernels: the backward ops are not differentiable, so their Autograd
    // kernels would only box the call and run it below autograd.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    tensor_list out(kFusedArgs);
    const auto gx =
        bw.call(grads[0], s[0], s[1], s[2], s[3], s[4], ctx->saved_data["dtype"].toScalarType(),
                ctx->saved_data["qmin"].toInt(), ctx->saved_data["qmax"].toInt(),
                ctx->saved_data["use_minval"].toBool());
    out[0] = gx;
    return out;
  }
};

// The Autograd kernel: float32 x on CPU runs fused_fake_quantize_cachemask and keeps only
// its mask (a byte per element), not x (4 bytes per element, often held by nobody else) nor
// copies of the qparams: in a MaskBackward node outside tracing, else through
// TracedMaskFakeQuantize. Every other call goes through FusedFakeQuantize.
at::Tensor fused_fake_quantize_autograd(
    const at::Tensor& x, const at::Tensor& observer_on, const at::Tensor& fake_quant_on,
    const at::Tensor& running_min, const at::Tensor& running_max, const at::Tensor& scale,
    const at::Tensor& zero_point, const at::Tensor& minval, c10::SymIntArrayRef block_size,
    c10::ScalarType dtype, int64_t quant_min, int64_t quant_max, bool symmetric, bool use_minval,
    bool e8m0, c10::string_view method, double averaging_constant, std::optional<double> range_min,
    std::optional<double> range_max) {
  const bool float_cpu_grad = at::GradMode::is_enabled() && requires_grad(x) &&
                              x.scalar_type() == at::kFloat && x.device().is_cpu();
  if (float_cpu_grad && untraced_cpu(x)) {
    auto [y, mask] =
        cachemask_below(x, observer_on, fake_quant_on, running_min, running_max, scale, zero_point,
                        minval, block_size, dtype, quant_min, quant_max, symmetric, use_minval,
                        e8m0, method, averaging_constant, range_min, range_max);
    auto node = make_node<MaskBackward>(mask);
    node->set_next_edges(torch::autograd::collect_next_edges(x));
    torch::autograd::set_history(y, node);
    return y;
  }
  if (float_cpu_grad) {
    return TracedMaskFakeQuantize::apply(x, observer_on, fake_quant_on, running_min, running_max,
                                         scale, zero_point, minval, block_size, dtype, quant_min,
                                         quant_max, symmetric, use_minval, e8m0, method,
                                         averaging_constant, range_min, range_max);
  }
  return AutogradKernel<FusedFakeQuantize>::call(
      x, observer_on, fake_quant_on, running_min, running_max, scale, zero_point, minval,
      block_size, dtype, quant_min, quant_max, symmetric, use_minval, e8m0, method,
      averaging_constant, range_min, range_max);
}

// The bound form under tracing (ops/bound_fused.cpp): the mask form above, with the bound
// cachemask op, whatever x's dtype and device (its reference kernel serves every device).
class BoundMaskFakeQuantize : public torch::autograd::Function<BoundMaskFakeQuantize> {
 public:
  using CachemaskSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t,
                                                          c10::SymIntArrayRef);
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t handle,
                            c10::SymIntArrayRef block_size) {
    static const auto masked = op_handle<CachemaskSig>("_fused_fake_quantize_bound_cachemask");
    auto [y, mask] = call_below(masked, x, handle, block_size);
    ctx->save_for_backward({mask});
    return y;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto s = ctx->get_saved_variables();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return {mask_backward_op().call(grads[0], s[0]), at::Tensor(), at::Tensor()};
  }
};

at::Tensor fused_fake_quantize_bound_traced_autograd(const at::Tensor& x, int64_t handle,
                                                     c10::SymIntArrayRef block_size) {
  if (at::GradMode::is_enabled() && requires_grad(x)) {
    return BoundMaskFakeQuantize::apply(x, handle, block_size);
  }
  using Sig = at::Tensor(const at::Tensor&, int64_t, c10::SymIntArrayRef);
  static const auto plain = op_handle<Sig>("_fused_fake_quantize_bound_traced");
  return call_below(plain, x, handle, block_size);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Autograd, m) {
  m.impl("fused_fake_quantize", &fused_fake_quantize_autograd);
  m.impl("_fused_fake_quantize_bound_traced", &fused_fake_quantize_bound_traced_autograd);
  COREAI_OPT_NON_DIFFERENTIABLE(_fused_fake_quantize_bound_cachemask)
  COREAI_OPT_NON_DIFFERENTIABLE(fused_fake_quantize_backward)
  COREAI_OPT_NON_DIFFERENTIABLE(fused_fake_quantize_cachemask)
  COREAI_OPT_NON_DIFFERENTIABLE(fake_quantize_mask_backward)
  COREAI_OPT_NON_DIFFERENTIABLE(fake_quantize_mask_backward_)
}

}  // namespace coreai_opt::autograd
