// Autograd of the observe family: minmax and update_range are not differentiable.
#include "autograd/differentiable.h"
#include "ops/schemas.h"

TORCH_LIBRARY_IMPL(coreai_opt, Autograd, m) {
  COREAI_OPT_OBSERVE_OPS(COREAI_OPT_NON_DIFFERENTIABLE)
}
