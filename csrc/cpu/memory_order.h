// Running the contiguous-only kernels on a tensor stored in another dimension order
// (channels_last, a transposed weight) without copying it.
//
// The fused ops return y with x's layout (torch.empty_like), so a channels_last activation
// stays channels_last through a fake-quantizer. y.permute(order) is contiguous for the
// order below; x and grad are permuted the same way (a copy only when their layout differs
// from y's), and so are the qparam sizes. The kernels index qparams row-major over the
// Full dimensions, which a permutation keeps when at most one qparam dimension is larger
// than 1 (per-tensor, per-channel, blocks along one dimension); other qparam shapes run in
// the logical order and y is filled by a copy.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <numeric>
#include <vector>

namespace coreai_opt::cpu {

class MemoryOrder {
 public:
  // The order in which `out` (dense, e.g. from empty_like) is stored, if the qparams of
  // q_sizes allow running in it; identity when out is contiguous.
  static MemoryOrder of(const at::Tensor& out, const std::vector<int64_t>& q_sizes) {
    MemoryOrder m;
    const int64_t dim = out.dim();
    m.order_.resize(dim);
    std::iota(m.order_.begin(), m.order_.end(), 0);
    if (out.is_contiguous()) return m;
    const auto strides = out.strides();
    std::stable_sort(m.order_.begin(), m.order_.end(),
                     [&](int64_t a, int64_t b) { return strides[a] > strides[b]; });
    const auto wide =
        std::count_if(q_sizes.begin(), q_sizes.end(), [](int64_t s) { return s > 1; });
    m.usable_ = wide <= 1 && out.permute(m.order_).is_contiguous();
    m.identity_ = false;
    return m;
  }

  // False: run in the logical order on contiguous copies and copy the result into out.
  bool usable() const { return usable_; }
  bool identity() const { return identity_; }

  // t's dimensions in memory order (a view; contiguous when t is laid out like out).
  at::Tensor view(const at::Tensor& t) const { return identity_ ? t : t.permute(order_); }

  // sizes (one per dimension of x) in memory order.
  std::vector<int64_t> sizes(const std::vector<int64_t>& s) const {
    std::vector<int64_t> r(s.size());
    for (size_t i = 0; i < s.size(); ++i) r[i] = s[order_[i]];
    return r;
  }

 private:
  std::vector<int64_t> order_;
  bool usable_ = true;
  bool identity_ = true;
};

}  // namespace coreai_opt::cpu
