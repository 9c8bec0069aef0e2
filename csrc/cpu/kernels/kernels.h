// CPU kernel entry points. Every file in csrc/cpu/kernels is compiled once per ISA
// (DEFAULT, AVX2, AVX512) inside namespace coreai_opt::cpu::<ISA>, so at::vec::Vectorized
// is real SIMD in each; dispatch.cpp picks a table with at::get_cpu_capability().
//
// Kernels take contiguous tensors and float32 qparam arrays already checked by the caller
// (cpu/ops_cpu.cpp); they never allocate full-size temporaries and never sync.
#pragma once

#include <ATen/core/Tensor.h>

#include "formats/float_format.h"
#include "formats/qparam_layout.h"

namespace coreai_opt::cpu {

using formats::QParamLayout;

// Integer fake-quantize in its generic form: q = clamp(round((x - f) / s) + o, qmin, qmax),
// y = (q - o) * s + f. The zp form has f = 0, o = zp; the minval form f = minval, o = qmin.
// One offset per qparam, read where it lies: a float32 array, an int32 array (zero points
// as users store them, no conversion pass), or one constant for all.
struct OffsetView {
  const float* f32 = nullptr;
  const int32_t* i32 = nullptr;
  float constant = 0.0f;
  float at(int64_t q) const { return f32 ? f32[q] : (i32 ? static_cast<float>(i32[q]) : constant); }
};

struct IntParams {
  const float* scale;
  OffsetView quant_offset;    // o
  const float* float_offset;  // f, one per qparam; nullptr for the zp form (f == 0)
  float qmin;
  float qmax;
};

struct FloatParams {
  const float* scale;
  formats::FloatFormat format;
};

struct KernelTable {
  // y = fake_quantize(x); x, y contiguous, same dtype and shape.
  void (*fake_quantize_int)(const at::Tensor& x, const at::Tensor& y, const QParamLayout&,
                            const IntParams&);
  // gx = grad * in-range mask of x.
  void (*fake_quantize_int_backward)(const at::Tensor& grad, const at::Tensor& x,
                                     const at::Tensor& gx, const QParamLayout&, const IntParams&);
  void (*fake_quantize_float)(const at::Tensor& x, const at::Tensor& y, const QParamLayout&,
                              const FloatParams&);
  void (*fake_quantize_float_backward)(const at::Tensor& grad, const at::Tensor& x,
                                       const at::Tensor& gx, const QParamLayout&,
                                       const FloatParams&);
  // Forward of float32 x that also writes mask (bool, x's shape): true where the
  // straight-through gradient passes (the code was not clamped / |x / s| within the range).
  void (*fake_quantize_int_masked)(const at::Tensor& x, const at::Tensor& y, const at::Tensor& mask,
                                   const QParamLayout&, const IntParams&);
  void (*fake_quantize_float_masked)(const at::Tensor& x, const at::Tensor& y,
                                     const at::Tensor& mask, const QParamLayout&,
                                     const FloatParams&);
  // gx = grad * mask; float32 grad / gx, bool mask, all contiguous and of one shape; gx may
  // be grad itself (fake_quantize_mask_backward_).
  void (*ste_mask_backward)(const at::Tensor& grad, const at::Tensor& mask, const at::Tensor& gx);
  // min / max of x per qparam into float arrays of layout.qnumel entries (NaN propagates).
  void (*minmax)(const at::Tensor& x, const QParamLayout&, float* min_out, float* max_out);
  // LSQ backward (zp form, offsets already rounded): gx elementwise, and per qparam the
  // sums of d(y)/d(scale) * grad and d(y)/d(zero_point) * grad (before grad_factor).
  void (*lsq_backward)(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& gx,
                       const QParamLayout&, const IntParams&, double* dscale, double* dzero_point);
  // dst[b][c][r] = src[b][r][c]: src [batch, rows, cols] and dst [batch, cols, rows], both
  // contiguous float32 arrays (contiguous_copy.h).
  void (*transpose_batched)(const float* src, float* dst, int64_t batch, int64_t rows,
                            int64_t cols);
  // channel_scale_shift on float32 arrays: y = x * scale[c] + shift[c] (shift may be null),
  // x and y [outer, channels, inner] (planes) or [rows, channels] (rows), contiguous.
  void (*channel_scale_shift_planes)(const float* x, const float* scale, const float* shift,
                                     float* y, int64_t outer, int64_t channels, int64_t inner);
  void (*channel_scale_shift_rows)(const float* x, const float* scale, const float* shift, float* y,
                                   int64_t rows, int64_t channels);
  // Its backward: gx = g * scale[c]; gscale[c] = sum g * x; gshift[c] = sum g (same forms).
  void (*channel_scale_shift_backward_planes)(const float* g, const float* x, const float* scale,
                                              float* gx, float* gscale, float* gshift,
                                              int64_t outer, int64_t channels, int64_t inner);
  void (*channel_scale_shift_backward_rows)(const float* g, const float* x, const float* scale,
                                            float* gx, float* gscale, float* gshift, int64_t rows,
                                            int64_t channels);
};

// One table per compiled ISA (kernel_table.cpp, named by token pasting CPU_CAPABILITY).
const KernelTable& kernel_table_DEFAULT();
const KernelTable& kernel_table_AVX2();
const KernelTable& kernel_table_AVX512();

// The table for this machine (the best ISA the build has and at::get_cpu_capability()
// allows; ATEN_CPU_CAPABILITY=default forces the scalar path).
const KernelTable& kernels();
// Name of the chosen table: "DEFAULT", "AVX2" or "AVX512".
const char* kernel_isa();

}  // namespace coreai_opt::cpu
