// CPU kernels of the lsq family (learnable scale and zero point, zp formulation).
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <vector>

#include "cpu/fake_quantize.h"
#include "cpu/memory_order.h"
#include "formats/rounding.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::cpu {

namespace {

// zp_r = round(clamp(zero_point, qmin, qmax)) per qparam.
QParamBuffer rounded_zero_point(const at::Tensor& zero_point, int64_t quant_min,
                                int64_t quant_max) {
  const auto raw = QParamBuffer::of(zero_point);
  std::vector<float> out(static_cast<size_t>(zero_point.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    const float z = raw.data()[i];
    const float c = z < quant_min ? quant_min : (z > quant_max ? quant_max : z);
    out[i] = formats::round_half_even(c);
  }
  return QParamBuffer::owning(std::move(out));
}

at::Tensor fake_quantize_lsq(const at::Tensor& x, const at::Tensor& scale,
                             const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max,
                             double /*grad_factor*/) {
  const auto layout = *ops::check_fake_quantize_lsq(x, scale, zero_point, quant_min, quant_max);
  const auto q = IntQParams::rounded(scale, rounded_zero_point(zero_point, quant_min, quant_max),
                                     quant_min, quant_max, "fake_quantize_lsq");
  OrderedCall call(x, ops::qparam_sizes(x, scale), layout);  // y has x's layout (memory_order.h)
  if (x.numel() > 0) kernels().fake_quantize_int(call.x(), call.out(), call.layout(), q.params());
  return call.finish();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quantize_lsq_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max, double grad_factor) {
  const auto layout =
      *ops::check_fake_quantize_lsq_backward(grad, x, scale, zero_point, quant_min, quant_max);
  const auto q = IntQParams::rounded(scale, rounded_zero_point(zero_point, quant_min, quant_max),
                                     quant_min, quant_max, "fake_quantize_lsq_backward");
  OrderedCall call(x, ops::qparam_sizes(x, scale), layout);  // grad_x has x's layout
  auto ds = at::zeros(scale.sizes(), scale.options().dtype(at::kDouble));
  auto dz = at::zeros(zero_point.sizes(), zero_point.options().dtype(at::kDouble));
  if (x.numel() > 0) {
    // The per-qparam sums are indexed by the flat qparam index, which the call's order keeps.
    kernels().lsq_backward(call.input(grad), call.x(), call.out(), call.layout(), q.params(),
                           ds.mutable_data_ptr<double>(), dz.mutable_data_ptr<double>());
  }
  const at::Tensor gx = call.finish();
  ds.mul_(grad_factor);
  dz.mul_(grad_factor);
  return {gx, ds.to(scale.scalar_type()), dz.to(zero_point.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CPU, m) { COREAI_OPT_LSQ_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::cpu
