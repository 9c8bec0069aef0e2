// Per-channel scale and shift schemas: the rescale of graph mode's conv-bn QAT form.
#include "ops/schemas.h"

namespace coreai_opt::ops {

void define_channel(torch::Library& m) {
  // channel_scale_shift(x, scale, shift=None) -> y
  //   y[n, c, ...] = x[n, c, ...] * scale[c] + shift[c], the product rounded before the sum
  //   (bit for bit `x * scale.view(1, -1, 1, ...) + shift.view(1, -1, 1, ...)`). x has rank
  //   >= 2 with channels on dim 1; scale and shift are 1-D of x.size(1) entries, x's dtype.
  //   y has x's layout. Differentiable in x, scale and shift.
  m.def("channel_scale_shift(Tensor x, Tensor scale, Tensor? shift=None) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // channel_scale_shift_backward(grad, x, scale) -> (grad_x, grad_scale, grad_shift)
  //   grad_x = grad * scale[c] (x's layout); grad_scale[c] = sum of grad * x over every dim
  //   but 1; grad_shift[c] = sum of grad over every dim but 1 (1-D, x's dtype). One pass
  //   over grad and x on the CPU kernels.
  m.def(
      "channel_scale_shift_backward(Tensor grad, Tensor x, Tensor scale) -> (Tensor, Tensor, "
      "Tensor)",
      {at::Tag::pt2_compliant_tag});
}

}  // namespace coreai_opt::ops
