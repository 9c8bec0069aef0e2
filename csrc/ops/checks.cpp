#include "ops/checks.h"

#include <c10/util/Exception.h>

#include <sstream>

#include "formats/int_range.h"

namespace coreai_opt::ops {

namespace {

template <typename T>
std::string shape_str(c10::ArrayRef<T> s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    std::ostringstream v;
    v << s[i];
    out += v.str();
  }
  return out + "]";
}

// Sizes known as plain integers (always on CPU / CUDA; not for symbolic Meta tensors).
bool concrete(const at::Tensor& t) { return c10::asIntArrayRefSlowOpt(t.sym_sizes()).has_value(); }

// ---- dtypes -------------------------------------------------------------------------------

void check_float_input(const at::Tensor& x, const char* op, const char* arg) {
  const auto st = x.scalar_type();
  TORCH_CHECK_TYPE(is_float_input_dtype(st), "coreai_opt.", op, ": ", arg, " has dtype ",
                   dtype_name(st), "; allowed: ", kFloatInputDtypes);
}

// Scales of float formats may also be E8M0 codes (the OCP MX block scales).
void check_float_format_scale(const at::Tensor& scale, const char* op) {
  const auto st = scale.scalar_type();
  TORCH_CHECK_TYPE(is_float_input_dtype(st) || st == at::kFloat8_e8m0fnu, "coreai_opt.", op,
                   ": scale has dtype ", dtype_name(st), "; allowed: ", kFloatInputDtypes,
                   ", torch.float8_e8m0fnu");
}

QuantFormat float_format_of(c10::ScalarType dtype, const char* op) {
  using ST = c10::ScalarType;
  TORCH_CHECK_VALUE(
      dtype == ST::Float8_e4m3fn || dtype == ST::Float8_e5m2 || dtype == ST::Float4_e2m1fn_x2,
      "coreai_opt.", op, ": dtype is ", dtype_name(dtype),
      "; allowed: torch.float8_e4m3fn, torch.float8_e5m2, torch.float4_e2m1fn_x2");
  return quant_format_of(dtype, op);
}

// Only the sub-byte formats pack.
QuantFormat packable_format_of(c10::ScalarType dtype, const char* op) {
  using ST = c10::ScalarType;
  TORCH_CHECK_VALUE(dtype == ST::Int4 || dtype == ST::UInt4 || dtype == ST::Int2 ||
                        dtype == ST::UInt2 || dtype == ST::Float4_e2m1fn_x2,
                    "coreai_opt.", op, ": dtype is ", dtype_name(dtype),
                    "; allowed: torch.int4, torch.uint4, torch.int2, torch.uint2, "
                    "torch.float4_e2m1fn_x2");
  return quant_format_of(dtype, op);
}

// ---- shapes -------------------------------------------------------------------------------

// The layout of qparams of sizes qs (the shape of `q`, the argument named arg) over an
// input of sizes xs; qs must encode a granularity of xs (see qparam_layout.h).
formats::QParamLayout checked_qparam_layout(const std::vector<int64_t>& xs,
                                            const std::vector<int64_t>& qs, const at::Tensor& q,
                                            const char* op, const char* arg) {
  const std::string why = formats::qparam_shape_error(xs, qs);
  TORCH_CHECK_VALUE(why.empty(), "coreai_opt.", op, ": ", arg, " of shape ", shape_str(q.sizes()),
                    " fits no granularity of an input of shape ", shape_str(at::IntArrayRef(xs)),
                    ": ", why,
                    ". Each dimension must be 1 (shared), the input's size (per index) or "
                    "size / block (per block); a 0-d tensor means per-tensor.");
  return formats::make_qparam_layout(xs, qs);
}

// The qparam tensor q's layout over x (nullopt while either has symbolic sizes).
std::optional<formats::QParamLayout> qparam_layout(const at::Tensor& x, const at::Tensor& q,
                                                   const char* op, const char* arg) {
  if (!concrete(x) || !concrete(q)) return std::nullopt;
  return checked_qparam_layout(x.sizes().vec(), qparam_sizes(x, q), q, op, arg);
}

// `other` must have exactly `ref`'s shape.
void check_same_shape(const at::Tensor& ref, const at::Tensor& other, const char* op,
                      const char* ref_arg, const char* other_arg) {
  if (!concrete(ref) || !concrete(other)) return;
  TORCH_CHECK_VALUE(ref.sizes() == other.sizes(), "coreai_opt.", op, ": ", other_arg, " has shape ",
                    shape_str(other.sizes()), " but ", ref_arg, " has shape ",
                    shape_str(ref.sizes()), "; they must be equal");
}

// A gradient argument: a float tensor of x's shape.
void check_grad(const at::Tensor& grad, const at::Tensor& x, const char* op) {
  check_float_input(grad, op, "grad");
  check_same_shape(x, grad, op, "x", "grad");
}

// block_size has one entry per dimension of x and each divides it; returns x.size(d) / block.
std::optional<std::vector<int64_t>> reduced_sizes(const at::Tensor& x,
                                                  c10::SymIntArrayRef block_size, const char* op) {
  TORCH_CHECK_VALUE(static_cast<int64_t>(block_size.size()) == x.dim(), "coreai_opt.", op,
                    ": block_size has ", block_size.size(), " entries but the input has ", x.dim(),
                    " dimensions");
  const auto blocks = c10::asIntArrayRefSlowOpt(block_size);
  if (!concrete(x) || !blocks.has_value()) return std::nullopt;
  std::vector<int64_t> q;
  const std::string why = formats::qparam_sizes_from_blocks(x.sizes().vec(), blocks->vec(), q);
  TORCH_CHECK_VALUE(why.empty(), "coreai_opt.", op, ": ", why, " (input shape ",
                    shape_str(x.sizes()), ", block_size ", shape_str(*blocks), ")");
  return q;
}

// A state tensor the op writes in place: its dtype, the qparam shape, contiguous memory.
void check_state(const at::Tensor& t, const std::optional<std::vector<int64_t>>& q_sizes,
                 at::ScalarType st, const char* op, const char* arg) {
  TORCH_CHECK_TYPE(t.scalar_type() == st, "coreai_opt.", op, ": ", arg, " has dtype ",
                   dtype_name(t.scalar_type()), "; it must be ", dtype_name(st));
  if (!q_sizes.has_value() || !concrete(t)) return;
  TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(*q_sizes), "coreai_opt.", op, ": ", arg,
                    " has shape ", shape_str(t.sizes()), " but the block sizes give ",
                    shape_str(at::IntArrayRef(*q_sizes)));
  TORCH_CHECK_VALUE(t.is_contiguous(), "coreai_opt.", op, ": ", arg, " must be contiguous");
}

// A one-element switch tensor (bool or a real number type; nonzero means on).
void check_switch(const at::Tensor& flag, const char* op, const char* arg) {
  const auto st = flag.scalar_type();
  TORCH_CHECK_TYPE(st == at::kBool || at::isIntegralType(st, false) || st == at::kFloat ||
                       st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
                   "coreai_opt.", op, ": ", arg, " has dtype ", dtype_name(st),
                   "; allowed: torch.bool, an integer or a floating-point dtype");
  const auto n = flag.sym_numel().maybe_as_int();
  TORCH_CHECK_VALUE(!n.has_value() || *n == 1, "coreai_opt.", op, ": ", arg,
                    " must hold exactly one element; it has ", n.value_or(0));
}

// ---- scalar arguments ---------------------------------------------------------------------

// quant_min < quant_max, both inside an int8 / uint8 container.
void check_int_range(int64_t quant_min, int64_t quant_max, const char* op) {
  TORCH_CHECK_VALUE(quant_min < quant_max, "coreai_opt.", op, ": quant_min (", quant_min,
                    ") must be smaller than quant_max (", quant_max, ")");
  TORCH_CHECK_VALUE(
      quant_min >= formats::kIntContainerMin && quant_max <= formats::kIntContainerMax,
      "coreai_opt.", op, ": [quant_min, quant_max] = [", quant_min, ", ", quant_max,
      "] must lie inside [", formats::kIntContainerMin, ", ", formats::kIntContainerMax,
      "] (an int8 or uint8 container)");
}

// An integer format's [quant_min, quant_max] must lie inside the dtype's own range.
void check_int_range_fits(const QuantFormat& fmt, int64_t quant_min, int64_t quant_max,
                          c10::ScalarType dtype, const char* op) {
  const auto r = formats::int_range(fmt.bits, fmt.is_signed, false);
  TORCH_CHECK_VALUE(quant_min >= r.qmin && quant_max <= r.qmax, "coreai_opt.", op,
                    ": [quant_min, quant_max] = [", quant_min, ", ", quant_max, "] does not fit ",
                    dtype_name(dtype), ", whose range is [", r.qmin, ", ", r.qmax, "]");
}

// float_range ends: range_min <= 0 <= range_max, range_min < range_max when both are given.
void check_float_range(const std::optional<double>& range_min,
                       const std::optional<double>& range_max, const char* op) {
  TORCH_CHECK_VALUE(!range_min.has_value() || *range_min <= 0.0, "coreai_opt.", op,
                    ": range_min is ", range_min.value_or(0.0), "; it must be <= 0");
  TORCH_CHECK_VALUE(!range_max.has_value() || *range_max >= 0.0, "coreai_opt.", op,
                    ": range_max is ", range_max.value_or(0.0), "; it must be >= 0");
  TORCH_CHECK_VALUE(!(range_min.has_value() && range_max.has_value()) || *range_min < *range_max,
                    "coreai_opt.", op, ": range_min (", range_min.value_or(0.0),
                    ") must be smaller than range_max (", range_max.value_or(0.0), ")");
}

RangeMethod range_method_of(c10::string_view method, double averaging_constant, const char* op) {
  if (method == "static") return RangeMethod::Static;
  if (method == "global_minmax") return RangeMethod::GlobalMinMax;
  TORCH_CHECK_VALUE(method == "moving_average", "coreai_opt.", op, ": method is '",
                    std::string(method), "'; allowed: 'static', 'moving_average', 'global_minmax'");
  TORCH_CHECK_VALUE(averaging_constant > 0.0 && averaging_constant <= 1.0, "coreai_opt.", op,
                    ": averaging_constant is ", averaging_constant,
                    "; moving_average needs a value in (0, 1]");
  return RangeMethod::MovingAverage;
}

// ---- shared by several ops ----------------------------------------------------------------

std::optional<formats::QParamLayout> check_int_fq(const at::Tensor& x, const at::Tensor& scale,
                                                  const std::optional<at::Tensor>& zero_point,
                                                  const std::optional<at::Tensor>& minval,
                                                  int64_t quant_min, int64_t quant_max,
                                                  const char* op) {
  check_float_input(x, op, "x");
  check_float_input(scale, op, "scale");
  check_int_range(quant_min, quant_max, op);
  auto layout = qparam_layout(x, scale, op, "scale");
  TORCH_CHECK_VALUE(!(zero_point.has_value() && minval.has_value()), "coreai_opt.", op,
                    ": pass zero_point (zp formulation) or minval (minval formulation), "
                    "not both");
  if (zero_point.has_value()) check_same_shape(scale, *zero_point, op, "scale", "zero_point");
  if (minval.has_value()) check_same_shape(scale, *minval, op, "scale", "minval");
  return layout;
}

FloatQuantCheck check_float_fq(const at::Tensor& x, const at::Tensor& scale, c10::ScalarType dtype,
                               const char* op) {
  check_float_input(x, op, "x");
  check_float_format_scale(scale, op);
  const auto fmt = float_format_of(dtype, op);
  return {fmt, qparam_layout(x, scale, op, "scale")};
}

std::optional<formats::QParamLayout> check_lsq(const at::Tensor& x, const at::Tensor& scale,
                                               const at::Tensor& zero_point, int64_t quant_min,
                                               int64_t quant_max, const char* op) {
  check_float_input(x, op, "x");
  check_float_input(scale, op, "scale");
  check_float_input(zero_point, op, "zero_point");
  check_int_range(quant_min, quant_max, op);
  auto layout = qparam_layout(x, scale, op, "scale");
  check_same_shape(scale, zero_point, op, "scale", "zero_point");
  return layout;
}

void check_min_max(const at::Tensor& min, const at::Tensor& max,
                   const std::optional<double>& range_min, const std::optional<double>& range_max,
                   const char* op) {
  check_float_input(min, op, "min");
  check_float_input(max, op, "max");
  check_same_shape(min, max, op, "min", "max");
  check_float_range(range_min, range_max, op);
}

}  // namespace

std::string dtype_name(c10::ScalarType dtype) {
  return "torch." + std::string(c10::getDtypeNames(dtype).first);
}

QuantFormat quant_format_of(c10::ScalarType dtype, const char* op, const char* arg) {
  using ST = c10::ScalarType;
  switch (dtype) {
    case ST::Char:
      return {false, formats::FloatFormat::E4M3FN, 8, true};
    case ST::Byte:
      return {false, formats::FloatFormat::E4M3FN, 8, false};
    case ST::Int4:
      return {false, formats::FloatFormat::E4M3FN, 4, true};
    case ST::UInt4:
      return {false, formats::FloatFormat::E4M3FN, 4, false};
    case ST::Int2:
      return {false, formats::FloatFormat::E4M3FN, 2, true};
    case ST::UInt2:
      return {false, formats::FloatFormat::E4M3FN, 2, false};
    case ST::Float8_e4m3fn:
      return {true, formats::FloatFormat::E4M3FN, 8, true};
    case ST::Float8_e5m2:
      return {true, formats::FloatFormat::E5M2, 8, true};
    case ST::Float4_e2m1fn_x2:
      return {true, formats::FloatFormat::E2M1, 4, true};
    default:
      TORCH_CHECK_VALUE(false, "coreai_opt.", op, ": ", arg, " is ", dtype_name(dtype),
                        "; allowed: torch.int8, torch.uint8, torch.int4, torch.uint4, "
                        "torch.int2, torch.uint2, torch.float8_e4m3fn, torch.float8_e5m2, "
                        "torch.float4_e2m1fn_x2");
  }
  return {};
}

std::vector<int64_t> qparam_sizes(const at::Tensor& x, const at::Tensor& q) {
  if (q.dim() == 0) return std::vector<int64_t>(x.dim(), 1);
  return q.sizes().vec();
}

std::optional<formats::QParamLayout> check_fake_quantize_int(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero_point,
    const std::optional<at::Tensor>& minval, int64_t quant_min, int64_t quant_max) {
  return check_int_fq(x, scale, zero_point, minval, quant_min, quant_max, "fake_quantize_int");
}

std::optional<formats::QParamLayout> check_fake_quantize_int_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const std::optional<at::Tensor>& zero_point, const std::optional<at::Tensor>& minval,
    int64_t quant_min, int64_t quant_max) {
  const char* op = "fake_quantize_int_backward";
  auto layout = check_int_fq(x, scale, zero_point, minval, quant_min, quant_max, op);
  check_grad(grad, x, op);
  return layout;
}

FloatQuantCheck check_fake_quantize_float(const at::Tensor& x, const at::Tensor& scale,
                                          c10::ScalarType dtype) {
  return check_float_fq(x, scale, dtype, "fake_quantize_float");
}

FloatQuantCheck check_fake_quantize_float_backward(const at::Tensor& grad, const at::Tensor& x,
                                                   const at::Tensor& scale, c10::ScalarType dtype) {
  const char* op = "fake_quantize_float_backward";
  auto out = check_float_fq(x, scale, dtype, op);
  check_grad(grad, x, op);
  return out;
}

std::optional<formats::QParamLayout> check_fake_quantize_lsq(const at::Tensor& x,
                                                             const at::Tensor& scale,
                                                             const at::Tensor& zero_point,
                                                             int64_t quant_min, int64_t quant_max) {
  return check_lsq(x, scale, zero_point, quant_min, quant_max, "fake_quantize_lsq");
}

std::optional<formats::QParamLayout> check_fake_quantize_lsq_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max) {
  const char* op = "fake_quantize_lsq_backward";
  auto layout = check_lsq(x, scale, zero_point, quant_min, quant_max, op);
  check_grad(grad, x, op);
  return layout;
}

std::optional<std::vector<int64_t>> check_minmax(const at::Tensor& x,
                                                 c10::SymIntArrayRef block_size) {
  check_float_input(x, "minmax", "x");
  return reduced_sizes(x, block_size, "minmax");
}

RangeCheck check_update_range(const at::Tensor& x, const at::Tensor& running_min,
                              const at::Tensor& running_max, c10::SymIntArrayRef block_size,
                              c10::string_view method, double averaging_constant) {
  const char* op = "update_range";
  check_float_input(x, op, "x");
  auto q_sizes = reduced_sizes(x, block_size, op);
  const auto m = range_method_of(method, averaging_constant, op);
  check_state(running_min, q_sizes, at::kFloat, op, "running_min");
  check_state(running_max, q_sizes, at::kFloat, op, "running_max");
  return {m, std::move(q_sizes)};
}

void check_choose_qparams_int(const at::Tensor& min, const at::Tensor& max, int64_t quant_min,
                              int64_t quant_max, const std::optional<double>& range_min,
                              const std::optional<double>& range_max) {
  const char* op = "choose_qparams_int";
  check_min_max(min, max, range_min, range_max, op);
  check_int_range(quant_min, quant_max, op);
}

QuantFormat check_choose_qparams_float(const at::Tensor& min, const at::Tensor& max,
                                       c10::ScalarType dtype,
                                       const std::optional<double>& range_min,
                                       const std::optional<double>& range_max) {
  const char* op = "choose_qparams_float";
  check_min_max(min, max, range_min, range_max, op);
  return float_format_of(dtype, op);
}

FusedCheck check_fused_fake_quantize(const at::Tensor& x, const at::Tensor& observer_on,
                                     const at::Tensor& fake_quant_on, const at::Tensor& running_min,
                                     const at::Tensor& running_max, const at::Tensor& scale,
                                     const at::Tensor& zero_point, const at::Tensor& minval,
                                     c10::SymIntArrayRef block_size, c10::ScalarType dtype,
                                     int64_t quant_min, int64_t quant_max, c10::string_view method,
                                     double averaging_constant,
                                     const std::optional<double>& range_min,
                                     const std::optional<double>& range_max, const char* op) {
  check_float_input(x, op, "x");
  const auto fmt = quant_format_of(dtype, op);
  if (!fmt.is_float) {
    check_int_range(quant_min, quant_max, op);
    check_int_range_fits(fmt, quant_min, quant_max, dtype, op);
  }
  check_float_range(range_min, range_max, op);
  const auto m = range_method_of(method, averaging_constant, op);
  check_switch(observer_on, op, "observer_on");
  check_switch(fake_quant_on, op, "fake_quant_on");
  auto q_sizes = reduced_sizes(x, block_size, op);
  check_state(running_min, q_sizes, at::kFloat, op, "running_min");
  check_state(running_max, q_sizes, at::kFloat, op, "running_max");
  check_state(scale, q_sizes, at::kFloat, op, "scale");
  check_state(zero_point, q_sizes, at::kInt, op, "zero_point");
  check_state(minval, q_sizes, at::kFloat, op, "minval");
  return {fmt, m, std::move(q_sizes)};
}

FloatQuantCheck check_fused_fake_quantize_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& fake_quant_on,
    const at::Tensor& scale, const at::Tensor& zero_point, const at::Tensor& minval,
    c10::ScalarType dtype, int64_t quant_min, int64_t quant_max, bool use_minval) {
  const char* op = "fused_fake_quantize_backward";
  const auto fmt = quant_format_of(dtype, op);
  check_switch(fake_quant_on, op, "fake_quant_on");
  auto layout =
      fmt.is_float ? check_float_fq(x, scale, dtype, op).layout
                   : check_int_fq(x, scale,
                                  use_minval ? std::nullopt : std::optional<at::Tensor>(zero_point),
                                  use_minval ? std::optional<at::Tensor>(minval) : std::nullopt,
                                  quant_min, quant_max, op);
  check_grad(grad, x, op);
  return {fmt, std::move(layout)};
}

void check_fake_quantize_mask_backward(const at::Tensor& grad, const at::Tensor& mask,
                                       const char* op) {
  check_float_input(grad, op, "grad");
  TORCH_CHECK_TYPE(mask.scalar_type() == at::kBool, "coreai_opt.", op, ": mask has dtype ",
                   dtype_name(mask.scalar_type()),
                   "; allowed: torch.bool (fused_fake_quantize_cachemask's mask)");
  check_same_shape(mask, grad, op, "mask", "grad");
  TORCH_CHECK_VALUE(mask.device() == grad.device(), "coreai_opt.", op, ": mask is on ",
                    mask.device(), " but grad is on ", grad.device(), "; they must match");
}

namespace {

// An argument of the channel family that must have x's dtype and device.
void check_dtype_and_device_of_x(const at::Tensor& x, const at::Tensor& t, const char* op,
                                 const char* arg) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "coreai_opt.", op, ": ", arg, " has dtype ",
                   dtype_name(t.scalar_type()), " but x has ", dtype_name(x.scalar_type()),
                   "; they must match");
  TORCH_CHECK_VALUE(t.device() == x.device(), "coreai_opt.", op, ": ", arg, " is on ", t.device(),
                    " but x is on ", x.device(), "; they must match");
}

// scale / shift of channel_scale_shift: one value per channel (x's dim 1), x's dtype and
// device.
void check_channel_vector(const at::Tensor& x, const at::Tensor& v, const char* op,
                          const char* arg) {
  check_dtype_and_device_of_x(x, v, op, arg);
  TORCH_CHECK_VALUE(v.dim() == 1, "coreai_opt.", op, ": ", arg, " has shape ",
                    shape_str(v.sym_sizes()), "; allowed: one dimension of x.size(1) entries");
  if (!concrete(x) || !concrete(v)) return;
  TORCH_CHECK_VALUE(v.size(0) == x.size(1), "coreai_opt.", op, ": ", arg, " has ", v.size(0),
                    " entries but x has ", x.size(1), " channels (x.size(1)); they must match");
}

// x and scale, as both ops of the family take them.
void check_channel_x_and_scale(const at::Tensor& x, const at::Tensor& scale, const char* op) {
  check_float_input(x, op, "x");
  TORCH_CHECK_VALUE(x.dim() >= 2, "coreai_opt.", op, ": x has ", x.dim(),
                    " dimensions; allowed: 2 or more (batch, channels, ...)");
  check_channel_vector(x, scale, op, "scale");
}

}  // namespace

void check_channel_scale_shift(const at::Tensor& x, const at::Tensor& scale,
                               const std::optional<at::Tensor>& shift) {
  const char* op = "channel_scale_shift";
  check_channel_x_and_scale(x, scale, op);
  if (shift.has_value()) check_channel_vector(x, *shift, op, "shift");
}

void check_channel_scale_shift_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& scale) {
  const char* op = "channel_scale_shift_backward";
  check_channel_x_and_scale(x, scale, op);
  check_grad(grad, x, op);
  check_dtype_and_device_of_x(x, grad, op, "grad");
}

PackCheck check_pack(const at::Tensor& q, c10::ScalarType dtype) {
  const char* op = "pack";
  const auto fmt = packable_format_of(dtype, op);
  const auto st = q.scalar_type();
  if (fmt.is_float) {
    TORCH_CHECK_TYPE(at::isFloatingType(st),
                     "coreai_opt.pack: FP4 values must be a "
                     "floating-point tensor; got ",
                     dtype_name(st));
  } else {
    TORCH_CHECK_TYPE(at::isIntegralType(st, /*includeBool=*/false),
                     "coreai_opt.pack: integer formats take an integer tensor of codes; got ",
                     dtype_name(st));
  }
  const auto sizes = q.sym_sizes();
  TORCH_CHECK_VALUE(!sizes.empty(), "coreai_opt.pack: needs at least one dimension");
  const int per_byte = 8 / fmt.bits;
  std::vector<c10::SymInt> out(sizes.begin(), sizes.end());
  const auto last = out.back().maybe_as_int();
  TORCH_CHECK_VALUE(!last.has_value() || *last % per_byte == 0,
                    "coreai_opt.pack: the last dimension (", last.value_or(0),
                    ") must be a multiple of ", per_byte, " to pack ", per_byte, " values a byte");
  out.back() = out.back() / per_byte;
  return {fmt, std::move(out)};
}

PackCheck check_unpack(const at::Tensor& packed, c10::ScalarType dtype) {
  const char* op = "unpack";
  const auto fmt = packable_format_of(dtype, op);
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kByte,
                   "coreai_opt.unpack: packed must be torch.uint8; got ",
                   dtype_name(packed.scalar_type()));
  const auto sizes = packed.sym_sizes();
  TORCH_CHECK_VALUE(!sizes.empty(), "coreai_opt.unpack: needs at least one dimension");
  std::vector<c10::SymInt> out(sizes.begin(), sizes.end());
  out.back() = out.back() * (8 / fmt.bits);
  return {fmt, std::move(out)};
}

// ---- coreai_export ------------------------------------------------------------------------

namespace {

constexpr const char* kCoreAIFormats =
    "torch.int8, torch.uint8, torch.int1 .. torch.int7, torch.uint1 .. torch.uint7, "
    "torch.float8_e4m3fn, torch.float8_e5m2, torch.float4_e2m1fn_x2";

// Every integer width torch names (the logical dtype only sets the range), FP8 and FP4.
QuantFormat coreai_format_of(c10::ScalarType dtype, const char* op, const char* arg) {
  using ST = c10::ScalarType;
  const auto integer = [](int bits, bool is_signed) {
    return QuantFormat{false, formats::FloatFormat::E4M3FN, bits, is_signed};
  };
  switch (dtype) {
    case ST::Char:
      return integer(8, true);
    case ST::Byte:
      return integer(8, false);
    case ST::Int1:
    case ST::Int2:
    case ST::Int3:
    case ST::Int4:
    case ST::Int5:
    case ST::Int6:
    case ST::Int7:
      return integer(1 + static_cast<int>(dtype) - static_cast<int>(ST::Int1), true);
    case ST::UInt1:
    case ST::UInt2:
    case ST::UInt3:
    case ST::UInt4:
    case ST::UInt5:
    case ST::UInt6:
    case ST::UInt7:
      return integer(1 + static_cast<int>(dtype) - static_cast<int>(ST::UInt1), false);
    case ST::Float8_e4m3fn:
    case ST::Float8_e5m2:
    case ST::Float4_e2m1fn_x2:
      return quant_format_of(dtype, op, arg);
    default:
      TORCH_CHECK_VALUE(false, "coreai_opt.", op, ": ", arg, " is ", dtype_name(dtype),
                        "; allowed: ", kCoreAIFormats);
  }
  return {};
}

// A float scale, or E8M0 codes (the OCP MX block scales) for float formats. Returns whether
// the scale is E8M0.
bool check_coreai_scale(const at::Tensor& scale, const QuantFormat& fmt, const char* op) {
  const auto st = scale.scalar_type();
  if (st == at::kFloat8_e8m0fnu) {
    TORCH_CHECK_TYPE(fmt.is_float, "coreai_opt.", op,
                     ": scale has dtype torch.float8_e8m0fnu, which only float formats take; "
                     "integer codes need ",
                     kFloatInputDtypes);
    return true;
  }
  TORCH_CHECK_TYPE(is_float_input_dtype(st), "coreai_opt.", op, ": scale has dtype ",
                   dtype_name(st), "; allowed: ", kFloatInputDtypes,
                   ", and torch.float8_e8m0fnu for float formats");
  return false;
}

// zero_point and minval: integer formats only, one of them, each of scale's shape.
void check_coreai_offsets(const at::Tensor& scale, const std::optional<at::Tensor>& zero_point,
                          const std::optional<at::Tensor>& minval, const QuantFormat& fmt,
                          const char* op) {
  TORCH_CHECK_VALUE(!(zero_point.has_value() && minval.has_value()), "coreai_opt.", op,
                    ": zero_point and minval are mutually exclusive; pass at most one");
  TORCH_CHECK_VALUE(!fmt.is_float || !zero_point.has_value(), "coreai_opt.", op,
                    ": float formats take no zero_point");
  TORCH_CHECK_VALUE(!fmt.is_float || !minval.has_value(), "coreai_opt.", op,
                    ": float formats take no minval");
  if (zero_point.has_value()) check_same_shape(scale, *zero_point, op, "scale", "zero_point");
  if (minval.has_value()) check_same_shape(scale, *minval, op, "scale", "minval");
}

std::vector<c10::SymInt> sym_sizes_of(const at::Tensor& t) {
  const auto s = t.sym_sizes();
  return {s.begin(), s.end()};
}

std::optional<std::vector<int64_t>> int_sizes(const std::vector<c10::SymInt>& sizes) {
  std::vector<int64_t> out;
  out.reserve(sizes.size());
  for (const auto& s : sizes) {
    const auto v = s.maybe_as_int();
    if (!v.has_value()) return std::nullopt;
    out.push_back(*v);
  }
  return out;
}

// A qparam layout and the qparam sizes it came from (both unknown with symbolic sizes).
struct QParams {
  std::optional<formats::QParamLayout> layout;
  std::optional<std::vector<int64_t>> q_sizes;
};

// The qparams of a 0-d / 1-D scale over an input of (logical) sizes: per tensor when it
// holds one value, else per channel along axis.
QParams channel_qparams(const std::vector<c10::SymInt>& sizes, const at::Tensor& scale,
                        const c10::SymInt& axis, const char* op) {
  TORCH_CHECK_VALUE(scale.dim() <= 1, "coreai_opt.", op, ": scale has ", scale.dim(),
                    " dimensions; allowed: 0-d or one element (per tensor), 1-D with "
                    "input.size(axis) entries (per channel); blocks go through "
                    "blockwise_shift_scale");
  const auto rank = static_cast<int64_t>(sizes.size());
  const auto n = scale.sym_numel().maybe_as_int();
  const auto ax = axis.maybe_as_int();
  std::optional<int64_t> channel_dim;
  if (scale.dim() == 1 && rank == 0) {
    TORCH_CHECK_VALUE(!n.has_value() || *n == 1, "coreai_opt.", op, ": scale has ", n.value_or(0),
                      " entries but the input is 0-d; it needs one");
  } else if (scale.dim() == 1 && ax.has_value()) {
    TORCH_CHECK_VALUE(*ax >= -rank && *ax < rank, "coreai_opt.", op, ": axis is ", *ax,
                      " but the input has ", rank, " dimensions; allowed: ", -rank, " .. ",
                      rank - 1);
    channel_dim = *ax < 0 ? *ax + rank : *ax;
    const auto size = sizes[*channel_dim].maybe_as_int();
    TORCH_CHECK_VALUE(!n.has_value() || !size.has_value() || *n == 1 || *n == *size, "coreai_opt.",
                      op, ": scale has ", n.value_or(0), " entries; per channel along axis ", *ax,
                      " needs input.size(", *ax, ") = ", size.value_or(0),
                      " (or one entry for per tensor)");
  }
  const auto xs = int_sizes(sizes);
  if (!xs.has_value() || !n.has_value() || (scale.dim() == 1 && rank > 0 && !ax.has_value())) {
    return {};
  }
  std::vector<int64_t> qs(xs->size(), 1);
  if (channel_dim.has_value() && *n != 1) qs[*channel_dim] = *n;
  return {formats::make_qparam_layout(*xs, qs), qs};
}

// The codes given to dequantize / blockwise_shift_scale: their logical format and sizes.
struct Codes {
  QuantFormat format;
  std::vector<c10::SymInt> sizes;
};

Codes check_codes(const at::Tensor& input, std::optional<c10::ScalarType> input_dtype,
                  const char* op) {
  using ST = c10::ScalarType;
  const auto st = input.scalar_type();
  auto sizes = sym_sizes_of(input);
  if (st == ST::Float4_e2m1fn_x2 || (st == ST::Byte && input_dtype == ST::Float4_e2m1fn_x2)) {
    TORCH_CHECK_VALUE(!input_dtype.has_value() || *input_dtype == ST::Float4_e2m1fn_x2,
                      "coreai_opt.", op, ": input has dtype torch.float4_e2m1fn_x2 but input_dtype",
                      " is ", dtype_name(*input_dtype), "; it must be None or the same");
    TORCH_CHECK_VALUE(!sizes.empty(), "coreai_opt.", op,
                      ": packed FP4 input needs at least one dimension");
    sizes.back() = sizes.back() * 2;
    return {quant_format_of(ST::Float4_e2m1fn_x2, op), std::move(sizes)};
  }
  if (st == ST::Float8_e4m3fn || st == ST::Float8_e5m2) {
    TORCH_CHECK_VALUE(!input_dtype.has_value() || *input_dtype == st, "coreai_opt.", op,
                      ": input has dtype ", dtype_name(st), " but input_dtype is ",
                      dtype_name(input_dtype.value_or(st)), "; it must be None or the same");
    return {quant_format_of(st, op), std::move(sizes)};
  }
  TORCH_CHECK_TYPE(st == ST::Char || st == ST::Byte, "coreai_opt.", op, ": input has dtype ",
                   dtype_name(st),
                   "; allowed: torch.int8, torch.uint8 (integer codes, or FP4 packed two a byte "
                   "with input_dtype=torch.float4_e2m1fn_x2), torch.float8_e4m3fn, "
                   "torch.float8_e5m2, torch.float4_e2m1fn_x2");
  const auto fmt = coreai_format_of(input_dtype.value_or(st), op, "input_dtype");
  TORCH_CHECK_VALUE(!fmt.is_float, "coreai_opt.", op, ": input_dtype is ", dtype_name(*input_dtype),
                    " but input has dtype ", dtype_name(st),
                    "; float8 codes come as a float8 tensor");
  const auto r = formats::int_range(fmt.bits, fmt.is_signed, false);
  const auto c = formats::int_range(8, st == ST::Char, false);
  TORCH_CHECK_VALUE(r.qmin >= c.qmin && r.qmax <= c.qmax, "coreai_opt.", op, ": input_dtype ",
                    dtype_name(input_dtype.value_or(st)), " has the range [", r.qmin, ", ", r.qmax,
                    "], which a ", dtype_name(st), " input cannot hold");
  return {fmt, std::move(sizes)};
}

// What dequantize and blockwise_shift_scale share: codes, scale, offsets, result dtype.
struct DequantizeArgs {
  Codes codes;
  bool e8m0;
  at::ScalarType out_dtype;
};

DequantizeArgs check_dequantize_args(const at::Tensor& input, const at::Tensor& scale,
                                     const std::optional<at::Tensor>& zero_point,
                                     const std::optional<at::Tensor>& minval,
                                     std::optional<c10::ScalarType> input_dtype,
                                     std::optional<c10::ScalarType> output_dtype, const char* op) {
  auto codes = check_codes(input, input_dtype, op);
  const bool e8m0 = check_coreai_scale(scale, codes.format, op);
  check_coreai_offsets(scale, zero_point, minval, codes.format, op);
  if (zero_point.has_value()) {
    TORCH_CHECK_TYPE(zero_point->scalar_type() == input.scalar_type(), "coreai_opt.", op,
                     ": zero_point has dtype ", dtype_name(zero_point->scalar_type()),
                     " but input has dtype ", dtype_name(input.scalar_type()),
                     "; they must be equal");
  }
  if (minval.has_value()) {
    TORCH_CHECK_TYPE(minval->scalar_type() == scale.scalar_type(), "coreai_opt.", op,
                     ": minval has dtype ", dtype_name(minval->scalar_type()),
                     " but scale has dtype ", dtype_name(scale.scalar_type()),
                     "; they must be equal");
    TORCH_CHECK_VALUE(input_dtype.has_value(), "coreai_opt.", op,
                      ": minval needs input_dtype: qmin depends on the logical dtype, which the "
                      "container's dtype does not tell (int4 codes are stored as int8)");
  }
  TORCH_CHECK_VALUE(!output_dtype.has_value() || is_float_input_dtype(*output_dtype), "coreai_opt.",
                    op, ": output_dtype is ", dtype_name(output_dtype.value_or(at::kFloat)),
                    "; allowed: ", kFloatInputDtypes);
  TORCH_CHECK_VALUE(!e8m0 || output_dtype.has_value(), "coreai_opt.", op,
                    ": an E8M0 scale (torch.float8_e8m0fnu) needs output_dtype");
  return {std::move(codes), e8m0, output_dtype.value_or(scale.scalar_type())};
}

}  // namespace

QuantizeCheck check_quantize(const at::Tensor& input, const at::Tensor& scale,
                             c10::ScalarType output_dtype,
                             const std::optional<at::Tensor>& zero_point,
                             const std::optional<at::Tensor>& minval, const c10::SymInt& axis) {
  const char* op = "quantize";
  check_float_input(input, op, "input");
  const auto fmt = coreai_format_of(output_dtype, op, "output_dtype");
  check_coreai_scale(scale, fmt, op);
  check_coreai_offsets(scale, zero_point, minval, fmt, op);
  if (zero_point.has_value()) {
    const auto st = zero_point->scalar_type();
    TORCH_CHECK_TYPE(at::isIntegralType(st, /*includeBool=*/false), "coreai_opt.", op,
                     ": zero_point has dtype ", dtype_name(st),
                     "; allowed: an integer dtype (torch.int8, torch.uint8, torch.int32, ...)");
  }
  if (minval.has_value()) {
    // input - minval runs in input's dtype, as upstream.
    TORCH_CHECK_TYPE(minval->scalar_type() == input.scalar_type(), "coreai_opt.", op,
                     ": minval has dtype ", dtype_name(minval->scalar_type()),
                     " but input has dtype ", dtype_name(input.scalar_type()),
                     "; they must be equal");
  }
  const auto sizes = sym_sizes_of(input);
  auto qparams = channel_qparams(sizes, scale, axis, op);
  auto out_sizes = sizes;
  at::ScalarType out_dtype = output_dtype;
  if (is_fp4(fmt)) {
    const auto last = sizes.empty() ? std::optional<int64_t>(1) : sizes.back().maybe_as_int();
    TORCH_CHECK_VALUE(!last.has_value() || *last % 2 == 0, "coreai_opt.", op,
                      ": FP4 codes are packed two a byte along the last dimension, which must "
                      "be even; input has shape ",
                      shape_str(c10::ArrayRef<c10::SymInt>(sizes)));
    out_sizes.back() = out_sizes.back() / 2;
    out_dtype = at::kByte;
  } else if (!fmt.is_float) {
    out_dtype = fmt.is_signed ? at::kChar : at::kByte;
  }
  const auto compute =
      fmt.is_float ? at::kFloat : c10::promoteTypes(input.scalar_type(), scale.scalar_type());
  return {fmt,
          out_dtype,
          compute,
          std::move(qparams.layout),
          std::move(qparams.q_sizes),
          std::move(out_sizes)};
}

DequantizeCheck check_dequantize(const at::Tensor& input, const at::Tensor& scale,
                                 const std::optional<at::Tensor>& zero_point,
                                 const std::optional<at::Tensor>& minval, const c10::SymInt& axis,
                                 std::optional<c10::ScalarType> input_dtype,
                                 std::optional<c10::ScalarType> output_dtype) {
  const char* op = "dequantize";
  auto args =
      check_dequantize_args(input, scale, zero_point, minval, input_dtype, output_dtype, op);
  auto qparams = channel_qparams(args.codes.sizes, scale, axis, op);
  return {args.codes.format,
          args.e8m0,
          args.out_dtype,
          std::move(qparams.layout),
          std::move(qparams.q_sizes),
          std::move(args.codes.sizes)};
}

DequantizeCheck check_blockwise_shift_scale(const at::Tensor& input, const at::Tensor& scale,
                                            const std::optional<at::Tensor>& zero_point,
                                            const std::optional<at::Tensor>& minval,
                                            std::optional<c10::ScalarType> input_dtype,
                                            std::optional<c10::ScalarType> output_dtype) {
  const char* op = "blockwise_shift_scale";
  auto args =
      check_dequantize_args(input, scale, zero_point, minval, input_dtype, output_dtype, op);
  const auto& sizes = args.codes.sizes;
  TORCH_CHECK_VALUE(scale.dim() == static_cast<int64_t>(sizes.size()), "coreai_opt.", op,
                    ": scale has ", scale.dim(), " dimensions but the input has ", sizes.size(),
                    " (packed FP4 counted unpacked); they must be equal");
  std::optional<formats::QParamLayout> layout;
  std::optional<std::vector<int64_t>> q_sizes;
  const auto xs = int_sizes(sizes);
  if (xs.has_value() && concrete(scale)) {
    q_sizes = scale.sizes().vec();
    layout = checked_qparam_layout(*xs, *q_sizes, scale, op, "scale");
  }
  return {args.codes.format, args.e8m0,          args.out_dtype,
          std::move(layout), std::move(q_sizes), std::move(args.codes.sizes)};
}

}  // namespace coreai_opt::ops
