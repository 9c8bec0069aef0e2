// Round half to even, the rounding torch.round uses. std::nearbyint honours the current
// rounding mode, which is round-to-nearest-even unless a program changed it; we never do.
#pragma once

#include <cmath>

#include "formats/bits.h"

namespace coreai_opt::formats {

COREAI_HD float round_half_even(float v) {
#if defined(__CUDA_ARCH__)
  return rintf(v);
#else
  return std::nearbyint(v);
#endif
}

}  // namespace coreai_opt::formats
