// CPU kernels of the fused family: observe + qparams + fake-quantize in one call, the state
// written in place, and its straight-through backward.
#include <torch/library.h>

#include "cpu/fake_quantize.h"
#include "cpu/observe.h"
#include "cpu/qparams.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::cpu {

namespace {

at::Tensor fused_fake_quantize(const at::Tensor& x, const at::Tensor& observer_on,
                               const at::Tensor& fake_quant_on, const at::Tensor& running_min,
                               const at::Tensor& running_max, const at::Tensor& scale,
                               const at::Tensor& zero_point, const at::Tensor& minval,
                               at::IntArrayRef block_size, c10::ScalarType dtype, int64_t quant_min,
                               int64_t quant_max, bool symmetric, bool use_minval, bool e8m0,
                               c10::string_view method, double averaging_constant,
                               std::optional<double> range_min, std::optional<double> range_max) {
  const char* op = "fused_fake_quantize";
  const auto checked = ops::check_fused_fake_quantize(
      x, observer_on, fake_quant_on, running_min, running_max, scale, zero_point, minval,
      c10::fromIntArrayRefSlow(block_size), dtype, quant_min, quant_max, method, averaging_constant,
      range_min, range_max);
  const auto& fmt = checked.format;
  const auto layout = formats::make_qparam_layout(x.sizes().vec(), *checked.q_sizes);
  // One contiguous view for both passes (a non-contiguous input is copied once, not twice).
  const auto xc = x.contiguous();
  const int64_t qn = scale.numel();

  if (read_switch(observer_on)) {
    float* rmin = running_min.mutable_data_ptr<float>();
    float* rmax = running_max.mutable_data_ptr<float>();
    if (!(range_min.has_value() && range_max.has_value())) {
      fold_range(batch_minmax(xc, layout), rmin, rmax, checked.method, averaging_constant);
    }
    if (fmt.is_float) {
      float_qparams_into(rmin, rmax, qn, formats::float_format_info(fmt.float_format), e8m0,
                         range_min, range_max, scale.mutable_data_ptr<float>());
    } else {
      int_qparams_into(rmin, rmax, qn, quant_min, quant_max, symmetric, range_min, range_max,
                       scale.mutable_data_ptr<float>(), zero_point.mutable_data_ptr<int32_t>(),
                       minval.mutable_data_ptr<float>());
    }
  }
  if (!read_switch(fake_quant_on)) {
    return xc.is_same(x) ? x.clone(at::MemoryFormat::Contiguous) : xc;
  }
  if (fmt.is_float) {
    return run_fake_quantize_float(xc, layout,
                                   FloatQParams::of(scale, fmt.float_format, op).params());
  }
  const auto q = use_minval
                     ? IntQParams::of(scale, std::nullopt, minval, quant_min, quant_max, op)
                     : IntQParams::of(scale, zero_point, std::nullopt, quant_min, quant_max, op);
  return run_fake_quantize_int(xc, layout, q.params());
}

at::Tensor fused_fake_quantize_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& fake_quant_on, const at::Tensor& scale,
                                        const at::Tensor& zero_point, const at::Tensor& minval,
                                        c10::ScalarType dtype, int64_t quant_min, int64_t quant_max,
                                        bool use_minval) {
  const char* op = "fused_fake_quantize_backward";
  const auto checked = ops::check_fused_fake_quantize_backward(
      grad, x, fake_quant_on, scale, zero_point, minval, dtype, quant_min, quant_max, use_minval);
  const auto& fmt = checked.format;
  if (!read_switch(fake_quant_on)) {
    return grad.to(x.scalar_type()).clone(at::MemoryFormat::Contiguous);
  }
  const auto xc = x.contiguous();
  const auto& layout = *checked.layout;
  if (fmt.is_float) {
    return run_fake_quantize_float_backward(grad, xc, layout,
                                            FloatQParams::of(scale, fmt.float_format, op).params());
  }
  const auto q = use_minval
                     ? IntQParams::of(scale, std::nullopt, minval, quant_min, quant_max, op)
                     : IntQParams::of(scale, zero_point, std::nullopt, quant_min, quant_max, op);
  return run_fake_quantize_int_backward(grad, xc, layout, q.params());
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CPU, m) { COREAI_OPT_FUSED_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::cpu
