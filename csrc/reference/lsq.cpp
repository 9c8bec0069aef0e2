// Reference kernels of the lsq family (learnable scale and zero point, zp formulation).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/schemas.h"
#include "reference/fake_quantize.h"

namespace coreai_opt::reference {

namespace {

at::Tensor rounded_zp(const at::Tensor& zero_point, const Blocked& v, int64_t qmin, int64_t qmax) {
  return at::round(at::clamp(q32(zero_point, v), qmin, qmax));
}

at::Tensor fake_quantize_lsq(const at::Tensor& x, const at::Tensor& scale,
                             const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max,
                             double /*grad_factor*/) {
  ops::check_fake_quantize_lsq(x, scale, zero_point, quant_min, quant_max);
  const auto p = prepare(x, scale);
  const auto zp = rounded_zp(zero_point, p.view, quant_min, quant_max);
  const auto q = at::clamp(at::round(p.x / q32(scale, p.view)) + zp, quant_min, quant_max);
  return finish((q - zp) * q32(scale, p.view), p);
}

at::Tensor sum_to_qparam(const at::Tensor& t, const Blocked& v, const at::Tensor& like) {
  const auto summed = v.reduce_dims.empty() ? t : t.sum(v.reduce_dims, /*keepdim=*/true);
  return summed.reshape(like.sizes()).to(like.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quantize_lsq_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max, double grad_factor) {
  ops::check_fake_quantize_lsq_backward(grad, x, scale, zero_point, quant_min, quant_max);
  const auto p = prepare(x, scale);
  const auto s = q32(scale, p.view);
  const auto zp = rounded_zp(zero_point, p.view, quant_min, quant_max);
  const auto g = grad.to(at::kFloat).reshape(p.view.x_shape);
  const auto q = at::round(p.x / s) + zp;
  const auto inside = at::logical_and(q >= quant_min, q <= quant_max);
  const auto qc = at::clamp(q, quant_min, quant_max);
  const auto y = (qc - zp) * s;
  const auto dx = g * inside.to(at::kFloat);
  const auto ds = at::where(inside, g * (y - p.x) / s, g * (qc - zp)) * grad_factor;
  const auto dz =
      at::where(inside, at::zeros_like(g), at::where(at::isnan(q), q, -g * s)) * grad_factor;
  return {finish(dx, p), sum_to_qparam(ds, p.view, scale), sum_to_qparam(dz, p.view, zero_point)};
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CompositeExplicitAutograd, m) { COREAI_OPT_LSQ_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::reference
