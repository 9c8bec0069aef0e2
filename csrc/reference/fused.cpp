// Reference kernels of the fused family. The switches are applied with torch.where, so no
// host sync reads them.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "ops/checks.h"
#include "ops/schemas.h"
#include "reference/fake_quantize.h"
#include "reference/observe.h"
#include "reference/qparams.h"

namespace coreai_opt::reference {

namespace {

at::Tensor fused_fake_quantize(const at::Tensor& x, const at::Tensor& observer_on,
                               const at::Tensor& fake_quant_on, const at::Tensor& running_min,
                               const at::Tensor& running_max, const at::Tensor& scale,
                               const at::Tensor& zero_point, const at::Tensor& minval,
                               at::IntArrayRef block_size, c10::ScalarType dtype, int64_t quant_min,
                               int64_t quant_max, bool symmetric, bool use_minval, bool e8m0,
                               c10::string_view method, double averaging_constant,
                               std::optional<double> range_min, std::optional<double> range_max) {
  const auto checked = ops::check_fused_fake_quantize(
      x, observer_on, fake_quant_on, running_min, running_max, scale, zero_point, minval,
      c10::fromIntArrayRefSlow(block_size), dtype, quant_min, quant_max, method, averaging_constant,
      range_min, range_max);
  const auto& fmt = checked.format;
  const auto obs = observer_on.reshape({}).to(at::kBool);
  const auto fq = fake_quant_on.reshape({}).to(at::kBool);

  if (!(range_min.has_value() && range_max.has_value())) {
    const auto [lo, hi] = batch_range(x, *checked.q_sizes);
    auto [nmin, nmax] =
        folded_range(lo, hi, running_min, running_max, checked.method, averaging_constant);
    running_min.copy_(at::where(obs, nmin, running_min));
    running_max.copy_(at::where(obs, nmax, running_max));
  }
  at::Tensor y;
  if (fmt.is_float) {
    const auto info = formats::float_format_info(fmt.float_format);
    scale.copy_(at::where(
        obs, float_qparams(running_min, running_max, info, e8m0, range_min, range_max), scale));
    y = float_fake_quantize(x, scale, info);
  } else {
    auto [s, zp, mv] = int_qparams(running_min, running_max, quant_min, quant_max, symmetric,
                                   range_min, range_max);
    scale.copy_(at::where(obs, s, scale));
    zero_point.copy_(at::where(obs, zp, zero_point));
    minval.copy_(at::where(obs, mv, minval));
    y = use_minval ? int_fake_quantize(x, scale, std::nullopt, minval, quant_min, quant_max)
                   : int_fake_quantize(x, scale, zero_point, std::nullopt, quant_min, quant_max);
  }
  return with_layout_of(x, at::where(fq, y, x));
}

at::Tensor fused_fake_quantize_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& fake_quant_on, const at::Tensor& scale,
                                        const at::Tensor& zero_point, const at::Tensor& minval,
                                        c10::ScalarType dtype, int64_t quant_min, int64_t quant_max,
                                        bool use_minval) {
  const auto fmt =
      ops::check_fused_fake_quantize_backward(grad, x, fake_quant_on, scale, zero_point, minval,
                                              dtype, quant_min, quant_max, use_minval)
          .format;
  const auto fq = fake_quant_on.reshape({}).to(at::kBool);
  at::Tensor g;
  if (fmt.is_float) {
    g = float_fake_quantize_grad(grad, x, scale, formats::float_format_info(fmt.float_format));
  } else if (use_minval) {
    g = int_fake_quantize_grad(grad, x, scale, std::nullopt, minval, quant_min, quant_max);
  } else {
    g = int_fake_quantize_grad(grad, x, scale, zero_point, std::nullopt, quant_min, quant_max);
  }
  return with_layout_of(x, at::where(fq, g, grad.to(x.scalar_type())));
}

// value with like's layout (as torch.empty_like(like)), keeping value's dtype.
at::Tensor laid_out_as(const at::Tensor& like, const at::Tensor& value) {
  if (value.strides() == like.strides()) return value;
  at::Tensor out = at::empty_like(like, value.options());
  out.copy_(value);
  return out;
}

std::tuple<at::Tensor, at::Tensor> fused_fake_quantize_cachemask(
    const at::Tensor& x, const at::Tensor& observer_on, const at::Tensor& fake_quant_on,
    const at::Tensor& running_min, const at::Tensor& running_max, const at::Tensor& scale,
    const at::Tensor& zero_point, const at::Tensor& minval, at::IntArrayRef block_size,
    c10::ScalarType dtype, int64_t quant_min, int64_t quant_max, bool symmetric, bool use_minval,
    bool e8m0, c10::string_view method, double averaging_constant, std::optional<double> range_min,
    std::optional<double> range_max) {
  ops::check_fused_fake_quantize(x, observer_on, fake_quant_on, running_min, running_max, scale,
                                 zero_point, minval, c10::fromIntArrayRefSlow(block_size), dtype,
                                 quant_min, quant_max, method, averaging_constant, range_min,
                                 range_max, "fused_fake_quantize_cachemask");
  at::Tensor y =
      fused_fake_quantize(x, observer_on, fake_quant_on, running_min, running_max, scale,
                          zero_point, minval, block_size, dtype, quant_min, quant_max, symmetric,
                          use_minval, e8m0, method, averaging_constant, range_min, range_max);
  // The STE of a gradient of ones (with the qparams y used) is the mask itself.
  const auto mask =
      fused_fake_quantize_backward(at::ones_like(x), x, fake_quant_on, scale, zero_point, minval,
                                   dtype, quant_min, quant_max, use_minval)
          .ne(0);
  return {y, laid_out_as(x, mask)};
}

at::Tensor fake_quantize_mask_backward(const at::Tensor& grad, const at::Tensor& mask) {
  ops::check_fake_quantize_mask_backward(grad, mask);
  return laid_out_as(mask, grad * mask.to(grad.scalar_type()));
}

void fake_quantize_mask_backward_(const at::Tensor& grad, const at::Tensor& mask) {
  ops::check_fake_quantize_mask_backward(grad, mask, "fake_quantize_mask_backward_");
  grad.mul_(mask.to(grad.scalar_type()));
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CompositeExplicitAutograd, m) {
  COREAI_OPT_FUSED_OPS(COREAI_OPT_IMPL)
}

}  // namespace coreai_opt::reference
