// The dispatch key eager mode intercepts ops with: one constant, used everywhere.
//
// AutocastPrivateUse1 is a functionality key without backend bits that sits above Autograd
// and above the CompositeImplicitAutograd decompositions, so a kernel on it sees aten::linear,
// aten::conv2d, aten::add, ... as the user called them. It is excluded by default (costs
// nothing while our scope is off) and core registers no fallback for it. The PrivateUse1/2/3
// and AutogradPrivateUse* keys would mix backend bits into every tensor; PreDispatch,
// PythonTLSSnapshot, the functorch keys and the TESTING_ONLY keys belong to torch itself.
#pragma once

#include <c10/core/DispatchKey.h>
#include <c10/core/DispatchKeySet.h>

namespace coreai_opt::eager {

constexpr c10::DispatchKey kInterceptKey = c10::DispatchKey::AutocastPrivateUse1;

// The keys below ours: what a kernel on kInterceptKey redispatches to.
inline c10::DispatchKeySet keys_after_intercept() {
  return c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, kInterceptKey);
}

}  // namespace coreai_opt::eager
