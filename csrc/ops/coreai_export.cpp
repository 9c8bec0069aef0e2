// Core AI export schemas: quantize / dequantize / blockwise_shift_scale with the arguments
// and numerics of coreai-torch 0.4.3's torch.ops.coreai.{quantize, dequantize,
// constexpr_blockwise_shift_scale}, so finalize can emit the same graph with or without
// coreai-torch installed (tests/ops/test_ops_coreai.py compares the two bit for bit).
//
// Formats: integer codes of int1..int8 / uint1..uint8 live in int8 / uint8 containers (the
// logical dtype only sets the range); FP8 codes in float8_e4m3fn / float8_e5m2 tensors;
// FP4 (float4_e2m1fn_x2) codes packed two a byte in a uint8 tensor, the even index in the
// low nibble (as coreai-torch's Float4Tensor and coreai_opt::pack). Integer codes are not
// range-checked, as upstream.
//
// The numerics follow upstream's dtypes, not the float32 rule of the fake-quantize ops: a
// different compute dtype changes bits. round = half to even.
#include "ops/schemas.h"

namespace coreai_opt::ops {

void define_coreai_export(torch::Library& m) {
  // quantize(input, scale, output_dtype, zero_point?, minval?, axis) -> codes
  //   scale: 0-d or one element (per tensor), or 1-D with input.size(axis) entries (per
  //   channel); zero_point / minval have scale's shape; passing both is an error.
  //   Integer output_dtype, computed in promote_types(input, scale):
  //     zp form      q = clamp(round(input / s) + zp, qmin, qmax)    (zp: an integer dtype)
  //     minval form  q = clamp(round((input - m) / s) + qmin, qmin, qmax)
  //                  (input - m in input's dtype; m must have input's dtype)
  //     neither      q = clamp(round(input / s), qmin, qmax)
  //     NaN gives code 0 (torch's float -> int conversion); the result is int8 for signed
  //     output dtypes, uint8 for unsigned.
  //   Float output_dtype (no offsets): v = clamp(float32(input) / float32(s), -max, max),
  //     cast with round to nearest even; float8 result, or FP4 packed into uint8 with the
  //     last dimension halved (it must be even). scale may be float8_e8m0fnu here.
  m.def(
      "quantize(Tensor input, Tensor scale, ScalarType output_dtype, Tensor? zero_point=None, "
      "Tensor? minval=None, SymInt axis=0) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // dequantize(input, scale, zero_point?, minval?, axis, input_dtype?, output_dtype?) -> y
  //   scale as for quantize. input: int8 / uint8 codes (input_dtype names the logical
  //   integer dtype, default the container's; its range must fit the container), a float8
  //   tensor, or FP4 packed in uint8 (input_dtype=torch.float4_e2m1fn_x2) or a
  //   float4_e2m1fn_x2 tensor. Integer codes compute in the scale's dtype S, each operation
  //   rounded to S:
  //     zp form      y = (q - zp) * s          (zero_point has input's dtype)
  //     minval form  y = (q - qmin) * s + m    (m has scale's dtype; needs input_dtype)
  //     neither      y = q * s
  //   float codes in float32 whatever S is: y = S(float32(q) * float32(s)). The result has dtype S,
  //   cast to output_dtype when that is given. E8M0 scales (float8_e8m0fnu, float formats only)
  //   need output_dtype: y = output_dtype(float32(q) * s).
  m.def(
      "dequantize(Tensor input, Tensor scale, Tensor? zero_point=None, Tensor? minval=None, "
      "SymInt axis=0, ScalarType? input_dtype=None, ScalarType? output_dtype=None) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // blockwise_shift_scale(input, scale, zero_point?, minval?, input_dtype?, output_dtype?)
  //   dequantize with a scale of the input's rank (for FP4, the unpacked rank and shape):
  //   each scale dimension divides the input's, block = input.size(d) / scale.size(d).
  m.def(
      "blockwise_shift_scale(Tensor input, Tensor scale, Tensor? zero_point=None, "
      "Tensor? minval=None, ScalarType? input_dtype=None, ScalarType? output_dtype=None) "
      "-> Tensor",
      {at::Tag::pt2_compliant_tag});
}

}  // namespace coreai_opt::ops
