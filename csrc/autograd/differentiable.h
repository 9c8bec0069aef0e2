// The Autograd-key kernels of the coreai_opt ops.
//
// A differentiable op is a torch::autograd::Function F whose forward takes exactly the op's
// arguments (its argument list is written there once) and whose backward calls only
// dispatcher ops, so eager mode, torch.compile (AOTAutograd traces straight through) and
// every device share one gradient definition. autograd_kernel<F> is the kernel registered
// for it: when none of F's first F::kGradInputs arguments needs a gradient it calls the op
// straight below autograd (building a graph node nobody uses costs more than a small
// kernel), else F::apply. Every other op is registered with the boxed non_differentiable
// kernel. Both bump the version counter of each argument the schema marks as written.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/TypeTraits.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <optional>
#include <string>

namespace coreai_opt::autograd {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// The typed handle of coreai_opt::<name>, looked up once per signature and name.
template <typename Sig>
c10::TypedOperatorHandle<Sig> op_handle(const char* name) {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow((std::string("coreai_opt::") + name).c_str(), "")
      .typed<Sig>();
}

inline bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool requires_grad(const std::optional<at::Tensor>& t) {
  return t.has_value() && requires_grad(*t);
}
template <typename T>
bool requires_grad(const T&) {
  return false;
}

inline void bump_if_written(const c10::Argument& arg, const at::Tensor& t) {
  if (arg.alias_info() != nullptr && arg.alias_info()->isWrite()) {
    torch::autograd::impl::bump_version(t);
  }
}
template <typename T>
void bump_if_written(const c10::Argument&, const T&) {}

// op(args...) below autograd, then a version bump of every argument op's schema marks as
// written: how any Autograd kernel here runs an op whose outputs need no graph node.
template <typename Sig, typename... A>
auto call_below(const c10::TypedOperatorHandle<Sig>& op, const A&... args) {
  auto out = [&] {
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(args...);
  }();
  const auto& schema_args = op.schema().arguments();
  size_t i = 0;
  (bump_if_written(schema_args[i++], args), ...);
  return out;
}

template <typename F, typename Forward = decltype(&F::forward)>
struct AutogradKernel;

template <typename F, typename R, typename... A>
struct AutogradKernel<F, R (*)(AutogradContext*, A...)> {
  using Sig = R(A...);

  static const c10::TypedOperatorHandle<Sig>& op() {
    static const auto handle = op_handle<Sig>(F::kName);
    return handle;
  }

  // The op's kernels below autograd, then the version bumps of the state it wrote: what
  // F::forward and the no-grad fast path share.
  static R below(A... args) { return call_below(op(), args...); }

  static R call(A... args) {
    if (!at::GradMode::is_enabled()) return below(args...);
    size_t i = 0;
    bool any = false;
    ((any |= (i++ < F::kGradInputs) && requires_grad(args)), ...);
    return any ? F::apply(args...) : below(args...);
  }
};

// The kernel to register at the Autograd key for the Function F.
template <typename F>
constexpr auto autograd_kernel = &AutogradKernel<F>::call;

// Runs the op below autograd, so its outputs never require grad, then bumps the version of
// every argument the schema marks as written.
void non_differentiable(const c10::OperatorHandle& op, torch::jit::Stack* stack);

// Registers non_differentiable for each op of an X-macro list.
#define COREAI_OPT_NON_DIFFERENTIABLE(name) \
  m.impl(#name,                             \
         torch::CppFunction::makeFromBoxedFunction<&coreai_opt::autograd::non_differentiable>());

}  // namespace coreai_opt::autograd
