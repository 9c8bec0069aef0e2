// The one TORCH_LIBRARY block of the coreai_opt namespace. Each family defines its schemas in
// its own file; kernels for each dispatch key are registered next to their implementations
// (cpu/, meta/, reference/, autograd/).
#include <torch/library.h>

#include "ops/schemas.h"

TORCH_LIBRARY(coreai_opt, m) {
  coreai_opt::ops::define_fake_quantize_int(m);
  coreai_opt::ops::define_fake_quantize_float(m);
  coreai_opt::ops::define_fake_quantize_lsq(m);
  coreai_opt::ops::define_observe(m);
  coreai_opt::ops::define_fused(m);
  coreai_opt::ops::define_pack(m);
  coreai_opt::ops::define_formats(m);
}
