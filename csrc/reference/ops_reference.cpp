// CompositeExplicitAutograd references: every op in plain ATen tensor ops, with the same
// float32 operation order as the CPU kernels. This is the correct path for every device
// without a dedicated kernel (CUDA until its kernels land, MPS, XPU, ...). No value checks
// and no host syncs: switches are applied with torch.where.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <optional>

#include "formats/bits.h"
#include "formats/float_format.h"
#include "formats/int_range.h"
#include "formats/qparams.h"
#include "ops/checks.h"
#include "ops/pack_shape.h"
#include "ops/schemas.h"

namespace coreai_opt::reference {

namespace {

using ops::check_float_input;
using ops::check_int_range;

// x and a qparam tensor viewed so they broadcast: a blocked dimension d of x becomes
// (q_d, block) and the qparam gets (q_d, 1).
struct Blocked {
  std::vector<int64_t> x_shape;
  std::vector<int64_t> q_shape;
  std::vector<int64_t> reduce_dims;  // dims of the blocked view a qparam is shared along
};

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

struct Prepared {
  at::Tensor x;  // float32, blocked view
  Blocked view;
  c10::IntArrayRef out_sizes;
  at::ScalarType out_dtype;
};

Prepared prepare(const at::Tensor& x, const at::Tensor& scale, const char* op) {
  ops::check_qparam_shape(x, scale, op, "scale");
  Prepared p;
  p.view = blocked_view(x.sizes(), ops::qparam_sizes(x, scale));
  p.x = x.to(at::kFloat).reshape(p.view.x_shape);
  p.out_sizes = x.sizes();
  p.out_dtype = x.scalar_type();
  return p;
}

at::Tensor q32(const at::Tensor& q, const Blocked& v) {
  return q.to(at::kFloat).reshape(v.q_shape);
}

at::Tensor finish(const at::Tensor& y, const Prepared& p) {
  return y.reshape(p.out_sizes).to(p.out_dtype).contiguous();
}

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

std::pair<at::Tensor, at::Tensor> int_offsets(const at::Tensor& scale,
                                              const std::optional<at::Tensor>& zero_point,
                                              const std::optional<at::Tensor>& minval,
                                              int64_t quant_min, const Blocked& v, const char* op) {
  TORCH_CHECK_VALUE(!(zero_point.has_value() && minval.has_value()), "coreai_opt.", op,
                    ": pass zero_point (zp formulation) or minval (minval formulation), "
                    "not both");
  const auto zeros = at::zeros(v.q_shape, scale.options().dtype(at::kFloat));
  if (minval.has_value()) {
    ops::check_same_shape(scale, *minval, op, "scale", "minval");
    return {at::full(v.q_shape, static_cast<double>(quant_min), zeros.options()), q32(*minval, v)};
  }
  if (zero_point.has_value()) {
    ops::check_same_shape(scale, *zero_point, op, "scale", "zero_point");
    return {q32(*zero_point, v), zeros};
  }
  return {zeros, zeros};
}

at::Tensor fake_quantize_int(const at::Tensor& x, const at::Tensor& scale,
                             const std::optional<at::Tensor>& zero_point,
                             const std::optional<at::Tensor>& minval, int64_t quant_min,
                             int64_t quant_max) {
  const char* op = "fake_quantize_int";
  check_float_input(x, op);
  check_float_input(scale, op, "scale");
  check_int_range(quant_min, quant_max, op);
  const auto p = prepare(x, scale, op);
  const auto [o, f] = int_offsets(scale, zero_point, minval, quant_min, p.view, op);
  return finish(int_fq(p.x, q32(scale, p.view), o, f, quant_min, quant_max), p);
}

at::Tensor fake_quantize_int_backward(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& scale,
                                      const std::optional<at::Tensor>& zero_point,
                                      const std::optional<at::Tensor>& minval, int64_t quant_min,
                                      int64_t quant_max) {
  const char* op = "fake_quantize_int_backward";
  check_float_input(x, op);
  check_int_range(quant_min, quant_max, op);
  ops::check_same_shape(x, grad, op, "x", "grad");
  const auto p = prepare(x, scale, op);
  const auto [o, f] = int_offsets(scale, zero_point, minval, quant_min, p.view, op);
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

at::Tensor float_fq(const at::Tensor& x, const at::Tensor& s,
                    const formats::FloatFormatInfo& info) {
  const auto v = at::clamp(x / s, -info.max_value, info.max_value);
  return float_grid_round(v, info) * s;
}

at::Tensor fake_quantize_float(const at::Tensor& x, const at::Tensor& scale,
                               c10::ScalarType dtype) {
  const char* op = "fake_quantize_float";
  check_float_input(x, op);
  const auto fmt = ops::float_format_of(dtype, op);
  const auto p = prepare(x, scale, op);
  return finish(float_fq(p.x, q32(scale, p.view), formats::float_format_info(fmt.float_format)), p);
}

at::Tensor fake_quantize_float_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& scale, c10::ScalarType dtype) {
  const char* op = "fake_quantize_float_backward";
  check_float_input(x, op);
  ops::check_same_shape(x, grad, op, "x", "grad");
  const auto fmt = ops::float_format_of(dtype, op);
  const float mx = formats::float_format_info(fmt.float_format).max_value;
  const auto p = prepare(x, scale, op);
  const auto r = p.x / q32(scale, p.view);
  const auto g = grad.to(at::kFloat).reshape(p.view.x_shape);
  return finish(g * at::logical_and(r >= -mx, r <= mx).to(at::kFloat), p);
}

// ---- LSQ ------------------------------------------------------------------------------

at::Tensor rounded_zp(const at::Tensor& zero_point, const Blocked& v, int64_t qmin, int64_t qmax) {
  return at::round(at::clamp(q32(zero_point, v), qmin, qmax));
}

at::Tensor fake_quantize_lsq(const at::Tensor& x, const at::Tensor& scale,
                             const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max,
                             double /*grad_factor*/) {
  const char* op = "fake_quantize_lsq";
  check_float_input(x, op);
  check_float_input(zero_point, op, "zero_point");
  check_int_range(quant_min, quant_max, op);
  ops::check_same_shape(scale, zero_point, op, "scale", "zero_point");
  const auto p = prepare(x, scale, op);
  const auto zp = rounded_zp(zero_point, p.view, quant_min, quant_max);
  return finish(int_fq(p.x, q32(scale, p.view), zp, at::zeros_like(zp), quant_min, quant_max), p);
}

at::Tensor sum_to_qparam(const at::Tensor& t, const Blocked& v, const at::Tensor& like) {
  const auto summed = v.reduce_dims.empty() ? t : t.sum(v.reduce_dims, /*keepdim=*/true);
  return summed.reshape(like.sizes()).to(like.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quantize_lsq_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max, double grad_factor) {
  const char* op = "fake_quantize_lsq_backward";
  check_float_input(x, op);
  check_float_input(zero_point, op, "zero_point");
  check_int_range(quant_min, quant_max, op);
  ops::check_same_shape(x, grad, op, "x", "grad");
  ops::check_same_shape(scale, zero_point, op, "scale", "zero_point");
  const auto p = prepare(x, scale, op);
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

// ---- observation ----------------------------------------------------------------------

std::pair<at::Tensor, at::Tensor> batch_range(const at::Tensor& x,
                                              const std::vector<int64_t>& q_sizes) {
  const auto v = blocked_view(x.sizes(), q_sizes);
  const auto xf = x.to(at::kFloat).reshape(v.x_shape);
  if (v.reduce_dims.empty()) return {xf.reshape(q_sizes).clone(), xf.reshape(q_sizes).clone()};
  return {at::amin(xf, v.reduce_dims, true).reshape(q_sizes),
          at::amax(xf, v.reduce_dims, true).reshape(q_sizes)};
}

std::tuple<at::Tensor, at::Tensor> minmax(const at::Tensor& x, at::IntArrayRef block_size) {
  check_float_input(x, "minmax");
  const auto q = ops::check_block_size(x, block_size, "minmax");
  auto [lo, hi] = batch_range(x, q);
  return {lo.to(x.scalar_type()), hi.to(x.scalar_type())};
}

std::pair<at::Tensor, at::Tensor> folded_range(const at::Tensor& lo, const at::Tensor& hi,
                                               const at::Tensor& rmin, const at::Tensor& rmax,
                                               ops::RangeMethod method, double c64) {
  const float c = static_cast<float>(c64);
  const double one_minus_c = 1.0f - c;
  const double inf = std::numeric_limits<double>::infinity();
  switch (method) {
    case ops::RangeMethod::Static:
      return {lo, hi};
    case ops::RangeMethod::MovingAverage:
      return {at::where(rmin == inf, lo, lo * static_cast<double>(c) + rmin * one_minus_c),
              at::where(rmax == -inf, hi, hi * static_cast<double>(c) + rmax * one_minus_c)};
    case ops::RangeMethod::GlobalMinMax:
    default:
      return {at::minimum(lo, rmin), at::maximum(hi, rmax)};
  }
}

void update_range(const at::Tensor& x, const at::Tensor& running_min, const at::Tensor& running_max,
                  at::IntArrayRef block_size, c10::string_view method, double averaging_constant) {
  const char* op = "update_range";
  check_float_input(x, op);
  const auto q = ops::check_block_size(x, block_size, op);
  const auto m = ops::range_method_of(method, op);
  const auto [lo, hi] = batch_range(x, q);
  auto [nmin, nmax] = folded_range(lo, hi, running_min, running_max, m, averaging_constant);
  running_min.copy_(nmin);
  running_max.copy_(nmax);
}

at::Tensor range_end(const at::Tensor& v, const std::optional<double>& fixed, bool low) {
  if (fixed.has_value()) return at::full_like(v, *fixed);
  return low ? at::clamp_max(v, 0.0) : at::clamp_min(v, 0.0);
}

// (scale, zero_point int32, minval), all float32 except zero_point.
std::tuple<at::Tensor, at::Tensor, at::Tensor> int_qparams(const at::Tensor& min32,
                                                           const at::Tensor& max32, int64_t qmin,
                                                           int64_t qmax, bool symmetric,
                                                           const std::optional<double>& rmin,
                                                           const std::optional<double>& rmax) {
  const auto lo = range_end(min32, rmin, true);
  const auto hi = range_end(max32, rmax, false);
  const double eps = formats::kFloat32Eps;
  if (symmetric) {
    const auto max_abs = at::maximum(-lo, hi);
    const double half = static_cast<float>(qmax - qmin) / 2.0f;
    const auto scale = at::clamp_min(max_abs / half, eps);
    const int64_t zp = static_cast<int64_t>(static_cast<float>(qmax + qmin + 1) / 2.0f);
    return {scale, at::full_like(scale, zp, at::kInt), -max_abs};
  }
  const auto scale = at::clamp_min((hi - lo) / static_cast<double>(qmax - qmin), eps);
  const auto zp = at::clamp(static_cast<double>(qmin) - at::round(lo / scale), qmin, qmax);
  return {scale, at::nan_to_num(zp, static_cast<double>(qmin)).to(at::kInt), lo};
}

at::Tensor float_qparams(const at::Tensor& min32, const at::Tensor& max32,
                         const formats::FloatFormatInfo& info, bool e8m0,
                         const std::optional<double>& rmin, const std::optional<double>& rmax) {
  const auto max_abs = at::maximum(-range_end(min32, rmin, true), range_end(max32, rmax, false));
  if (!e8m0)
    return at::clamp_min(max_abs / static_cast<double>(info.max_value),
                         static_cast<double>(formats::kFloat32Eps));
  const auto e = at::bitwise_and(at::bitwise_right_shift(max_abs.view(at::kInt), 23), 0xFF) - 127;
  const auto es = at::clamp(e - info.max_pow2, -127, 128);
  const auto scale = at::bitwise_left_shift(es + 127, 23).to(at::kInt).view(at::kFloat);
  return at::clamp_min(scale, static_cast<double>(formats::exp2_int(-126)));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> choose_qparams_int(
    const at::Tensor& min, const at::Tensor& max, int64_t quant_min, int64_t quant_max,
    bool symmetric, std::optional<double> range_min, std::optional<double> range_max) {
  const char* op = "choose_qparams_int";
  check_float_input(min, op, "min");
  check_float_input(max, op, "max");
  check_int_range(quant_min, quant_max, op);
  ops::check_float_range(range_min, range_max, op);
  ops::check_same_shape(min, max, op, "min", "max");
  auto [s, zp, mv] = int_qparams(min.to(at::kFloat), max.to(at::kFloat), quant_min, quant_max,
                                 symmetric, range_min, range_max);
  return {s.to(min.scalar_type()), zp, mv.to(min.scalar_type())};
}

at::Tensor choose_qparams_float(const at::Tensor& min, const at::Tensor& max, c10::ScalarType dtype,
                                bool e8m0, std::optional<double> range_min,
                                std::optional<double> range_max) {
  const char* op = "choose_qparams_float";
  check_float_input(min, op, "min");
  check_float_input(max, op, "max");
  ops::check_float_range(range_min, range_max, op);
  ops::check_same_shape(min, max, op, "min", "max");
  const auto fmt = ops::float_format_of(dtype, op);
  const auto s =
      float_qparams(min.to(at::kFloat), max.to(at::kFloat),
                    formats::float_format_info(fmt.float_format), e8m0, range_min, range_max);
  return e8m0 ? s : s.to(min.scalar_type());
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
  const auto q = ops::check_block_size(x, block_size, op);
  const auto obs = observer_on.reshape({}).to(at::kBool);
  const auto fq = fake_quant_on.reshape({}).to(at::kBool);

  if (!(range_min.has_value() && range_max.has_value())) {
    const auto [lo, hi] = batch_range(x, q);
    auto [nmin, nmax] = folded_range(lo, hi, running_min, running_max, m, averaging_constant);
    running_min.copy_(at::where(obs, nmin, running_min));
    running_max.copy_(at::where(obs, nmax, running_max));
  }
  if (fmt.is_float) {
    const auto s =
        float_qparams(running_min, running_max, formats::float_format_info(fmt.float_format), e8m0,
                      range_min, range_max);
    scale.copy_(at::where(obs, s, scale));
  } else {
    auto [s, zp, mv] = int_qparams(running_min, running_max, quant_min, quant_max, symmetric,
                                   range_min, range_max);
    scale.copy_(at::where(obs, s, scale));
    zero_point.copy_(at::where(obs, zp, zero_point));
    minval.copy_(at::where(obs, mv, minval));
  }
  at::Tensor y;
  if (fmt.is_float) {
    y = fake_quantize_float(x, scale, dtype);
  } else if (use_minval) {
    y = fake_quantize_int(x, scale, std::nullopt, minval, quant_min, quant_max);
  } else {
    y = fake_quantize_int(x, scale, zero_point, std::nullopt, quant_min, quant_max);
  }
  return at::where(fq, y, x).contiguous();
}

at::Tensor fused_fake_quantize_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& fake_quant_on, const at::Tensor& scale,
                                        const at::Tensor& zero_point, const at::Tensor& minval,
                                        c10::ScalarType dtype, int64_t quant_min, int64_t quant_max,
                                        bool use_minval) {
  const auto fmt = ops::quant_format_of(dtype, "fused_fake_quantize_backward");
  const auto fq = fake_quant_on.reshape({}).to(at::kBool);
  at::Tensor g;
  if (fmt.is_float) {
    g = fake_quantize_float_backward(grad, x, scale, dtype);
  } else if (use_minval) {
    g = fake_quantize_int_backward(grad, x, scale, std::nullopt, minval, quant_min, quant_max);
  } else {
    g = fake_quantize_int_backward(grad, x, scale, zero_point, std::nullopt, quant_min, quant_max);
  }
  return at::where(fq, g, grad.to(x.scalar_type())).contiguous();
}

// ---- pack -----------------------------------------------------------------------------

// FP4 code of values already on the E2M1 grid: index of |v| in {0,.5,1,1.5,2,3,4,6} + sign.
at::Tensor fp4_codes(const at::Tensor& v) {
  const auto a = v.abs();
  const auto idx = at::where(a < 2, a * 2, at::where(a < 4, a + 2, a / 2 + 4)).to(at::kInt);
  const auto sign = at::signbit(v).to(at::kInt) * 8;
  return idx + sign;
}

at::Tensor pack(const at::Tensor& q, c10::ScalarType dtype) {
  const auto fmt = ops::packable_format_of(dtype, "pack");
  const auto out_sizes = ops::packed_sizes(q.sizes(), fmt, "pack");
  const int per_byte = 8 / fmt.bits;
  at::Tensor codes;
  if (fmt.is_float) {
    const auto info = formats::float_format_info(fmt.float_format);
    codes = fp4_codes(
        float_grid_round(at::clamp(q.to(at::kFloat), -info.max_value, info.max_value), info));
  } else {
    codes = at::bitwise_and(q.to(at::kInt), (1 << fmt.bits) - 1);
  }
  std::vector<int64_t> grouped(out_sizes.begin(), out_sizes.end());
  grouped.push_back(per_byte);
  const auto shifts = at::arange(0, 8, fmt.bits, q.options().dtype(at::kInt));
  return at::bitwise_left_shift(codes.reshape(grouped), shifts)
      .sum(-1)
      .to(at::kByte)
      .reshape(out_sizes);
}

at::Tensor unpack(const at::Tensor& packed, c10::ScalarType dtype) {
  const auto fmt = ops::packable_format_of(dtype, "unpack");
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kByte,
                   "coreai_opt.unpack: packed must be torch.uint8; got ",
                   ops::dtype_name(packed.scalar_type()));
  const auto out_sizes = ops::unpacked_sizes(packed.sizes(), fmt);
  const auto shifts = at::arange(0, 8, fmt.bits, packed.options().dtype(at::kInt));
  const auto codes = at::bitwise_and(
      at::bitwise_right_shift(packed.to(at::kInt).unsqueeze(-1), shifts), (1 << fmt.bits) - 1);
  if (fmt.is_float) {
    const auto info = formats::float_format_info(fmt.float_format);
    std::vector<float> table(16);
    for (uint32_t c = 0; c < 16; ++c) table[c] = formats::decode_float_format(c, info);
    const auto lut = at::tensor(table, packed.options().dtype(at::kFloat));
    return lut.index({codes.reshape(-1).to(at::kLong)}).reshape(out_sizes);
  }
  const int shift = 32 - fmt.bits;
  auto v = codes;
  if (fmt.is_signed) v = at::bitwise_right_shift(at::bitwise_left_shift(codes, shift), shift);
  return v.to(fmt.is_signed ? at::kChar : at::kByte).reshape(out_sizes);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CompositeExplicitAutograd, m) {
  COREAI_OPT_TENSOR_OPS(COREAI_OPT_IMPL)
}

}  // namespace coreai_opt::reference
