// Autograd of the qparams family: choose_qparams_int / _float are not differentiable.
#include "autograd/differentiable.h"
#include "ops/schemas.h"

TORCH_LIBRARY_IMPL(coreai_opt, Autograd, m) {
  COREAI_OPT_QPARAMS_OPS(COREAI_OPT_NON_DIFFERENTIABLE)
}
