// CPU kernels of the fake_quantize family: argument checks (shared with every device), value
// checks (CPU only), then one call into this machine's kernel table.
#include "cpu/fake_quantize.h"

#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "cpu/memory_order.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::cpu {

IntQParams IntQParams::of(const at::Tensor& scale, const std::optional<at::Tensor>& zero_point,
                          const std::optional<at::Tensor>& minval, int64_t quant_min,
                          int64_t quant_max, const char* op) {
  IntQParams q;
  q.scale_ = QParamBuffer::of(scale);
  check_scales_positive(q.scale_, scale.numel(), op);
  q.params_.scale = q.scale_.data();
  q.params_.qmin = static_cast<float>(quant_min);
  q.params_.qmax = static_cast<float>(quant_max);
  if (minval.has_value()) {
    q.float_offset_ = QParamBuffer::of(*minval);
    q.params_.float_offset = q.float_offset_.data();
    q.params_.quant_offset.constant = static_cast<float>(quant_min);
  } else if (zero_point.has_value()) {
    const auto& zp = *zero_point;
    if (zp.scalar_type() == at::kInt && zp.is_contiguous()) {
      q.params_.quant_offset.i32 = zp.const_data_ptr<int32_t>();
    } else {
      q.quant_offset_ = QParamBuffer::of(zp);
      q.params_.quant_offset.f32 = q.quant_offset_.data();
    }
  }
  return q;
}

IntQParams IntQParams::rounded(const at::Tensor& scale, QParamBuffer zero_point, int64_t quant_min,
                               int64_t quant_max, const char* op) {
  IntQParams q = of(scale, std::nullopt, std::nullopt, quant_min, quant_max, op);
  q.quant_offset_ = std::move(zero_point);
  q.params_.quant_offset.f32 = q.quant_offset_.data();
  return q;
}

FloatQParams FloatQParams::of(const at::Tensor& scale, formats::FloatFormat format,
                              const char* op) {
  FloatQParams q;
  q.scale_ = QParamBuffer::of(scale);
  check_scales_positive(q.scale_, scale.numel(), op);
  q.format_ = format;
  return q;
}

namespace {

at::Tensor fake_quantize_int(const at::Tensor& x, const at::Tensor& scale,
                             const std::optional<at::Tensor>& zero_point,
                             const std::optional<at::Tensor>& minval, int64_t quant_min,
                             int64_t quant_max) {
  const auto layout =
      *ops::check_fake_quantize_int(x, scale, zero_point, minval, quant_min, quant_max);
  const auto q =
      IntQParams::of(scale, zero_point, minval, quant_min, quant_max, "fake_quantize_int");
  OrderedCall call(x, ops::qparam_sizes(x, scale), layout);  // y has x's layout (memory_order.h)
  if (x.numel() > 0) kernels().fake_quantize_int(call.x(), call.out(), call.layout(), q.params());
  return call.finish();
}

at::Tensor fake_quantize_int_backward(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& scale,
                                      const std::optional<at::Tensor>& zero_point,
                                      const std::optional<at::Tensor>& minval, int64_t quant_min,
                                      int64_t quant_max) {
  const auto layout = *ops::check_fake_quantize_int_backward(grad, x, scale, zero_point, minval,
                                                             quant_min, quant_max);
  const auto q =
      IntQParams::of(scale, zero_point, minval, quant_min, quant_max, "fake_quantize_int_backward");
  OrderedCall call(x, ops::qparam_sizes(x, scale), layout);
  if (x.numel() > 0) {
    kernels().fake_quantize_int_backward(call.input(grad), call.x(), call.out(), call.layout(),
                                         q.params());
  }
  return call.finish();
}

at::Tensor fake_quantize_float(const at::Tensor& x, const at::Tensor& scale,
                               c10::ScalarType dtype) {
  const auto checked = ops::check_fake_quantize_float(x, scale, dtype);
  const auto q = FloatQParams::of(scale, checked.format.float_format, "fake_quantize_float");
  OrderedCall call(x, ops::qparam_sizes(x, scale), *checked.layout);
  if (x.numel() > 0) {
    kernels().fake_quantize_float(call.x(), call.out(), call.layout(), q.params());
  }
  return call.finish();
}

at::Tensor fake_quantize_float_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& scale, c10::ScalarType dtype) {
  const auto checked = ops::check_fake_quantize_float_backward(grad, x, scale, dtype);
  const auto q =
      FloatQParams::of(scale, checked.format.float_format, "fake_quantize_float_backward");
  OrderedCall call(x, ops::qparam_sizes(x, scale), *checked.layout);
  if (x.numel() > 0) {
    kernels().fake_quantize_float_backward(call.input(grad), call.x(), call.out(), call.layout(),
                                           q.params());
  }
  return call.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CPU, m) { COREAI_OPT_FAKE_QUANTIZE_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::cpu
