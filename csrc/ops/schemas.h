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

// The tensor ops, as X-macro lists, so every registration block that implements a whole
// family names the same ops: X(name) expands once per op.
#define COREAI_OPT_NUMERIC_OPS(X) \
  X(fake_quantize_int)            \
  X(fake_quantize_int_backward)   \
  X(fake_quantize_float)          \
  X(fake_quantize_float_backward) \
  X(fake_quantize_lsq)            \
  X(fake_quantize_lsq_backward)   \
  X(minmax)                       \
  X(update_range)                 \
  X(choose_qparams_int)           \
  X(choose_qparams_float)         \
  X(fused_fake_quantize)          \
  X(fused_fake_quantize_backward)
#define COREAI_OPT_PACK_OPS(X) \
  X(pack)                      \
  X(unpack)
#define COREAI_OPT_TENSOR_OPS(X) COREAI_OPT_NUMERIC_OPS(X) COREAI_OPT_PACK_OPS(X)

// Registers the function of the same name for each op of a list.
#define COREAI_OPT_IMPL(name) m.impl(#name, &name);
