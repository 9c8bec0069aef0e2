// The reference (CompositeExplicitAutograd) fake-quantize on checked arguments, in plain ATen
// ops with the CPU kernels' float32 operation order; shared by the fake_quantize, lsq, fused
// and pack families.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

#include "formats/float_format.h"

namespace coreai_opt::reference {

// x and a qparam tensor viewed so they broadcast: a blocked dimension d of x becomes
// (q_d, block) and the qparam gets (q_d, 1).
struct Blocked {
  std::vector<int64_t> x_shape;
  std::vector<int64_t> q_shape;
  std::vector<int64_t> reduce_dims;  // dims of the blocked view a qparam is shared along
};
Blocked blocked_view(c10::IntArrayRef x_sizes, const std::vector<int64_t>& q_sizes);

// A qparam tensor as float32 in the blocked view.
at::Tensor q32(const at::Tensor& q, const Blocked& v);

// Values onto the float format's grid (formats/float_format.h), elementwise.
at::Tensor float_grid_round(const at::Tensor& v, const formats::FloatFormatInfo& info);

// Integer fake-quantize (zp form, or minval form when minval is given) and its STE gradient.
at::Tensor int_fake_quantize(const at::Tensor& x, const at::Tensor& scale,
                             const std::optional<at::Tensor>& zero_point,
                             const std::optional<at::Tensor>& minval, int64_t quant_min,
                             int64_t quant_max);
at::Tensor int_fake_quantize_grad(const at::Tensor& grad, const at::Tensor& x,
                                  const at::Tensor& scale,
                                  const std::optional<at::Tensor>& zero_point,
                                  const std::optional<at::Tensor>& minval, int64_t quant_min,
                                  int64_t quant_max);
// Float-format fake-quantize and its STE gradient.
at::Tensor float_fake_quantize(const at::Tensor& x, const at::Tensor& scale,
                               const formats::FloatFormatInfo& info);
at::Tensor float_fake_quantize_grad(const at::Tensor& grad, const at::Tensor& x,
                                    const at::Tensor& scale, const formats::FloatFormatInfo& info);

// Whole-tensor helpers of the blocked view: x as float32 in it, and back to x's shape/dtype.
struct Prepared {
  at::Tensor x;  // float32, blocked view
  Blocked view;
  at::Tensor like;  // x: the result takes its shape, dtype and layout
};
Prepared prepare(const at::Tensor& x, const at::Tensor& scale);
at::Tensor finish(const at::Tensor& y, const Prepared& p);

// value (of x's shape) with x's layout, as torch.empty_like(x): what every device's
// fake-quantize ops return (a copy only when value is laid out otherwise).
at::Tensor with_layout_of(const at::Tensor& x, const at::Tensor& value);

}  // namespace coreai_opt::reference
