// The signature of the fused family's forward ops and the typed dispatcher handles of
// coreai_opt::fused_fake_quantize and its cachemask variant, for the C++ callers that keep
// their arguments themselves: eager mode's native slots (eager/program.cpp), the bound
// arguments of Python fake-quantizers (ops/bound_fused.cpp) and the Autograd kernel
// (autograd/fused.cpp).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>

namespace coreai_opt::ops {

// The C++ signature of an op that takes fused_fake_quantize's arguments, returning R
// (fused_fake_quantize itself: a tensor; its cachemask variant: (y, mask)).
template <typename R>
using FusedSignature = R(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         c10::SymIntArrayRef, c10::ScalarType, int64_t, int64_t, bool, bool, bool,
                         c10::string_view, double, std::optional<double>, std::optional<double>);
using FusedFakeQuantizeSig = FusedSignature<at::Tensor>;
using FusedCachemaskSig = FusedSignature<std::tuple<at::Tensor, at::Tensor>>;

inline const c10::TypedOperatorHandle<FusedFakeQuantizeSig>& fused_fake_quantize_op() {
  static const auto handle = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("coreai_opt::fused_fake_quantize", "")
                                 .typed<FusedFakeQuantizeSig>();
  return handle;
}

inline const c10::TypedOperatorHandle<FusedCachemaskSig>& fused_fake_quantize_cachemask_op() {
  static const auto handle = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("coreai_opt::fused_fake_quantize_cachemask", "")
                                 .typed<FusedCachemaskSig>();
  return handle;
}

}  // namespace coreai_opt::ops
