// The intercepting kernels on kInterceptKey and their lazy, once-only registration.
#pragma once

#include <torch/library.h>

#include <string>

namespace coreai_opt::eager {

// Registers the key's fallthrough fallback (once) and an intercepting kernel (or, with
// pass_through, a kernel that only switches interception off for the op's insides) for the
// aten overload `name.overload`. base_id numbers the op's base name for the frame counters.
// Checked: the operator must exist, and neither the fallback nor the op may already have a
// kernel on the key from someone else. Re-registering the same overload with the same
// arguments is a no-op.
void register_op(const std::string& name, const std::string& overload, int64_t base_id,
                 bool pass_through);

// Registers the key's fallthrough fallback once; open_scope and register_op call it (with the
// key included and no kernel, every op would fail). Raises when another library already
// registered a fallback for the key.
void ensure_fallback();

// Schemas of the eager-mode helper ops and the EagerProgram class (called from the one
// TORCH_LIBRARY block, ops/library.cpp).
void define_eager(torch::Library& m);

}  // namespace coreai_opt::eager
