// Copies of the small state tensors (switches, qparams) an autograd node saves for backward.
#pragma once

#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <cstring>

namespace coreai_opt::autograd {

// True for a strided dense CPU tensor with no wrapper or Python key (no subclass, fake or
// functional tensor, so not being traced), when no TorchDispatchMode is active.
inline bool untraced_cpu(const at::Tensor& t) {
  // Autograd, autocast and ADInplaceOrView keys come with every dense tensor.
  const c10::DispatchKeySet functional_keys =
      t.key_set() - c10::autograd_dispatch_keyset - c10::autocast_dispatch_keyset -
      c10::DispatchKeySet(c10::DispatchKey::ADInplaceOrView);
  return functional_keys == c10::DispatchKeySet(c10::DispatchKey::CPU) &&
         t.layout() == at::kStrided &&
         !c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::Python);
}

// untraced_cpu and contiguous: what a memcpy can copy.
inline bool plain_cpu(const at::Tensor& t) { return untraced_cpu(t) && t.is_contiguous(); }

// A copy of t. A plain CPU tensor is copied with one allocation and a memcpy: a clone
// through the dispatcher costs about a microsecond per tensor, a few percent of a small
// model's QAT step when every fake-quantizer saves three. Everything else (fake and
// functional tensors while tracing, other devices, subclasses, dispatch modes) is cloned
// through the dispatcher, so tracing records the copy.
inline at::Tensor copy_state(const at::Tensor& t) {
  if (!plain_cpu(t)) return t.clone(at::MemoryFormat::Contiguous);
  at::Tensor out = at::detail::empty_cpu(t.sizes(), t.scalar_type());
  if (t.nbytes() > 0) std::memcpy(out.mutable_data_ptr(), t.const_data_ptr(), t.nbytes());
  return out;
}

}  // namespace coreai_opt::autograd
