// Output allocation of the Meta kernels: symbolic sizes pass straight through.
#pragma once

#include <ATen/ops/empty.h>

namespace coreai_opt::meta {

// An empty tensor of t's (possibly symbolic) sizes and options, with another dtype if given.
inline at::Tensor like(const at::Tensor& t, std::optional<at::ScalarType> dtype = std::nullopt) {
  return at::empty_symint(t.sym_sizes(), t.options().dtype(dtype.value_or(t.scalar_type())));
}

// x.size(d) / block_size[d], symbolic where they are.
inline std::vector<c10::SymInt> reduced_sizes(const at::Tensor& x, c10::SymIntArrayRef block_size) {
  std::vector<c10::SymInt> out;
  const auto xs = x.sym_sizes();
  out.reserve(xs.size());
  for (size_t d = 0; d < xs.size(); ++d) out.push_back(xs[d] / block_size[d]);
  return out;
}

}  // namespace coreai_opt::meta
