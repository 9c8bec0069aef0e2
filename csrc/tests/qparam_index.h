// Test helpers shared by the Catch2 suites (libtorch-free): shapes and the flat qparam index
// of every element computed straight from the op contract, the reference that layouts and
// kernels are checked against.
#pragma once

#include <cstdint>
#include <vector>

namespace coreai_opt::test {

using Sizes = std::vector<int64_t>;

inline int64_t numel_of(const Sizes& s) {
  int64_t n = 1;
  for (int64_t v : s) n *= v;
  return n;
}

// Flat qparam index of every element: q_d = i_d / (x_d / q_d), row-major over q.
inline std::vector<int64_t> qindex(const Sizes& x, const Sizes& q) {
  const int64_t n = numel_of(x);
  std::vector<int64_t> out(n);
  std::vector<int64_t> idx(x.size(), 0);
  for (int64_t e = 0; e < n; ++e) {
    int64_t qi = 0;
    for (size_t d = 0; d < x.size(); ++d) qi = qi * q[d] + idx[d] / (x[d] / q[d]);
    out[e] = qi;
    for (int64_t d = static_cast<int64_t>(x.size()) - 1; d >= 0; --d) {
      if (++idx[d] < x[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

}  // namespace coreai_opt::test
