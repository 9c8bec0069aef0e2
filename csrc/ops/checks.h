// One argument check per op, called first by every device's kernel of that op (CPU, Meta,
// the CompositeExplicitAutograd reference, CUDA), so every device refuses bad input with
// the same exception type and message; torch.compile, which runs the Meta kernel first,
// then fails exactly as an eager call does.
//
// The checks need no tensor data: dtypes, shapes, ranks, scalar arguments. With symbolic
// sizes (Meta kernels under torch.compile / torch.export) the shape comparisons are skipped
// and the real kernel makes them at run time. Checks of values (a NaN or negative scale, a
// pack code out of range) read data and stay with the CPU kernels: on CUDA they would force
// a host sync.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/core/SymInt.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/string_view.h>

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

// FP4 (float4_e2m1fn_x2): its codes are packed two a byte.
inline bool is_fp4(const QuantFormat& f) {
  return f.is_float && f.float_format == formats::FloatFormat::E2M1;
}

// The floating-point dtypes the ops take for inputs, gradients and float scales (and that
// eager mode fake-quantizes), and their names for error messages.
inline bool is_float_input_dtype(c10::ScalarType st) {
  return st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble;
}
constexpr const char* kFloatInputDtypes =
    "torch.float32, torch.float16, torch.bfloat16, torch.float64";

// Maps torch.int8 / uint8 / int4 / uint4 / int2 / uint2 / float8_e4m3fn / float8_e5m2 /
// float4_e2m1fn_x2; any other dtype is an error naming the argument and the allowed set.
QuantFormat quant_format_of(c10::ScalarType dtype, const char* op, const char* arg = "dtype");

// How update_range / fused_fake_quantize fold a batch's range into the running range.
enum class RangeMethod { Static, MovingAverage, GlobalMinMax };

// Qparam shape of x's rank as a plain vector (0-d qparams count as all ones).
std::vector<int64_t> qparam_sizes(const at::Tensor& x, const at::Tensor& q);

// ---- the per-op checks --------------------------------------------------------------------
// Each returns what its kernels need from the checked arguments. A layout or a reduced
// shape is nullopt only when sizes are symbolic (never on CPU or CUDA).

std::optional<formats::QParamLayout> check_fake_quantize_int(
    const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero_point,
    const std::optional<at::Tensor>& minval, int64_t quant_min, int64_t quant_max);
std::optional<formats::QParamLayout> check_fake_quantize_int_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const std::optional<at::Tensor>& zero_point, const std::optional<at::Tensor>& minval,
    int64_t quant_min, int64_t quant_max);

// A format and the qparam layout of its scale (float fake-quantize; fused backward).
struct FloatQuantCheck {
  QuantFormat format;
  std::optional<formats::QParamLayout> layout;
};
FloatQuantCheck check_fake_quantize_float(const at::Tensor& x, const at::Tensor& scale,
                                          c10::ScalarType dtype);
FloatQuantCheck check_fake_quantize_float_backward(const at::Tensor& grad, const at::Tensor& x,
                                                   const at::Tensor& scale, c10::ScalarType dtype);

std::optional<formats::QParamLayout> check_fake_quantize_lsq(const at::Tensor& x,
                                                             const at::Tensor& scale,
                                                             const at::Tensor& zero_point,
                                                             int64_t quant_min, int64_t quant_max);
std::optional<formats::QParamLayout> check_fake_quantize_lsq_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max);

// Reduced (qparam) sizes x.size(d) / block_size[d].
std::optional<std::vector<int64_t>> check_minmax(const at::Tensor& x,
                                                 c10::SymIntArrayRef block_size);

struct RangeCheck {
  RangeMethod method;
  std::optional<std::vector<int64_t>> q_sizes;
};
RangeCheck check_update_range(const at::Tensor& x, const at::Tensor& running_min,
                              const at::Tensor& running_max, c10::SymIntArrayRef block_size,
                              c10::string_view method, double averaging_constant);

void check_choose_qparams_int(const at::Tensor& min, const at::Tensor& max, int64_t quant_min,
                              int64_t quant_max, const std::optional<double>& range_min,
                              const std::optional<double>& range_max);
QuantFormat check_choose_qparams_float(const at::Tensor& min, const at::Tensor& max,
                                       c10::ScalarType dtype,
                                       const std::optional<double>& range_min,
                                       const std::optional<double>& range_max);

struct FusedCheck {
  QuantFormat format;
  RangeMethod method;
  std::optional<std::vector<int64_t>> q_sizes;
};
FusedCheck check_fused_fake_quantize(
    const at::Tensor& x, const at::Tensor& observer_on, const at::Tensor& fake_quant_on,
    const at::Tensor& running_min, const at::Tensor& running_max, const at::Tensor& scale,
    const at::Tensor& zero_point, const at::Tensor& minval, c10::SymIntArrayRef block_size,
    c10::ScalarType dtype, int64_t quant_min, int64_t quant_max, c10::string_view method,
    double averaging_constant, const std::optional<double>& range_min,
    const std::optional<double>& range_max, const char* op = "fused_fake_quantize");
// Checks the arguments of the backward it runs when fake_quant_on is set, whatever its
// value (the Meta kernel cannot read it).
FloatQuantCheck check_fused_fake_quantize_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& fake_quant_on,
    const at::Tensor& scale, const at::Tensor& zero_point, const at::Tensor& minval,
    c10::ScalarType dtype, int64_t quant_min, int64_t quant_max, bool use_minval);

// fake_quantize_mask_backward: float grad, bool mask of grad's shape, one device.
// (also its in-place form, under that op's name)
void check_fake_quantize_mask_backward(const at::Tensor& grad, const at::Tensor& mask,
                                       const char* op = "fake_quantize_mask_backward");

// channel_scale_shift: x of rank >= 2 and a float dtype; scale (and shift, when given) 1-D
// with x.size(1) entries, x's dtype and device.
void check_channel_scale_shift(const at::Tensor& x, const at::Tensor& scale,
                               const std::optional<at::Tensor>& shift);
// channel_scale_shift_backward: the forward's checks, and grad of x's shape.
void check_channel_scale_shift_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& scale);

// pack: the format and the packed sizes (symbolic sizes pass through).
struct PackCheck {
  QuantFormat format;
  std::vector<c10::SymInt> out_sizes;
};
PackCheck check_pack(const at::Tensor& q, c10::ScalarType dtype);
PackCheck check_unpack(const at::Tensor& packed, c10::ScalarType dtype);

// ---- coreai_export: quantize / dequantize / blockwise_shift_scale -------------------------

// quantize: the format, the result's dtype (int8 / uint8 container, float8, uint8 for FP4)
// and sizes (FP4 halves the last dimension), the dtype the integer formula runs in
// (promote_types(input, scale); float32 for float formats), and the qparam layout and sizes
// (the input's rank; per tensor or per channel along axis) over the input's shape.
struct QuantizeCheck {
  QuantFormat format;
  at::ScalarType out_dtype;
  at::ScalarType compute_dtype;
  std::optional<formats::QParamLayout> layout;
  std::optional<std::vector<int64_t>> q_sizes;
  std::vector<c10::SymInt> out_sizes;
};
QuantizeCheck check_quantize(const at::Tensor& input, const at::Tensor& scale,
                             c10::ScalarType output_dtype,
                             const std::optional<at::Tensor>& zero_point,
                             const std::optional<at::Tensor>& minval, const c10::SymInt& axis);

// dequantize / blockwise_shift_scale: the logical format of the codes, whether the scale is
// E8M0 (then the formula runs in float32), the result's dtype and its (logical) sizes, and
// the qparam layout and sizes (the input's rank) over the logical shape.
struct DequantizeCheck {
  QuantFormat format;
  bool e8m0 = false;
  at::ScalarType out_dtype;
  std::optional<formats::QParamLayout> layout;
  std::optional<std::vector<int64_t>> q_sizes;
  std::vector<c10::SymInt> out_sizes;
};
DequantizeCheck check_dequantize(const at::Tensor& input, const at::Tensor& scale,
                                 const std::optional<at::Tensor>& zero_point,
                                 const std::optional<at::Tensor>& minval, const c10::SymInt& axis,
                                 std::optional<c10::ScalarType> input_dtype,
                                 std::optional<c10::ScalarType> output_dtype);
DequantizeCheck check_blockwise_shift_scale(const at::Tensor& input, const at::Tensor& scale,
                                            const std::optional<at::Tensor>& zero_point,
                                            const std::optional<at::Tensor>& minval,
                                            std::optional<c10::ScalarType> input_dtype,
                                            std::optional<c10::ScalarType> output_dtype);

}  // namespace coreai_opt::ops
