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
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble,
                   "coreai_opt.", op, ": ", arg, " has dtype ", dtype_name(st),
                   "; allowed: torch.float32, torch.float16, torch.bfloat16, torch.float64");
}

// Scales of float formats may also be E8M0 codes (the OCP MX block scales).
void check_float_format_scale(const at::Tensor& scale, const char* op) {
  const auto st = scale.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 ||
                       st == at::kDouble || st == at::kFloat8_e8m0fnu,
                   "coreai_opt.", op, ": scale has dtype ", dtype_name(st),
                   "; allowed: torch.float32, torch.float16, torch.bfloat16, torch.float64, "
                   "torch.float8_e8m0fnu");
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

// The qparam tensor's shape must encode a granularity of x (see qparam_layout.h).
std::optional<formats::QParamLayout> qparam_layout(const at::Tensor& x, const at::Tensor& q,
                                                   const char* op, const char* arg) {
  if (!concrete(x) || !concrete(q)) return std::nullopt;
  const auto qs = qparam_sizes(x, q);
  const auto xs = x.sizes().vec();
  const std::string why = formats::qparam_shape_error(xs, qs);
  TORCH_CHECK_VALUE(why.empty(), "coreai_opt.", op, ": ", arg, " of shape ", shape_str(q.sizes()),
                    " fits no granularity of an input of shape ", shape_str(x.sizes()), ": ", why,
                    ". Each dimension must be 1 (shared), the input's size (per index) or "
                    "size / block (per block); a 0-d tensor means per-tensor.");
  return formats::make_qparam_layout(xs, qs);
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
                                     const std::optional<double>& range_max) {
  const char* op = "fused_fake_quantize";
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

}  // namespace coreai_opt::ops
