// Per-family schema definitions, called from the one TORCH_LIBRARY block in library.cpp.
#pragma once

#include <torch/library.h>

namespace coreai_opt::ops {

void define_fake_quantize_int(torch::Library& m);
void define_fake_quantize_float(torch::Library& m);
void define_fake_quantize_lsq(torch::Library& m);
void define_observe(torch::Library& m);
void define_fused(torch::Library& m);
void define_pack(torch::Library& m);
void define_formats(torch::Library& m);

}  // namespace coreai_opt::ops
