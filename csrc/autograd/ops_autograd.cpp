// Autograd for the coreai_opt ops, registered at the Autograd alias key as C++
// torch::autograd::Functions whose forward and backward call only dispatcher ops, so eager
// mode, torch.compile (AOTAutograd traces straight through them) and every device share
// one gradient definition.
//
// - fake_quantize_int / _float / fused_fake_quantize: straight-through estimator with the
//   clipping mask, recomputed in backward from the saved input (never a saved float mask).
// - fake_quantize_lsq: gradients for x, scale and zero_point, reduced inside the kernel.
// - Everything else is not differentiable: its outputs never require grad, and the
//   mutating ops bump the version counters of the state they write.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <optional>

namespace coreai_opt::autograd {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

template <typename Sig>
c10::TypedOperatorHandle<Sig> op_handle(const char* name) {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow((std::string("coreai_opt::") + name).c_str(), "")
      .typed<Sig>();
}

using FqIntSig = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            const std::optional<at::Tensor>&, int64_t, int64_t);
using FqIntBwSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                              int64_t, int64_t);
using FqFloatSig = at::Tensor(const at::Tensor&, const at::Tensor&, c10::ScalarType);
using FqFloatBwSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                c10::ScalarType);
using LsqSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t,
                          double);
using LsqBwSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&,
                                                                const at::Tensor&,
                                                                const at::Tensor&,
                                                                const at::Tensor&, int64_t, int64_t,
                                                                double);
using FusedSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef,
                            c10::ScalarType, int64_t, int64_t, bool, bool, bool, c10::string_view,
                            double, std::optional<double>, std::optional<double>);
using FusedBwSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              c10::ScalarType, int64_t, int64_t, bool);

// True when autograd must record this call. Otherwise the wrappers call the op straight
// below autograd: building a graph node nobody uses costs more than a small kernel.
bool needs_grad(std::initializer_list<const at::Tensor*> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const auto* t : inputs) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

// Runs an op's kernels below autograd: what each Function's forward and the no-grad fast
// path of its wrapper share.
template <typename Sig, typename... Args>
decltype(auto) call_below_autograd(const c10::TypedOperatorHandle<Sig>& op, Args&&... args) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(std::forward<Args>(args)...);
}

#define COREAI_OP_HANDLE(fn, Sig, name)              \
  const c10::TypedOperatorHandle<Sig>& fn() {        \
    static const auto handle = op_handle<Sig>(name); \
    return handle;                                   \
  }
COREAI_OP_HANDLE(fq_int_op, FqIntSig, "fake_quantize_int")
COREAI_OP_HANDLE(fq_int_bw_op, FqIntBwSig, "fake_quantize_int_backward")
COREAI_OP_HANDLE(fq_float_op, FqFloatSig, "fake_quantize_float")
COREAI_OP_HANDLE(fq_float_bw_op, FqFloatBwSig, "fake_quantize_float_backward")
COREAI_OP_HANDLE(lsq_op, LsqSig, "fake_quantize_lsq")
COREAI_OP_HANDLE(lsq_bw_op, LsqBwSig, "fake_quantize_lsq_backward")
COREAI_OP_HANDLE(fused_op, FusedSig, "fused_fake_quantize")
COREAI_OP_HANDLE(fused_bw_op, FusedBwSig, "fused_fake_quantize_backward")
#undef COREAI_OP_HANDLE

std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// ---- fake_quantize_int ----------------------------------------------------------------

class FakeQuantizeInt : public torch::autograd::Function<FakeQuantizeInt> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const std::optional<at::Tensor>& zero_point,
                            const std::optional<at::Tensor>& minval, int64_t qmin, int64_t qmax) {
    ctx->save_for_backward(
        {x, scale, zero_point.value_or(at::Tensor()), minval.value_or(at::Tensor())});
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    return call_below_autograd(fq_int_op(), x, scale, zero_point, minval, qmin, qmax);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto gx =
        fq_int_bw_op().call(grads[0], s[0], s[1], opt(s[2]), opt(s[3]),
                            ctx->saved_data["qmin"].toInt(), ctx->saved_data["qmax"].toInt());
    return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor fake_quantize_int(const at::Tensor& x, const at::Tensor& scale,
                             const std::optional<at::Tensor>& zero_point,
                             const std::optional<at::Tensor>& minval, int64_t qmin, int64_t qmax) {
  if (!needs_grad({&x})) {
    return call_below_autograd(fq_int_op(), x, scale, zero_point, minval, qmin, qmax);
  }
  return FakeQuantizeInt::apply(x, scale, zero_point, minval, qmin, qmax);
}

// ---- fake_quantize_float --------------------------------------------------------------

class FakeQuantizeFloat : public torch::autograd::Function<FakeQuantizeFloat> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            c10::ScalarType dtype) {
    ctx->save_for_backward({x, scale});
    ctx->saved_data["dtype"] = dtype;
    return call_below_autograd(fq_float_op(), x, scale, dtype);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto gx =
        fq_float_bw_op().call(grads[0], s[0], s[1], ctx->saved_data["dtype"].toScalarType());
    return {gx, at::Tensor(), at::Tensor()};
  }
};

at::Tensor fake_quantize_float(const at::Tensor& x, const at::Tensor& scale,
                               c10::ScalarType dtype) {
  if (!needs_grad({&x})) return call_below_autograd(fq_float_op(), x, scale, dtype);
  return FakeQuantizeFloat::apply(x, scale, dtype);
}

// ---- LSQ ------------------------------------------------------------------------------

class FakeQuantizeLsq : public torch::autograd::Function<FakeQuantizeLsq> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& zero_point, int64_t qmin, int64_t qmax,
                            double grad_factor) {
    ctx->save_for_backward({x, scale, zero_point});
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    ctx->saved_data["grad_factor"] = grad_factor;
    return call_below_autograd(lsq_op(), x, scale, zero_point, qmin, qmax, grad_factor);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [dx, ds, dz] = lsq_bw_op().call(
        grads[0], s[0], s[1], s[2], ctx->saved_data["qmin"].toInt(),
        ctx->saved_data["qmax"].toInt(), ctx->saved_data["grad_factor"].toDouble());
    return {dx, ds, dz, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor fake_quantize_lsq(const at::Tensor& x, const at::Tensor& scale,
                             const at::Tensor& zero_point, int64_t qmin, int64_t qmax,
                             double grad_factor) {
  if (!needs_grad({&x, &scale, &zero_point})) {
    return call_below_autograd(lsq_op(), x, scale, zero_point, qmin, qmax, grad_factor);
  }
  return FakeQuantizeLsq::apply(x, scale, zero_point, qmin, qmax, grad_factor);
}

// ---- fused ----------------------------------------------------------------------------

void bump(const at::Tensor& t) { torch::autograd::impl::bump_version(t); }

// The fused op below autograd, then the version bump of the state it wrote.
at::Tensor run_fused(const at::Tensor& x, const at::Tensor& observer_on,
                     const at::Tensor& fake_quant_on, const at::Tensor& running_min,
                     const at::Tensor& running_max, const at::Tensor& scale,
                     const at::Tensor& zero_point, const at::Tensor& minval,
                     c10::SymIntArrayRef block_size, c10::ScalarType dtype, int64_t qmin,
                     int64_t qmax, bool symmetric, bool use_minval, bool e8m0,
                     c10::string_view method, double averaging_constant,
                     std::optional<double> range_min, std::optional<double> range_max) {
  at::Tensor y =
      call_below_autograd(fused_op(), x, observer_on, fake_quant_on, running_min, running_max,
                          scale, zero_point, minval, block_size, dtype, qmin, qmax, symmetric,
                          use_minval, e8m0, method, averaging_constant, range_min, range_max);
  for (const auto* t : {&running_min, &running_max, &scale, &zero_point, &minval}) bump(*t);
  return y;
}

class FusedFakeQuantize : public torch::autograd::Function<FusedFakeQuantize> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& observer_on, const at::Tensor& fake_quant_on,
                            const at::Tensor& running_min, const at::Tensor& running_max,
                            const at::Tensor& scale, const at::Tensor& zero_point,
                            const at::Tensor& minval, c10::SymIntArrayRef block_size,
                            c10::ScalarType dtype, int64_t qmin, int64_t qmax, bool symmetric,
                            bool use_minval, bool e8m0, c10::string_view method,
                            double averaging_constant, std::optional<double> range_min,
                            std::optional<double> range_max) {
    const at::Tensor y =
        run_fused(x, observer_on, fake_quant_on, running_min, running_max, scale, zero_point,
                  minval, block_size, dtype, qmin, qmax, symmetric, use_minval, e8m0, method,
                  averaging_constant, range_min, range_max);
    // The state is overwritten by the next step, so backward keeps its own copy of the
    // qparams this step used (they are small next to x).
    ctx->save_for_backward(
        {x, fake_quant_on.clone(), scale.clone(), zero_point.clone(), minval.clone()});
    ctx->saved_data["dtype"] = dtype;
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    ctx->saved_data["use_minval"] = use_minval;
    return y;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto gx =
        fused_bw_op().call(grads[0], s[0], s[1], s[2], s[3], s[4],
                           ctx->saved_data["dtype"].toScalarType(), ctx->saved_data["qmin"].toInt(),
                           ctx->saved_data["qmax"].toInt(), ctx->saved_data["use_minval"].toBool());
    tensor_list out(19);
    out[0] = gx;
    return out;
  }
};

at::Tensor fused_fake_quantize(const at::Tensor& x, const at::Tensor& observer_on,
                               const at::Tensor& fake_quant_on, const at::Tensor& running_min,
                               const at::Tensor& running_max, const at::Tensor& scale,
                               const at::Tensor& zero_point, const at::Tensor& minval,
                               c10::SymIntArrayRef block_size, c10::ScalarType dtype, int64_t qmin,
                               int64_t qmax, bool symmetric, bool use_minval, bool e8m0,
                               c10::string_view method, double averaging_constant,
                               std::optional<double> range_min, std::optional<double> range_max) {
  if (!needs_grad({&x})) {
    return run_fused(x, observer_on, fake_quant_on, running_min, running_max, scale, zero_point,
                     minval, block_size, dtype, qmin, qmax, symmetric, use_minval, e8m0, method,
                     averaging_constant, range_min, range_max);
  }
  return FusedFakeQuantize::apply(x, observer_on, fake_quant_on, running_min, running_max, scale,
                                  zero_point, minval, block_size, dtype, qmin, qmax, symmetric,
                                  use_minval, e8m0, method, averaging_constant, range_min,
                                  range_max);
}

// ---- not differentiable ---------------------------------------------------------------

// Runs the op below autograd, so its outputs never require grad, then bumps the version of
// every argument the schema marks as written.
void non_differentiable(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& args = op.schema().arguments();
  const size_t n = args.size();
  std::vector<at::Tensor> written;
  for (size_t i = 0; i < n; ++i) {
    const auto* info = args[i].alias_info();
    const auto& v = (*stack)[stack->size() - n + i];
    if (info != nullptr && info->isWrite() && v.isTensor()) written.push_back(v.toTensor());
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.callBoxed(stack);
  }
  for (const auto& t : written) bump(t);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Autograd, m) {
  m.impl("fake_quantize_int", &fake_quantize_int);
  m.impl("fake_quantize_float", &fake_quantize_float);
  m.impl("fake_quantize_lsq", &fake_quantize_lsq);
  m.impl("fused_fake_quantize", &fused_fake_quantize);
  for (const char* name :
       {"fake_quantize_int_backward", "fake_quantize_float_backward", "fake_quantize_lsq_backward",
        "minmax", "update_range", "choose_qparams_int", "choose_qparams_float",
        "fused_fake_quantize_backward", "pack", "unpack"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&non_differentiable>());
  }
}

}  // namespace coreai_opt::autograd
