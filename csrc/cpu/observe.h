// CPU range observation on checked arguments, shared by the observe and fused families.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "formats/qparam_layout.h"
#include "ops/checks.h"

namespace coreai_opt::cpu {

// This batch's min / max per qparam (NaN propagates).
struct BatchRange {
  std::vector<float> lo, hi;
};
BatchRange batch_minmax(const at::Tensor& x, const formats::QParamLayout& layout);

// Folds a batch's range into the running range (float32 arrays of the qparam count).
void fold_range(const BatchRange& b, float* running_min, float* running_max,
                ops::RangeMethod method, double averaging_constant);

}  // namespace coreai_opt::cpu
