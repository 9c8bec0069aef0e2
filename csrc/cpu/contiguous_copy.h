// A contiguous copy of a float32 tensor that is a transposed view: what the fake-quantize
// ops do to a grad laid out unlike x (memory_order.h). ATen's strided copy walks such a view
// element by element; a batched 2-D transpose in tiles runs at about the speed of a copy.
#pragma once

#include <ATen/core/Tensor.h>

namespace coreai_opt::cpu {

// v itself when contiguous; a contiguous copy of v otherwise (same values and shape).
at::Tensor contiguous_copy(const at::Tensor& v);

}  // namespace coreai_opt::cpu
