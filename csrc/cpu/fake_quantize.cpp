// CPU kernels of the fake_quantize family: argument checks (shared with every device), value
// checks (CPU only), then one call into this machine's kernel table.
#include "cpu/fake_quantize.h"

#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

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

at::Tensor contiguous_out(const at::Tensor& x) {
  return at::empty_like(x, at::MemoryFormat::Contiguous);
}

}  // namespace

at::Tensor run_fake_quantize_int(const at::Tensor& xc, const QParamLayout& layout,
                                 const IntParams& p) {
  auto y = contiguous_out(xc);
  if (xc.numel() > 0) kernels().fake_quantize_int(xc, y, layout, p);
  return y;
}

at::Tensor run_fake_quantize_float(const at::Tensor& xc, const QParamLayout& layout,
                                   const FloatParams& p) {
  auto y = contiguous_out(xc);
  if (xc.numel() > 0) kernels().fake_quantize_float(xc, y, layout, p);
  return y;
}

at::Tensor run_fake_quantize_int_backward(const at::Tensor& grad, const at::Tensor& xc,
                                          const QParamLayout& layout, const IntParams& p) {
  auto gx = contiguous_out(xc);
  if (xc.numel() == 0) return gx;
  kernels().fake_quantize_int_backward(grad.to(xc.scalar_type()).contiguous(), xc, gx, layout, p);
  return gx;
}

at::Tensor run_fake_quantize_float_backward(const at::Tensor& grad, const at::Tensor& xc,
                                            const QParamLayout& layout, const FloatParams& p) {
  auto gx = contiguous_out(xc);
  if (xc.numel() == 0) return gx;
  kernels().fake_quantize_float_backward(grad.to(xc.scalar_type()).contiguous(), xc, gx, layout, p);
  return gx;
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
  return run_fake_quantize_int(x.contiguous(), layout, q.params());
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
  return run_fake_quantize_int_backward(grad, x.contiguous(), layout, q.params());
}

at::Tensor fake_quantize_float(const at::Tensor& x, const at::Tensor& scale,
                               c10::ScalarType dtype) {
  const auto checked = ops::check_fake_quantize_float(x, scale, dtype);
  const auto q = FloatQParams::of(scale, checked.format.float_format, "fake_quantize_float");
  return run_fake_quantize_float(x.contiguous(), *checked.layout, q.params());
}

at::Tensor fake_quantize_float_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& scale, c10::ScalarType dtype) {
  const auto checked = ops::check_fake_quantize_float_backward(grad, x, scale, dtype);
  const auto q =
      FloatQParams::of(scale, checked.format.float_format, "fake_quantize_float_backward");
  return run_fake_quantize_float_backward(grad, x.contiguous(), *checked.layout, q.params());
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CPU, m) { COREAI_OPT_FAKE_QUANTIZE_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::cpu
