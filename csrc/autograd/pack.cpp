// Autograd of the pack family: pack and unpack are not differentiable.
#include "autograd/differentiable.h"
#include "ops/schemas.h"

TORCH_LIBRARY_IMPL(coreai_opt, Autograd, m) { COREAI_OPT_PACK_OPS(COREAI_OPT_NON_DIFFERENTIABLE) }
