// Running the contiguous-only kernels on a tensor stored in another dimension order
// (channels_last, a transposed weight) without copying it.
//
// The fake-quantize ops (fused, int, float, LSQ, and their backward) return tensors with
// x's layout (torch.empty_like), so a channels_last activation stays channels_last through a
// fake-quantizer. out.permute(order) is contiguous for the order below; x and grad are
// permuted the same way (a copy only when their layout differs from out's), and so are the
// qparam sizes. The kernels index qparams row-major over the Full dimensions, which a
// permutation keeps when at most one qparam dimension is larger than 1 (per-tensor,
// per-channel, blocks along one dimension); other qparam shapes run in the logical order
// on a contiguous temporary that is then copied into out.
#pragma once

#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "cpu/contiguous_copy.h"
#include "formats/qparam_layout.h"

namespace coreai_opt::cpu {

// t's dimensions from the largest stride to the smallest (ties keep their order):
// t.permute(memory_order(t)) is contiguous when t is dense.
inline std::vector<int64_t> memory_order(const at::Tensor& t) {
  const auto strides = t.strides();
  std::vector<int64_t> order(t.dim());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return strides[a] > strides[b]; });
  return order;
}

// t's elements in ref's memory order, as one contiguous block (t and ref of one shape, ref
// dense): t itself when laid out as ref, else a copy (in tiles for a transposed layout,
// contiguous_copy.h). What a kernel that walks ref's flat memory reads t through.
inline at::Tensor in_memory_order_of(const at::Tensor& t, const at::Tensor& ref) {
  return t.strides() == ref.strides() ? t : contiguous_copy(t.permute(memory_order(ref)));
}

// torch.empty_like(like, dtype=dtype) for a CPU tensor: the same strides when like is
// non-overlapping and dense, allocated straight from the CPU allocator rather than through
// the dispatcher (empty_like, then empty_strided). Inside SmallCNN's eager QAT step a small
// fused call spent 1.5 us of its 4.3 us setting up its OrderedCall, 1.0-1.1 us with this.
inline at::Tensor empty_cpu_like(const at::Tensor& like, c10::ScalarType dtype) {
  if (!like.is_non_overlapping_and_dense())
    return at::empty_like(like, like.options().dtype(dtype));
  return at::detail::empty_strided_cpu(like.sizes(), like.strides(), dtype);
}

// One elementwise call laid out in the memory order of its output.
class OrderedCall {
 public:
  // q_sizes: the qparam shape over x's dimensions (ops::qparam_sizes); logical: the checked
  // layout of x and q_sizes, used as is unless the call runs permuted.
  OrderedCall(const at::Tensor& x, const std::vector<int64_t>& q_sizes,
              formats::QParamLayout logical)
      : out_(empty_cpu_like(x, x.scalar_type())), layout_(std::move(logical)) {
    const bool contiguous = out_.is_contiguous();
    if (!contiguous) {
      order_ = memory_order(out_);
      const auto wide =
          std::count_if(q_sizes.begin(), q_sizes.end(), [](int64_t s) { return s > 1; });
      permuted_ = wide <= 1 && out_.permute(order_).is_contiguous();
    }
    // The kernel writes into out_ itself unless out_ is laid out in an order it cannot run.
    direct_ = contiguous || permuted_;
    out_view_ = direct_ ? view(out_) : at::empty_like(x, at::MemoryFormat::Contiguous);
    x_view_ = input(x);
    if (permuted_) {
      std::vector<int64_t> q(q_sizes.size());
      for (size_t i = 0; i < q.size(); ++i) q[i] = q_sizes[order_[i]];
      layout_ = formats::make_qparam_layout(x_view_.sizes().vec(), q);
    }
  }

  // Another input of x's shape (grad) in the call's order, contiguous, of x's dtype (a
  // grad laid out unlike x is transposed in tiles, contiguous_copy.h).
  at::Tensor input(const at::Tensor& t) const {
    const at::Tensor v = view(t);
    return contiguous_copy(v.scalar_type() == out_.scalar_type() ? v : v.to(out_.scalar_type()));
  }
  const at::Tensor& x() const { return x_view_; }
  // Where the kernel writes: contiguous, in the call's order.
  const at::Tensor& out() const { return out_view_; }
  const formats::QParamLayout& layout() const { return layout_; }

  // The op's result, with x's layout.
  at::Tensor finish() {
    if (!direct_) out_.copy_(out_view_);
    return out_;
  }

  // A second output of x's shape and layout in another dtype (the fused op's mask): returns
  // where the kernel writes it, in the call's order like out(); finish_extra() gives it.
  const at::Tensor& extra_output(c10::ScalarType dtype) {
    extra_ = empty_cpu_like(out_, dtype);
    extra_view_ = direct_ ? view(extra_) : at::empty_like(extra_, at::MemoryFormat::Contiguous);
    return extra_view_;
  }
  at::Tensor finish_extra() {
    if (!direct_) extra_.copy_(extra_view_);
    return extra_;
  }

 private:
  at::Tensor view(const at::Tensor& t) const { return permuted_ ? t.permute(order_) : t; }

  at::Tensor out_;
  formats::QParamLayout layout_;
  std::vector<int64_t> order_;
  bool permuted_ = false;
  bool direct_ = true;
  at::Tensor out_view_;
  at::Tensor x_view_;
  at::Tensor extra_;
  at::Tensor extra_view_;
};

}  // namespace coreai_opt::cpu
