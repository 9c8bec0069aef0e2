// Argument checks shared by every kernel of an op (CPU, Meta, reference), so each device
// reports the same errors. Checks that need tensor values (NaN / non-positive scales)
// are CPU-only and live with the CPU kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <optional>
#include <string>
#include <vector>

#include "formats/float_format.h"
#include "formats/qparam_layout.h"

namespace coreai_opt::ops {

// A dtype as Python users write it, e.g. "torch.float32", for error messages.
std::string dtype_name(c10::ScalarType dtype);

// What a dtype argument asks for: an integer range or a float format.
struct QuantFormat {
  bool is_float = false;
  formats::FloatFormat float_format = formats::FloatFormat::E4M3FN;
  int bits = 8;
  bool is_signed = true;
};

// Maps torch.int8 / uint8 / int4 / uint4 / int2 / uint2 / float8_e4m3fn / float8_e5m2 /
// float4_e2m1fn_x2; any other dtype is an error naming the argument and the allowed set.
QuantFormat quant_format_of(c10::ScalarType dtype, const char* op, const char* arg = "dtype");
QuantFormat float_format_of(c10::ScalarType dtype, const char* op);

// x must be float16 / bfloat16 / float32 / float64.
void check_float_input(const at::Tensor& x, const char* op, const char* arg = "x");

// The qparam tensor's shape must encode a granularity of x (see qparam_layout.h). A 0-d
// qparam is per-tensor. Returns the canonical layout.
formats::QParamLayout check_qparam_shape(const at::Tensor& x, const at::Tensor& q, const char* op,
                                         const char* arg);

// `other` must have exactly `ref`'s shape (zero_point / minval vs scale).
void check_same_shape(const at::Tensor& ref, const at::Tensor& other, const char* op,
                      const char* ref_arg, const char* other_arg);

// quant_min < quant_max, both inside an int8 / uint8 container.
void check_int_range(int64_t quant_min, int64_t quant_max, const char* op);

// block_size per dimension; returns the reduced (qparam) sizes.
std::vector<int64_t> check_block_size(const at::Tensor& x, c10::IntArrayRef block_size,
                                      const char* op);

// method of update_range / fused_fake_quantize.
enum class RangeMethod { Static, MovingAverage, GlobalMinMax };
RangeMethod range_method_of(c10::string_view method, const char* op);

// float_range ends (range_min <= 0 <= range_max, range_min < range_max when both given).
void check_float_range(const std::optional<double>& range_min,
                       const std::optional<double>& range_max, const char* op);

// An integer format's [quant_min, quant_max] must lie inside the dtype's own range.
void check_int_range_fits(const QuantFormat& fmt, int64_t quant_min, int64_t quant_max,
                          c10::ScalarType dtype, const char* op);

// The scalar arguments of fused_fake_quantize, checked the same way on every device.
struct FusedArgs {
  QuantFormat format;
  RangeMethod method;
};
FusedArgs check_fused_args(const at::Tensor& x, c10::ScalarType dtype, int64_t quant_min,
                           int64_t quant_max, const std::optional<double>& range_min,
                           const std::optional<double>& range_max, c10::string_view method,
                           const char* op);

// Qparam shape of x's rank as a plain vector (0-d qparams count as all ones).
std::vector<int64_t> qparam_sizes(const at::Tensor& x, const at::Tensor& q);

}  // namespace coreai_opt::ops
