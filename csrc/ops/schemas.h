// Per-family schema definitions, called from the one TORCH_LIBRARY block in library.cpp, and
// the op lists each family's kernels register.
//
// Every family has one file of the same name in each folder: ops/ (schemas and their
// comments), cpu/, meta/, reference/, autograd/ (and cuda/ with cuda_host/ once CUDA kernels
// land): fake_quantize, lsq, observe, qparams, fused, pack, coreai_export, channel.
#pragma once

#include <torch/library.h>

namespace coreai_opt::ops {

void define_fake_quantize(torch::Library& m);
void define_lsq(torch::Library& m);
void define_observe(torch::Library& m);
void define_qparams(torch::Library& m);
void define_fused(torch::Library& m);
void define_bound_fused(torch::Library& m);
void define_pack(torch::Library& m);
void define_coreai_export(torch::Library& m);
void define_formats(torch::Library& m);
void define_channel(torch::Library& m);

// Defines an op whose outputs of x's shape take x's layout (torch.empty_like) and whose
// kernels run in any dense layout without a copy: the fake-quantize ops (their backward ops
// are defined by def_layout_preserving_backward, below). The flexible_layout tag lets
// Inductor hand them the layout it picked (channels_last after a conv) instead of converting
// to the traced strides and back around every fake-quantizer; the Meta kernels give the
// output strides for the layout it picks.
inline void def_layout_preserving(torch::Library& m, const char* schema) {
  m.def(schema, {at::Tag::pt2_compliant_tag, at::Tag::flexible_layout});
}

// Defines the backward op of a layout-preserving op: (grad, x, ...) -> grad_x in x's layout.
// Its kernels run in x's memory order, so a grad laid out otherwise is first transposed into
// it (memory_order.h). Tagged needs_fixed_stride_order rather than flexible_layout: Inductor
// then hands it grad in the stride order traced for it, which is x's (the gradient of an
// output laid out as x), and writes it so from the kernel that produces it, instead of
// leaving it in the order that kernel prefers (NCHW after a max-pool backward on a
// channels_last activation) for the op to transpose. In SmallCNN's compiled QAT step that
// transpose was a quarter of this library's CPU samples; the step moved by -54 to +68 us per
// round (mean -10 us, both compile orders, one process): Inductor's strided write costs
// about what the transpose did, so the tag is for layout consistency more than for speed.
inline void def_layout_preserving_backward(torch::Library& m, const char* schema) {
  m.def(schema, {at::Tag::pt2_compliant_tag, at::Tag::needs_fixed_stride_order});
}

}  // namespace coreai_opt::ops

// The tensor ops of each family as X-macro lists, so every device that implements a family
// registers the same ops: X(name) expands once per op.
#define COREAI_OPT_FAKE_QUANTIZE_OPS(X) \
  X(fake_quantize_int)                  \
  X(fake_quantize_int_backward)         \
  X(fake_quantize_float)                \
  X(fake_quantize_float_backward)
#define COREAI_OPT_LSQ_OPS(X) \
  X(fake_quantize_lsq)        \
  X(fake_quantize_lsq_backward)
#define COREAI_OPT_OBSERVE_OPS(X) \
  X(minmax)                       \
  X(update_range)
#define COREAI_OPT_QPARAMS_OPS(X) \
  X(choose_qparams_int)           \
  X(choose_qparams_float)
#define COREAI_OPT_FUSED_OPS(X)    \
  X(fused_fake_quantize)           \
  X(fused_fake_quantize_backward)  \
  X(fused_fake_quantize_cachemask) \
  X(fake_quantize_mask_backward)   \
  X(fake_quantize_mask_backward_)
#define COREAI_OPT_PACK_OPS(X) \
  X(pack)                      \
  X(unpack)
#define COREAI_OPT_CHANNEL_OPS(X) \
  X(channel_scale_shift)          \
  X(channel_scale_shift_backward)
#define COREAI_OPT_COREAI_EXPORT_OPS(X) \
  X(quantize)                           \
  X(dequantize)                         \
  X(blockwise_shift_scale)

// Registers the function of the same name for each op of a list.
#define COREAI_OPT_IMPL(name) m.impl(#name, &name);
