// Reference kernels of the fake_quantize family: the shared argument check, then plain ATen
// ops. The correct path of every device without a dedicated kernel (MPS, XPU, ...). No
// value checks and no host syncs.
#include "reference/fake_quantize.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "formats/bits.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::reference {

Blocked blocked_view(c10::IntArrayRef x_sizes, const std::vector<int64_t>& q_sizes) {
  Blocked b;
  for (size_t d = 0; d < x_sizes.size(); ++d) {
    const int64_t x = x_sizes[d];
    const int64_t q = q_sizes[d];
    if (q == x) {
      b.x_shape.push_back(x);
      b.q_shape.push_back(q);
    } else if (q == 1) {
      b.reduce_dims.push_back(static_cast<int64_t>(b.x_shape.size()));
      b.x_shape.push_back(x);
      b.q_shape.push_back(1);
    } else {
      b.x_shape.push_back(q);
      b.q_shape.push_back(q);
      b.reduce_dims.push_back(static_cast<int64_t>(b.x_shape.size()));
      b.x_shape.push_back(x / q);
      b.q_shape.push_back(1);
    }
  }
  return b;
}

Prepared prepare(const at::Tensor& x, const at::Tensor& scale) {
  Prepared p;
  p.view = blocked_view(x.sizes(), ops::qparam_sizes(x, scale));
  p.x = x.to(at::kFloat).reshape(p.view.x_shape);
  p.like = x;
  return p;
}

at::Tensor q32(const at::Tensor& q, const Blocked& v) {
  return q.to(at::kFloat).reshape(v.q_shape);
}

at::Tensor finish(const at::Tensor& y, const Prepared& p) {
  return with_layout_of(p.like, y.reshape(p.like.sizes()));
}

at::Tensor with_layout_of(const at::Tensor& x, const at::Tensor& value) {
  if (value.scalar_type() == x.scalar_type() && value.strides() == x.strides()) return value;
  at::Tensor out = at::empty_like(x);
  out.copy_(value);  // casts and lays out in one pass
  return out;
}

namespace {

// Generic integer fake-quantize in the blocked view: offsets o (quant) and f (float).
at::Tensor int_fq(const at::Tensor& x, const at::Tensor& s, const at::Tensor& o,
                  const at::Tensor& f, int64_t qmin, int64_t qmax) {
  const auto q = at::clamp(at::round((x - f) / s) + o, qmin, qmax);
  return (q - o) * s + f;
}

at::Tensor int_mask(const at::Tensor& x, const at::Tensor& s, const at::Tensor& o,
                    const at::Tensor& f, int64_t qmin, int64_t qmax) {
  const auto q = at::round((x - f) / s) + o;
  return at::logical_and(q >= qmin, q <= qmax).to(at::kFloat);
}

// (quant offset o, float offset f) of the zp or minval form in the blocked view.
std::pair<at::Tensor, at::Tensor> int_offsets(const at::Tensor& scale,
                                              const std::optional<at::Tensor>& zero_point,
                                              const std::optional<at::Tensor>& minval,
                                              int64_t quant_min, const Blocked& v) {
  const auto zeros = at::zeros(v.q_shape, scale.options().dtype(at::kFloat));
  if (minval.has_value()) {
    return {at::full(v.q_shape, static_cast<double>(quant_min), zeros.options()), q32(*minval, v)};
  }
  if (zero_point.has_value()) return {q32(*zero_point, v), zeros};
  return {zeros, zeros};
}

}  // namespace

at::Tensor int_fake_quantize(const at::Tensor& x, const at::Tensor& scale,
                             const std::optional<at::Tensor>& zero_point,
                             const std::optional<at::Tensor>& minval, int64_t quant_min,
                             int64_t quant_max) {
  const auto p = prepare(x, scale);
  const auto [o, f] = int_offsets(scale, zero_point, minval, quant_min, p.view);
  return finish(int_fq(p.x, q32(scale, p.view), o, f, quant_min, quant_max), p);
}

at::Tensor int_fake_quantize_grad(const at::Tensor& grad, const at::Tensor& x,
                                  const at::Tensor& scale,
                                  const std::optional<at::Tensor>& zero_point,
                                  const std::optional<at::Tensor>& minval, int64_t quant_min,
                                  int64_t quant_max) {
  const auto p = prepare(x, scale);
  const auto [o, f] = int_offsets(scale, zero_point, minval, quant_min, p.view);
  const auto g = grad.to(at::kFloat).reshape(p.view.x_shape);
  return finish(g * int_mask(p.x, q32(scale, p.view), o, f, quant_min, quant_max), p);
}

// Round onto the float format's grid (formats/float_format.h), elementwise in ATen ops.
at::Tensor float_grid_round(const at::Tensor& v, const formats::FloatFormatInfo& info) {
  const auto a = v.abs();
  const auto exp_bits = at::bitwise_and(a.view(at::kInt), 0x7F800000).view(at::kFloat);
  const double min_normal = formats::exp2_int(formats::min_normal_exponent(info));
  const auto quantum = at::clamp_min(exp_bits, min_normal) *
                       static_cast<double>(formats::exp2_int(-info.mantissa_bits));
  return at::copysign(at::round(a / quantum) * quantum, v);
}

namespace {

at::Tensor float_fq(const at::Tensor& x, const at::Tensor& s,
                    const formats::FloatFormatInfo& info) {
  const auto v = at::clamp(x / s, -info.max_value, info.max_value);
  return float_grid_round(v, info) * s;
}

}  // namespace

at::Tensor float_fake_quantize(const at::Tensor& x, const at::Tensor& scale,
                               const formats::FloatFormatInfo& info) {
  const auto p = prepare(x, scale);
  return finish(float_fq(p.x, q32(scale, p.view), info), p);
}

at::Tensor float_fake_quantize_grad(const at::Tensor& grad, const at::Tensor& x,
                                    const at::Tensor& scale, const formats::FloatFormatInfo& info) {
  const auto p = prepare(x, scale);
  const auto r = p.x / q32(scale, p.view);
  const auto g = grad.to(at::kFloat).reshape(p.view.x_shape);
  const double mx = info.max_value;
  return finish(g * at::logical_and(r >= -mx, r <= mx).to(at::kFloat), p);
}

namespace {

at::Tensor fake_quantize_int(const at::Tensor& x, const at::Tensor& scale,
                             const std::optional<at::Tensor>& zero_point,
                             const std::optional<at::Tensor>& minval, int64_t quant_min,
                             int64_t quant_max) {
  ops::check_fake_quantize_int(x, scale, zero_point, minval, quant_min, quant_max);
  return int_fake_quantize(x, scale, zero_point, minval, quant_min, quant_max);
}

at::Tensor fake_quantize_int_backward(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& scale,
                                      const std::optional<at::Tensor>& zero_point,
                                      const std::optional<at::Tensor>& minval, int64_t quant_min,
                                      int64_t quant_max) {
  ops::check_fake_quantize_int_backward(grad, x, scale, zero_point, minval, quant_min, quant_max);
  return int_fake_quantize_grad(grad, x, scale, zero_point, minval, quant_min, quant_max);
}

at::Tensor fake_quantize_float(const at::Tensor& x, const at::Tensor& scale,
                               c10::ScalarType dtype) {
  const auto checked = ops::check_fake_quantize_float(x, scale, dtype);
  return float_fake_quantize(x, scale, formats::float_format_info(checked.format.float_format));
}

at::Tensor fake_quantize_float_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& scale, c10::ScalarType dtype) {
  const auto checked = ops::check_fake_quantize_float_backward(grad, x, scale, dtype);
  return float_fake_quantize_grad(grad, x, scale,
                                  formats::float_format_info(checked.format.float_format));
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CompositeExplicitAutograd, m) {
  COREAI_OPT_FAKE_QUANTIZE_OPS(COREAI_OPT_IMPL)
}

}  // namespace coreai_opt::reference
