// CPU implementations of every coreai_opt op: argument checks (shared with the other
// devices), value checks (CPU only), then one call into this machine's kernel table.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <optional>

#include "cpu/kernels/kernels.h"
#include "cpu/qparam_buffer.h"
#include "formats/e8m0.h"
#include "formats/int_range.h"
#include "formats/qparams.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::cpu {

namespace {

using ops::check_float_input;
using ops::check_int_range;
using ops::check_qparam_shape;
using ops::check_same_shape;

// The generic integer offsets of a zp- or minval-form call: o (quant offset) as a view
// over the user's tensor or a constant, f (float offset) only for the minval form.
struct IntOffsets {
  QParamBuffer keep_quant;  // converted zero points, when they are neither float32 nor int32
  QParamBuffer float_offset;
  OffsetView quant_offset;
};

IntOffsets int_offsets(const at::Tensor& scale, const std::optional<at::Tensor>& zero_point,
                       const std::optional<at::Tensor>& minval, int64_t quant_min, const char* op) {
  TORCH_CHECK_VALUE(!(zero_point.has_value() && minval.has_value()), "coreai_opt.", op,
                    ": pass zero_point (zp formulation) or minval (minval formulation), "
                    "not both");
  IntOffsets out;
  if (minval.has_value()) {
    check_same_shape(scale, *minval, op, "scale", "minval");
    out.float_offset = QParamBuffer::of(*minval);
    out.quant_offset.constant = static_cast<float>(quant_min);
    return out;
  }
  if (zero_point.has_value()) {
    check_same_shape(scale, *zero_point, op, "scale", "zero_point");
    const auto& zp = *zero_point;
    if (zp.scalar_type() == at::kInt && zp.is_contiguous()) {
      out.quant_offset.i32 = zp.const_data_ptr<int32_t>();
    } else {
      out.keep_quant = QParamBuffer::of(zp);
      out.quant_offset.f32 = out.keep_quant.data();
    }
  }
  return out;
}

at::Tensor contiguous_out(const at::Tensor& x) {
  return at::empty_like(x, at::MemoryFormat::Contiguous);
}

// ---- fake_quantize_int ----------------------------------------------------------------

at::Tensor fake_quantize_int(const at::Tensor& x, const at::Tensor& scale,
                             const std::optional<at::Tensor>& zero_point,
                             const std::optional<at::Tensor>& minval, int64_t quant_min,
                             int64_t quant_max) {
  const char* op = "fake_quantize_int";
  check_float_input(x, op);
  check_float_input(scale, op, "scale");
  check_int_range(quant_min, quant_max, op);
  const auto layout = check_qparam_shape(x, scale, op, "scale");
  const auto s = QParamBuffer::of(scale);
  check_scales_positive(s, scale.numel(), op);
  const auto off = int_offsets(scale, zero_point, minval, quant_min, op);
  const auto xc = x.contiguous();
  auto y = contiguous_out(xc);
  if (x.numel() == 0) return y;
  kernels().fake_quantize_int(
      xc, y, layout,
      IntParams{s.data(), off.quant_offset, off.float_offset.data(), static_cast<float>(quant_min),
                static_cast<float>(quant_max)});
  return y;
}

at::Tensor fake_quantize_int_backward(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& scale,
                                      const std::optional<at::Tensor>& zero_point,
                                      const std::optional<at::Tensor>& minval, int64_t quant_min,
                                      int64_t quant_max) {
  const char* op = "fake_quantize_int_backward";
  check_float_input(x, op);
  check_float_input(scale, op, "scale");
  check_same_shape(x, grad, op, "x", "grad");
  check_int_range(quant_min, quant_max, op);
  const auto layout = check_qparam_shape(x, scale, op, "scale");
  const auto s = QParamBuffer::of(scale);
  check_scales_positive(s, scale.numel(), op);
  const auto off = int_offsets(scale, zero_point, minval, quant_min, op);
  const auto xc = x.contiguous();
  const auto gc = grad.to(x.scalar_type()).contiguous();
  auto gx = contiguous_out(xc);
  if (x.numel() == 0) return gx;
  kernels().fake_quantize_int_backward(
      gc, xc, gx, layout,
      IntParams{s.data(), off.quant_offset, off.float_offset.data(), static_cast<float>(quant_min),
                static_cast<float>(quant_max)});
  return gx;
}

// ---- fake_quantize_float --------------------------------------------------------------

void check_float_scale_dtype(const at::Tensor& scale, const char* op) {
  const auto st = scale.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 ||
                       st == at::kDouble || st == at::kFloat8_e8m0fnu,
                   "coreai_opt.", op, ": scale has dtype ", ops::dtype_name(st),
                   "; allowed: torch.float32, torch.float16, torch.bfloat16, torch.float64, "
                   "torch.float8_e8m0fnu");
}

at::Tensor fake_quantize_float(const at::Tensor& x, const at::Tensor& scale,
                               c10::ScalarType dtype) {
  const char* op = "fake_quantize_float";
  check_float_input(x, op);
  check_float_scale_dtype(scale, op);
  const auto fmt = ops::float_format_of(dtype, op);
  const auto layout = check_qparam_shape(x, scale, op, "scale");
  const auto s = QParamBuffer::of(scale);
  check_scales_positive(s, scale.numel(), op);
  const auto xc = x.contiguous();
  auto y = contiguous_out(xc);
  if (x.numel() == 0) return y;
  kernels().fake_quantize_float(xc, y, layout, FloatParams{s.data(), fmt.float_format});
  return y;
}

at::Tensor fake_quantize_float_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& scale, c10::ScalarType dtype) {
  const char* op = "fake_quantize_float_backward";
  check_float_input(x, op);
  check_float_scale_dtype(scale, op);
  check_same_shape(x, grad, op, "x", "grad");
  const auto fmt = ops::float_format_of(dtype, op);
  const auto layout = check_qparam_shape(x, scale, op, "scale");
  const auto s = QParamBuffer::of(scale);
  check_scales_positive(s, scale.numel(), op);
  const auto xc = x.contiguous();
  const auto gc = grad.to(x.scalar_type()).contiguous();
  auto gx = contiguous_out(xc);
  if (x.numel() == 0) return gx;
  kernels().fake_quantize_float_backward(gc, xc, gx, layout,
                                         FloatParams{s.data(), fmt.float_format});
  return gx;
}

// ---- LSQ ------------------------------------------------------------------------------

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
  const char* op = "fake_quantize_lsq";
  check_float_input(x, op);
  check_float_input(scale, op, "scale");
  check_float_input(zero_point, op, "zero_point");
  check_int_range(quant_min, quant_max, op);
  const auto layout = check_qparam_shape(x, scale, op, "scale");
  check_same_shape(scale, zero_point, op, "scale", "zero_point");
  const auto s = QParamBuffer::of(scale);
  check_scales_positive(s, scale.numel(), op);
  const auto zp = rounded_zero_point(zero_point, quant_min, quant_max);
  const auto xc = x.contiguous();
  auto y = contiguous_out(xc);
  if (x.numel() == 0) return y;
  kernels().fake_quantize_int(
      xc, y, layout,
      IntParams{s.data(), OffsetView{zp.data()}, nullptr, static_cast<float>(quant_min),
                static_cast<float>(quant_max)});
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quantize_lsq_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max, double grad_factor) {
  const char* op = "fake_quantize_lsq_backward";
  check_float_input(x, op);
  check_float_input(scale, op, "scale");
  check_float_input(zero_point, op, "zero_point");
  check_same_shape(x, grad, op, "x", "grad");
  check_int_range(quant_min, quant_max, op);
  const auto layout = check_qparam_shape(x, scale, op, "scale");
  check_same_shape(scale, zero_point, op, "scale", "zero_point");
  const auto s = QParamBuffer::of(scale);
  check_scales_positive(s, scale.numel(), op);
  const auto zp = rounded_zero_point(zero_point, quant_min, quant_max);
  const auto xc = x.contiguous();
  const auto gc = grad.to(x.scalar_type()).contiguous();
  auto gx = contiguous_out(xc);
  auto ds = at::zeros(scale.sizes(), scale.options().dtype(at::kDouble));
  auto dz = at::zeros(zero_point.sizes(), zero_point.options().dtype(at::kDouble));
  if (x.numel() > 0) {
    kernels().lsq_backward(gc, xc, gx, layout,
                           IntParams{s.data(), OffsetView{zp.data()}, nullptr,
                                     static_cast<float>(quant_min), static_cast<float>(quant_max)},
                           ds.mutable_data_ptr<double>(), dz.mutable_data_ptr<double>());
  }
  ds.mul_(grad_factor);
  dz.mul_(grad_factor);
  return {gx, ds.to(scale.scalar_type()), dz.to(zero_point.scalar_type())};
}

// ---- observation ----------------------------------------------------------------------

struct BatchRange {
  std::vector<float> lo, hi;
};

BatchRange batch_minmax(const at::Tensor& x, const std::vector<int64_t>& q_sizes) {
  const auto layout = formats::make_qparam_layout(x.sizes().vec(), q_sizes);
  BatchRange r;
  r.lo.resize(layout.qnumel);
  r.hi.resize(layout.qnumel);
  if (layout.qnumel > 0 && x.numel() > 0) {
    kernels().minmax(x.contiguous(), layout, r.lo.data(), r.hi.data());
  }
  return r;
}

std::tuple<at::Tensor, at::Tensor> minmax(const at::Tensor& x, at::IntArrayRef block_size) {
  const char* op = "minmax";
  check_float_input(x, op);
  const auto q_sizes = ops::check_block_size(x, block_size, op);
  auto r = batch_minmax(x, q_sizes);
  auto lo = at::empty(q_sizes, x.options().dtype(at::kFloat));
  auto hi = at::empty(q_sizes, x.options().dtype(at::kFloat));
  std::copy(r.lo.begin(), r.lo.end(), lo.mutable_data_ptr<float>());
  std::copy(r.hi.begin(), r.hi.end(), hi.mutable_data_ptr<float>());
  return {lo.to(x.scalar_type()), hi.to(x.scalar_type())};
}

void check_state(const at::Tensor& t, const std::vector<int64_t>& q_sizes, at::ScalarType st,
                 const char* op, const char* arg) {
  TORCH_CHECK_TYPE(t.scalar_type() == st, "coreai_opt.", op, ": ", arg, " has dtype ",
                   ops::dtype_name(t.scalar_type()), "; it must be ", ops::dtype_name(st));
  TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(q_sizes), "coreai_opt.", op, ": ", arg,
                    " has shape ", t.sizes(), " but the block sizes give ",
                    at::IntArrayRef(q_sizes));
  TORCH_CHECK_VALUE(t.is_contiguous(), "coreai_opt.", op, ": ", arg, " must be contiguous");
}

// Folds this batch's range into the running range.
void fold_range(const BatchRange& b, float* rmin, float* rmax, ops::RangeMethod method,
                double averaging_constant) {
  const float inf = std::numeric_limits<float>::infinity();
  const float c = static_cast<float>(averaging_constant);
  for (size_t i = 0; i < b.lo.size(); ++i) {
    switch (method) {
      case ops::RangeMethod::Static:
        rmin[i] = b.lo[i];
        rmax[i] = b.hi[i];
        break;
      case ops::RangeMethod::MovingAverage:
        rmin[i] = rmin[i] == inf ? b.lo[i] : c * b.lo[i] + (1.0f - c) * rmin[i];
        rmax[i] = rmax[i] == -inf ? b.hi[i] : c * b.hi[i] + (1.0f - c) * rmax[i];
        break;
      case ops::RangeMethod::GlobalMinMax: {
        const float lo = b.lo[i], hi = b.hi[i];
        rmin[i] = (lo < rmin[i] || lo != lo) ? lo : rmin[i];
        rmax[i] = (hi > rmax[i] || hi != hi) ? hi : rmax[i];
        break;
      }
    }
  }
}

void update_range(const at::Tensor& x, const at::Tensor& running_min, const at::Tensor& running_max,
                  at::IntArrayRef block_size, c10::string_view method, double averaging_constant) {
  const char* op = "update_range";
  check_float_input(x, op);
  const auto q_sizes = ops::check_block_size(x, block_size, op);
  const auto m = ops::range_method_of(method, op);
  check_state(running_min, q_sizes, at::kFloat, op, "running_min");
  check_state(running_max, q_sizes, at::kFloat, op, "running_max");
  const auto b = batch_minmax(x, q_sizes);
  fold_range(b, running_min.mutable_data_ptr<float>(), running_max.mutable_data_ptr<float>(), m,
             averaging_constant);
}

// Ends of the range used for qparams: float_range when given, else widened to include 0.
inline float range_lo(float v, const std::optional<double>& fixed) {
  return fixed.has_value() ? static_cast<float>(*fixed) : formats::widen_lo(v);
}
inline float range_hi(float v, const std::optional<double>& fixed) {
  return fixed.has_value() ? static_cast<float>(*fixed) : formats::widen_hi(v);
}

void int_qparams_into(const float* lo, const float* hi, int64_t n, int64_t quant_min,
                      int64_t quant_max, bool symmetric, const std::optional<double>& range_min,
                      const std::optional<double>& range_max, float* scale, int32_t* zp,
                      float* minval) {
  for (int64_t i = 0; i < n; ++i) {
    const auto p = formats::int_qparams(range_lo(lo[i], range_min), range_hi(hi[i], range_max),
                                        static_cast<int32_t>(quant_min),
                                        static_cast<int32_t>(quant_max), symmetric);
    scale[i] = p.scale;
    zp[i] = p.zero_point;
    minval[i] = p.minval;
  }
}

void float_qparams_into(const float* lo, const float* hi, int64_t n,
                        const formats::FloatFormatInfo& info, bool e8m0,
                        const std::optional<double>& range_min,
                        const std::optional<double>& range_max, float* scale) {
  for (int64_t i = 0; i < n; ++i) {
    const float max_abs =
        formats::max_abs_of(range_lo(lo[i], range_min), range_hi(hi[i], range_max));
    scale[i] = e8m0 ? formats::e8m0_scale(max_abs, info.max_pow2)
                    : formats::clamp_eps_nan(max_abs / info.max_value);
  }
}

void check_min_max(const at::Tensor& min, const at::Tensor& max, const char* op) {
  check_float_input(min, op, "min");
  check_float_input(max, op, "max");
  check_same_shape(min, max, op, "min", "max");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> choose_qparams_int(
    const at::Tensor& min, const at::Tensor& max, int64_t quant_min, int64_t quant_max,
    bool symmetric, std::optional<double> range_min, std::optional<double> range_max) {
  const char* op = "choose_qparams_int";
  check_min_max(min, max, op);
  check_int_range(quant_min, quant_max, op);
  ops::check_float_range(range_min, range_max, op);
  const auto lo = QParamBuffer::of(min);
  const auto hi = QParamBuffer::of(max);
  auto f32 = min.options().dtype(at::kFloat);
  auto scale = at::empty(min.sizes(), f32);
  auto zp = at::empty(min.sizes(), min.options().dtype(at::kInt));
  auto minval = at::empty(min.sizes(), f32);
  int_qparams_into(lo.data(), hi.data(), min.numel(), quant_min, quant_max, symmetric, range_min,
                   range_max, scale.mutable_data_ptr<float>(), zp.mutable_data_ptr<int32_t>(),
                   minval.mutable_data_ptr<float>());
  return {scale.to(min.scalar_type()), zp, minval.to(min.scalar_type())};
}

at::Tensor choose_qparams_float(const at::Tensor& min, const at::Tensor& max, c10::ScalarType dtype,
                                bool e8m0, std::optional<double> range_min,
                                std::optional<double> range_max) {
  const char* op = "choose_qparams_float";
  check_min_max(min, max, op);
  ops::check_float_range(range_min, range_max, op);
  const auto fmt = ops::float_format_of(dtype, op);
  const auto lo = QParamBuffer::of(min);
  const auto hi = QParamBuffer::of(max);
  auto scale = at::empty(min.sizes(), min.options().dtype(at::kFloat));
  float_qparams_into(lo.data(), hi.data(), min.numel(),
                     formats::float_format_info(fmt.float_format), e8m0, range_min, range_max,
                     scale.mutable_data_ptr<float>());
  return e8m0 ? scale : scale.to(min.scalar_type());
}

// ---- fused ----------------------------------------------------------------------------

at::Tensor fused_fake_quantize(const at::Tensor& x, const at::Tensor& observer_on,
                               const at::Tensor& fake_quant_on, const at::Tensor& running_min,
                               const at::Tensor& running_max, const at::Tensor& scale,
                               const at::Tensor& zero_point, const at::Tensor& minval,
                               at::IntArrayRef block_size, c10::ScalarType dtype, int64_t quant_min,
                               int64_t quant_max, bool symmetric, bool use_minval, bool e8m0,
                               c10::string_view method, double averaging_constant,
                               std::optional<double> range_min, std::optional<double> range_max) {
  const char* op = "fused_fake_quantize";
  const auto [fmt, m] =
      ops::check_fused_args(x, dtype, quant_min, quant_max, range_min, range_max, method, op);
  const auto q_sizes = ops::check_block_size(x, block_size, op);
  check_state(running_min, q_sizes, at::kFloat, op, "running_min");
  check_state(running_max, q_sizes, at::kFloat, op, "running_max");
  check_state(scale, q_sizes, at::kFloat, op, "scale");
  check_state(zero_point, q_sizes, at::kInt, op, "zero_point");
  check_state(minval, q_sizes, at::kFloat, op, "minval");
  // One contiguous view for both passes (a non-contiguous input is copied once, not twice).
  const auto xc = x.contiguous();
  const bool observe = read_switch(observer_on, op, "observer_on");
  const bool quantize = read_switch(fake_quant_on, op, "fake_quant_on");
  const int64_t qn = scale.numel();

  if (observe) {
    float* rmin = running_min.mutable_data_ptr<float>();
    float* rmax = running_max.mutable_data_ptr<float>();
    if (!(range_min.has_value() && range_max.has_value())) {
      fold_range(batch_minmax(xc, q_sizes), rmin, rmax, m, averaging_constant);
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
  if (!quantize) return xc.is_same(x) ? x.clone(at::MemoryFormat::Contiguous) : xc;
  if (fmt.is_float) return fake_quantize_float(xc, scale, dtype);
  if (use_minval) return fake_quantize_int(xc, scale, std::nullopt, minval, quant_min, quant_max);
  return fake_quantize_int(xc, scale, zero_point, std::nullopt, quant_min, quant_max);
}

at::Tensor fused_fake_quantize_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& fake_quant_on, const at::Tensor& scale,
                                        const at::Tensor& zero_point, const at::Tensor& minval,
                                        c10::ScalarType dtype, int64_t quant_min, int64_t quant_max,
                                        bool use_minval) {
  const char* op = "fused_fake_quantize_backward";
  const auto fmt = ops::quant_format_of(dtype, op);
  if (!read_switch(fake_quant_on, op, "fake_quant_on")) {
    check_same_shape(x, grad, op, "x", "grad");
    return grad.to(x.scalar_type()).clone(at::MemoryFormat::Contiguous);
  }
  if (fmt.is_float) return fake_quantize_float_backward(grad, x, scale, dtype);
  if (use_minval) {
    return fake_quantize_int_backward(grad, x, scale, std::nullopt, minval, quant_min, quant_max);
  }
  return fake_quantize_int_backward(grad, x, scale, zero_point, std::nullopt, quant_min, quant_max);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CPU, m) { COREAI_OPT_NUMERIC_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::cpu
