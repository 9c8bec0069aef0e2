// CPU fake-quantize on checked arguments, shared by the fake_quantize, lsq and fused
// families: each op checks its own arguments (ops/checks.h), then calls these.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "cpu/kernels/kernels.h"
#include "cpu/qparam_buffer.h"

namespace coreai_opt::cpu {

// The qparams of an integer fake-quantize as float32 arrays: scale (checked positive), the
// quant offset (zero points read in place when int32 or float32, else converted) and, for
// the minval form, the float offset.
class IntQParams {
 public:
  static IntQParams of(const at::Tensor& scale, const std::optional<at::Tensor>& zero_point,
                       const std::optional<at::Tensor>& minval, int64_t quant_min,
                       int64_t quant_max, const char* op);
  // zp form with zero points already rounded (LSQ).
  static IntQParams rounded(const at::Tensor& scale, QParamBuffer zero_point, int64_t quant_min,
                            int64_t quant_max, const char* op);
  const IntParams& params() const { return params_; }

 private:
  QParamBuffer scale_;
  QParamBuffer quant_offset_;  // converted or rounded zero points, when not read in place
  QParamBuffer float_offset_;
  IntParams params_{};
};

// Scales of a float-format fake-quantize as a float32 array (checked positive).
class FloatQParams {
 public:
  static FloatQParams of(const at::Tensor& scale, formats::FloatFormat format, const char* op);
  FloatParams params() const { return {scale_.data(), format_}; }

 private:
  QParamBuffer scale_;
  formats::FloatFormat format_ = formats::FloatFormat::E4M3FN;
};

}  // namespace coreai_opt::cpu
