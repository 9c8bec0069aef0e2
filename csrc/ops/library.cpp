// The one TORCH_LIBRARY block of the coreai_opt namespace. Each family defines its schemas in
// its own file; each device registers its kernels in its own file of the family's name
// (cpu/, meta/, reference/, autograd/).
#include <torch/library.h>

#include "eager/interceptor.h"
#include "ops/schemas.h"

TORCH_LIBRARY(coreai_opt, m) {
  coreai_opt::ops::define_fake_quantize(m);
  coreai_opt::ops::define_lsq(m);
  coreai_opt::ops::define_observe(m);
  coreai_opt::ops::define_qparams(m);
  coreai_opt::ops::define_fused(m);
  coreai_opt::ops::define_bound_fused(m);
  coreai_opt::ops::define_pack(m);
  coreai_opt::ops::define_coreai_export(m);
  coreai_opt::ops::define_formats(m);
  coreai_opt::ops::define_channel(m);
  coreai_opt::eager::define_eager(m);
}
