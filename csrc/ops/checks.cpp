#include "ops/checks.h"

#include <c10/util/Exception.h>

#include "formats/int_range.h"

namespace coreai_opt::ops {

namespace {

std::string shape_str(c10::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

}  // namespace

std::string dtype_name(c10::ScalarType dtype) {
  return "torch." + std::string(c10::getDtypeNames(dtype).first);
}

QuantFormat quant_format_of(c10::ScalarType dtype, const char* op, const char* arg) {
  using ST = c10::ScalarType;
  QuantFormat f;
  switch (dtype) {
    case ST::Char:
      f.bits = 8;
      f.is_signed = true;
      return f;
    case ST::Byte:
      f.bits = 8;
      f.is_signed = false;
      return f;
    case ST::Int4:
      f.bits = 4;
      f.is_signed = true;
      return f;
    case ST::UInt4:
      f.bits = 4;
      f.is_signed = false;
      return f;
    case ST::Int2:
      f.bits = 2;
      f.is_signed = true;
      return f;
    case ST::UInt2:
      f.bits = 2;
      f.is_signed = false;
      return f;
    case ST::Float8_e4m3fn:
      f.is_float = true;
      f.float_format = formats::FloatFormat::E4M3FN;
      f.bits = 8;
      return f;
    case ST::Float8_e5m2:
      f.is_float = true;
      f.float_format = formats::FloatFormat::E5M2;
      f.bits = 8;
      return f;
    case ST::Float4_e2m1fn_x2:
      f.is_float = true;
      f.float_format = formats::FloatFormat::E2M1;
      f.bits = 4;
      return f;
    default:
      TORCH_CHECK_VALUE(false, "coreai_opt.", op, ": ", arg, " is ", dtype_name(dtype),
                        "; allowed: torch.int8, torch.uint8, torch.int4, torch.uint4, "
                        "torch.int2, torch.uint2, torch.float8_e4m3fn, torch.float8_e5m2, "
                        "torch.float4_e2m1fn_x2");
  }
  return f;
}

QuantFormat float_format_of(c10::ScalarType dtype, const char* op) {
  using ST = c10::ScalarType;
  TORCH_CHECK_VALUE(
      dtype == ST::Float8_e4m3fn || dtype == ST::Float8_e5m2 || dtype == ST::Float4_e2m1fn_x2,
      "coreai_opt.", op, ": dtype is ", dtype_name(dtype),
      "; allowed: torch.float8_e4m3fn, torch.float8_e5m2, "
      "torch.float4_e2m1fn_x2");
  return quant_format_of(dtype, op);
}

void check_float_input(const at::Tensor& x, const char* op, const char* arg) {
  const auto st = x.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble,
                   "coreai_opt.", op, ": ", arg, " has dtype ", dtype_name(st),
                   "; allowed: torch.float32, torch.float16, torch.bfloat16, torch.float64");
}

std::vector<int64_t> qparam_sizes(const at::Tensor& x, const at::Tensor& q) {
  if (q.dim() == 0) return std::vector<int64_t>(x.dim(), 1);
  return q.sizes().vec();
}

formats::QParamLayout check_qparam_shape(const at::Tensor& x, const at::Tensor& q, const char* op,
                                         const char* arg) {
  const auto qs = qparam_sizes(x, q);
  const auto xs = x.sizes().vec();
  const std::string why = formats::qparam_shape_error(xs, qs);
  TORCH_CHECK_VALUE(why.empty(), "coreai_opt.", op, ": ", arg, " of shape ", shape_str(q.sizes()),
                    " fits no granularity of an input of shape ", shape_str(x.sizes()), ": ", why,
                    ". Each dimension must be 1 (shared), the input's size (per index) or "
                    "size / block (per block); a 0-d tensor means per-tensor.");
  return formats::make_qparam_layout(xs, qs);
}

void check_same_shape(const at::Tensor& ref, const at::Tensor& other, const char* op,
                      const char* ref_arg, const char* other_arg) {
  TORCH_CHECK_VALUE(ref.sizes() == other.sizes(), "coreai_opt.", op, ": ", other_arg, " has shape ",
                    shape_str(other.sizes()), " but ", ref_arg, " has shape ",
                    shape_str(ref.sizes()), "; they must be equal");
}

void check_int_range(int64_t quant_min, int64_t quant_max, const char* op) {
  TORCH_CHECK_VALUE(quant_min < quant_max, "coreai_opt.", op, ": quant_min (", quant_min,
                    ") must be smaller than quant_max (", quant_max, ")");
  TORCH_CHECK_VALUE(
      quant_min >= formats::kIntContainerMin && quant_max <= formats::kIntContainerMax,
      "coreai_opt.", op, ": [quant_min, quant_max] = [", quant_min, ", ", quant_max,
      "] must lie inside [", formats::kIntContainerMin, ", ", formats::kIntContainerMax,
      "] (an int8 or uint8 container)");
}

std::vector<int64_t> check_block_size(const at::Tensor& x, c10::IntArrayRef block_size,
                                      const char* op) {
  std::vector<int64_t> q;
  const std::string why = formats::qparam_sizes_from_blocks(x.sizes().vec(), block_size.vec(), q);
  TORCH_CHECK_VALUE(why.empty(), "coreai_opt.", op, ": ", why, " (input shape ",
                    shape_str(x.sizes()), ", block_size ", shape_str(block_size), ")");
  return q;
}

RangeMethod range_method_of(c10::string_view method, const char* op) {
  if (method == "static") return RangeMethod::Static;
  if (method == "moving_average") return RangeMethod::MovingAverage;
  if (method == "global_minmax") return RangeMethod::GlobalMinMax;
  TORCH_CHECK_VALUE(false, "coreai_opt.", op, ": method is '", std::string(method),
                    "'; allowed: 'static', 'moving_average', 'global_minmax'");
  return RangeMethod::Static;
}

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

void check_int_range_fits(const ops::QuantFormat& fmt, int64_t quant_min, int64_t quant_max,
                          c10::ScalarType dtype, const char* op) {
  const auto r = formats::int_range(fmt.bits, fmt.is_signed, false);
  TORCH_CHECK_VALUE(quant_min >= r.qmin && quant_max <= r.qmax, "coreai_opt.", op,
                    ": [quant_min, quant_max] = [", quant_min, ", ", quant_max, "] does not fit ",
                    dtype_name(dtype), ", whose range is [", r.qmin, ", ", r.qmax, "]");
}

FusedArgs check_fused_args(const at::Tensor& x, c10::ScalarType dtype, int64_t quant_min,
                           int64_t quant_max, const std::optional<double>& range_min,
                           const std::optional<double>& range_max, c10::string_view method,
                           const char* op) {
  check_float_input(x, op);
  const auto fmt = quant_format_of(dtype, op);
  if (!fmt.is_float) {
    check_int_range(quant_min, quant_max, op);
    check_int_range_fits(fmt, quant_min, quant_max, dtype, op);
  }
  check_float_range(range_min, range_max, op);
  return {fmt, range_method_of(method, op)};
}

}  // namespace coreai_opt::ops
