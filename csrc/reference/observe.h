// Reference range observation on checked arguments, shared by the observe and fused families.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

#include "ops/checks.h"

namespace coreai_opt::reference {

// This batch's (min, max) per qparam, float32 of the qparam shape.
std::pair<at::Tensor, at::Tensor> batch_range(const at::Tensor& x,
                                              const std::vector<int64_t>& q_sizes);

// The running range after folding in a batch's (lo, hi).
std::pair<at::Tensor, at::Tensor> folded_range(const at::Tensor& lo, const at::Tensor& hi,
                                               const at::Tensor& running_min,
                                               const at::Tensor& running_max,
                                               ops::RangeMethod method, double averaging_constant);

}  // namespace coreai_opt::reference
