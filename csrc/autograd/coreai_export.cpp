// Autograd of the coreai_export family: quantize, dequantize and blockwise_shift_scale are
// not differentiable (their codes are integers or packed bytes; finalize runs them on
// frozen tensors).
#include "autograd/differentiable.h"
#include "ops/schemas.h"

TORCH_LIBRARY_IMPL(coreai_opt, Autograd, m) {
  COREAI_OPT_COREAI_EXPORT_OPS(COREAI_OPT_NON_DIFFERENTIABLE)
}
