// Reference kernels of the coreai_export family: the shared argument check, then the
// formulas in plain ATen ops in the dtypes coreai-torch computes in (see ops/coreai_export.cpp),
// so any device computes what the CPU kernels do. FP4 goes through coreai_opt::pack /
// unpack, the one FP4 encoding. No value checks and no host syncs.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "formats/float_format.h"
#include "formats/int_range.h"
#include "ops/checks.h"
#include "ops/schemas.h"
#include "reference/fake_quantize.h"

namespace coreai_opt::reference {

namespace {

using PackSig = at::Tensor(const at::Tensor&, c10::ScalarType);

c10::TypedOperatorHandle<PackSig> pack_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<PackSig>();
}

// FP4 values (float) -> codes packed two a byte, and back, through the pack family's ops.
at::Tensor fp4_pack(const at::Tensor& values) {
  static const auto op = pack_op("coreai_opt::pack");
  return op.call(values, at::kFloat4_e2m1fn_x2);
}
at::Tensor fp4_unpack(const at::Tensor& packed) {
  static const auto op = pack_op("coreai_opt::unpack");
  return op.call(packed, at::kFloat4_e2m1fn_x2);
}

at::Tensor quantize(const at::Tensor& input, const at::Tensor& scale, c10::ScalarType output_dtype,
                    const std::optional<at::Tensor>& zero_point,
                    const std::optional<at::Tensor>& minval, c10::SymInt axis) {
  const auto c = ops::check_quantize(input, scale, output_dtype, zero_point, minval, axis);
  const auto sizes = input.sizes();
  const auto v = blocked_view(sizes, *c.q_sizes);
  const auto x = input.reshape(v.x_shape);
  const auto q = [&](const at::Tensor& t) { return t.reshape(v.q_shape); };
  if (c.format.is_float) {
    // float32 whatever the input's dtype, as upstream; clamp keeps NaN.
    const double mx = formats::float_format_info(c.format.float_format).max_value;
    const auto t = at::clamp(x.to(at::kFloat) / q(scale).to(at::kFloat), -mx, mx).reshape(sizes);
    return ops::is_fp4(c.format) ? fp4_pack(t) : t.to(output_dtype).contiguous();
  }
  const auto r = formats::int_range(c.format.bits, c.format.is_signed, false);
  const auto shifted = minval.has_value() ? x - q(*minval) : x;  // in input's dtype
  auto t = at::round(shifted.to(c.compute_dtype) / q(scale).to(c.compute_dtype));
  if (zero_point.has_value()) {
    t = t + q(*zero_point);
  } else if (minval.has_value()) {
    t = t + r.qmin;
  }
  return at::clamp(t, r.qmin, r.qmax).to(c.out_dtype).reshape(sizes).contiguous();
}

// dequantize and blockwise_shift_scale once checked: q (logical values) viewed blockwise.
at::Tensor dequantize_checked(const at::Tensor& input, const at::Tensor& scale,
                              const std::optional<at::Tensor>& zero_point,
                              const std::optional<at::Tensor>& minval,
                              const ops::DequantizeCheck& c) {
  const auto sizes = c10::asIntArrayRefUnchecked(c.out_sizes);
  const auto v = blocked_view(sizes, *c.q_sizes);
  const auto q = [&](const at::Tensor& t) { return t.reshape(v.q_shape); };
  // FP4 codes unpack to float32 values, exact in every result dtype.
  const auto codes =
      (ops::is_fp4(c.format) ? fp4_unpack(input.view(at::kByte)) : input).reshape(v.x_shape);
  if (c.e8m0) {
    return (codes.to(at::kFloat) * q(scale).to(at::kFloat)).to(c.out_dtype).reshape(sizes);
  }
  const auto s_dtype = scale.scalar_type();
  const auto s = q(scale);
  at::Tensor y;
  if (c.format.is_float) {
    y = (codes.to(at::kFloat) * s.to(at::kFloat)).to(s_dtype);
  } else if (zero_point.has_value()) {
    y = (codes.to(at::kInt) - q(*zero_point).to(at::kInt)).to(s_dtype) * s;
  } else if (minval.has_value()) {
    const auto qmin = formats::int_range(c.format.bits, c.format.is_signed, false).qmin;
    y = (codes.to(at::kInt) - qmin).to(s_dtype) * s + q(*minval);
  } else {
    y = codes.to(s_dtype) * s;
  }
  return y.to(c.out_dtype).reshape(sizes).contiguous();
}

at::Tensor dequantize(const at::Tensor& input, const at::Tensor& scale,
                      const std::optional<at::Tensor>& zero_point,
                      const std::optional<at::Tensor>& minval, c10::SymInt axis,
                      std::optional<c10::ScalarType> input_dtype,
                      std::optional<c10::ScalarType> output_dtype) {
  const auto c =
      ops::check_dequantize(input, scale, zero_point, minval, axis, input_dtype, output_dtype);
  return dequantize_checked(input, scale, zero_point, minval, c);
}

at::Tensor blockwise_shift_scale(const at::Tensor& input, const at::Tensor& scale,
                                 const std::optional<at::Tensor>& zero_point,
                                 const std::optional<at::Tensor>& minval,
                                 std::optional<c10::ScalarType> input_dtype,
                                 std::optional<c10::ScalarType> output_dtype) {
  const auto c =
      ops::check_blockwise_shift_scale(input, scale, zero_point, minval, input_dtype, output_dtype);
  return dequantize_checked(input, scale, zero_point, minval, c);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CompositeExplicitAutograd, m) {
  COREAI_OPT_COREAI_EXPORT_OPS(COREAI_OPT_IMPL)
}

}  // namespace coreai_opt::reference
