// Reference qparam calculation on checked arguments, shared by the qparams and fused families.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "formats/float_format.h"

namespace coreai_opt::reference {

// (scale, zero_point int32, minval) of float32 ranges; all float32 except zero_point.
std::tuple<at::Tensor, at::Tensor, at::Tensor> int_qparams(const at::Tensor& min32,
                                                           const at::Tensor& max32, int64_t qmin,
                                                           int64_t qmax, bool symmetric,
                                                           const std::optional<double>& rmin,
                                                           const std::optional<double>& rmax);

// Float-format scales of float32 ranges (float32; powers of two when e8m0).
at::Tensor float_qparams(const at::Tensor& min32, const at::Tensor& max32,
                         const formats::FloatFormatInfo& info, bool e8m0,
                         const std::optional<double>& rmin, const std::optional<double>& rmax);

}  // namespace coreai_opt::reference
