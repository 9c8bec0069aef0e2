// CPU qparam calculation on checked arguments, shared by the qparams and fused families.
#pragma once

#include <cstdint>
#include <optional>

#include "formats/float_format.h"

namespace coreai_opt::cpu {

// Integer qparams of n ranges (formats/qparams.h); range_min / range_max replace the
// widened observed ends when given.
void int_qparams_into(const float* lo, const float* hi, int64_t n, int64_t quant_min,
                      int64_t quant_max, bool symmetric, const std::optional<double>& range_min,
                      const std::optional<double>& range_max, float* scale, int32_t* zero_point,
                      float* minval);

// Float-format scales of n ranges: max_abs / max, or the E8M0 power of two.
void float_qparams_into(const float* lo, const float* hi, int64_t n,
                        const formats::FloatFormatInfo& info, bool e8m0,
                        const std::optional<double>& range_min,
                        const std::optional<double>& range_max, float* scale);

}  // namespace coreai_opt::cpu
