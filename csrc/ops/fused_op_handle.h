// The typed dispatcher handle of coreai_opt::fused_fake_quantize, for the C++ callers that
// keep its arguments themselves: eager mode's native slots (eager/program.cpp) and the
// bound arguments of Python fake-quantizers (ops/bound_fused.cpp).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>

namespace coreai_opt::ops {

using FusedFakeQuantizeSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef,
                                        c10::ScalarType, int64_t, int64_t, bool, bool, bool,
                                        c10::string_view, double, std::optional<double>,
                                        std::optional<double>);

inline const c10::TypedOperatorHandle<FusedFakeQuantizeSig>& fused_fake_quantize_op() {
  static const auto handle = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("coreai_opt::fused_fake_quantize", "")
                                 .typed<FusedFakeQuantizeSig>();
  return handle;
}

}  // namespace coreai_opt::ops
