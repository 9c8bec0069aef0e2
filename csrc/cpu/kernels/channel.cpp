// Per-channel scale and shift of float32 tensors (channel_scale_shift), in two memory forms:
// planes (x as [outer, channels, inner], inner > 1: NCHW and other contiguous layouts) and
// rows (channels innermost: [rows, channels], as a contiguous 2-D x or a channels_last one).
// The backward writes grad_x and reduces both per-channel sums in the same pass.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <vector>

#include "cpu/kernels/kernels_isa.h"
#include "cpu/kernels/layout_walk.h"
#include "cpu/kernels/vec_io.h"

namespace coreai_opt::cpu {
inline namespace CPU_CAPABILITY {

namespace {

// Partial sums are kept in float for at most this many elements, then added into a double:
// a long plane or many rows keep the error of a float sum of a few thousand terms.
constexpr int64_t kFlush = 1024;

// y = x * scale + shift over n floats with one scale and shift; the product is rounded
// before the sum (no fused multiply-add: the build uses -ffp-contract=off).
void scale_shift_run(const float* x, float* y, int64_t n, float scale, const float* shift) {
  const fVec s(scale);
  int64_t j = 0;
  if (shift != nullptr) {
    const fVec b(*shift);
    for (; j + kF <= n; j += kF) (fVec::loadu(x + j) * s + b).store(y + j);
    for (; j < n; ++j) y[j] = x[j] * scale + *shift;
  } else {
    for (; j + kF <= n; j += kF) (fVec::loadu(x + j) * s).store(y + j);
    for (; j < n; ++j) y[j] = x[j] * scale;
  }
}

void channel_scale_shift_planes(const float* x, const float* scale, const float* shift, float* y,
                                int64_t outer, int64_t channels, int64_t inner) {
  const int64_t grain = std::max<int64_t>(1, kGrain / inner);
  at::parallel_for(0, outer * channels, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % channels;
      scale_shift_run(x + p * inner, y + p * inner, inner, scale[c],
                      shift != nullptr ? shift + c : nullptr);
    }
  });
}

void channel_scale_shift_rows(const float* x, const float* scale, const float* shift, float* y,
                              int64_t rows, int64_t channels) {
  const int64_t grain = std::max<int64_t>(1, kGrain / channels);
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * channels;
      float* yr = y + r * channels;
      int64_t c = 0;
      for (; c + kF <= channels; c += kF) {
        const fVec v = fVec::loadu(xr + c) * fVec::loadu(scale + c);
        (shift != nullptr ? v + fVec::loadu(shift + c) : v).store(yr + c);
      }
      for (; c < channels; ++c) {
        const float v = xr[c] * scale[c];
        yr[c] = shift != nullptr ? v + shift[c] : v;
      }
    }
  });
}

// The backward splits its planes (or rows) into one contiguous range per thread: the split
// the forward and aten's elementwise kernels make, so each thread reads what it wrote. Each
// range sums into its own per-channel doubles, added up in range order at the end. Within a
// plane the sums run in kLanes float lanes whatever the vector width, added up in one order,
// so every ISA gives the same bits.
constexpr int64_t kLanes = 16;
static_assert(kLanes % kF == 0, "kLanes must be a whole number of vectors");

double lanes_sum(const fVec (&acc)[kLanes / kF]) {
  float lanes[kLanes];
  for (int64_t v = 0; v < kLanes / kF; ++v) acc[v].store(lanes + v * kF);
  double s = 0.0;
  for (int64_t i = 0; i < kLanes; ++i) s += lanes[i];
  return s;
}

// gx = g * scale over one plane of n floats; adds sum(g * x) and sum(g) to the two sums.
void plane_backward(const float* gp, const float* xp, float* op, int64_t n, float scale,
                    double& sum_gx, double& sum_g) {
  constexpr int64_t kVecs = kLanes / kF;
  const fVec s(scale);
  for (int64_t b0 = 0; b0 < n; b0 += kFlush) {
    const int64_t b1 = std::min(n, b0 + kFlush);
    fVec acc_gx[kVecs], acc_g[kVecs];
    for (int64_t v = 0; v < kVecs; ++v) acc_gx[v] = acc_g[v] = fVec(0.0f);
    int64_t j = b0;
    for (; j + kLanes <= b1; j += kLanes) {
      for (int64_t v = 0; v < kVecs; ++v) {
        const fVec gv = fVec::loadu(gp + j + v * kF);
        (gv * s).store(op + j + v * kF);
        acc_gx[v] = acc_gx[v] + gv * fVec::loadu(xp + j + v * kF);
        acc_g[v] = acc_g[v] + gv;
      }
    }
    float tail_gx = 0.0f, tail_g = 0.0f;
    for (; j < b1; ++j) {
      op[j] = gp[j] * scale;
      tail_gx += gp[j] * xp[j];
      tail_g += gp[j];
    }
    sum_gx += lanes_sum(acc_gx) + tail_gx;
    sum_g += lanes_sum(acc_g) + tail_g;
  }
}

// One range per thread, fewer for small tensors (a range of at least about kGrain elements).
int64_t backward_parts(int64_t items, int64_t numel) {
  return std::max<int64_t>(
      1, std::min<int64_t>({at::get_num_threads(), items, std::max<int64_t>(1, numel / kGrain)}));
}

// The per-range sums, added up per channel in range order.
void combine_parts(const std::vector<double>& part_gx, const std::vector<double>& part_g,
                   int64_t parts, int64_t channels, float* gscale, float* gshift) {
  for (int64_t c = 0; c < channels; ++c) {
    double s_gx = 0.0, s_g = 0.0;
    for (int64_t q = 0; q < parts; ++q) {
      s_gx += part_gx[q * channels + c];
      s_g += part_g[q * channels + c];
    }
    gscale[c] = static_cast<float>(s_gx);
    gshift[c] = static_cast<float>(s_g);
  }
}

void channel_scale_shift_backward_planes(const float* g, const float* x, const float* scale,
                                         float* gx, float* gscale, float* gshift, int64_t outer,
                                         int64_t channels, int64_t inner) {
  const int64_t planes = outer * channels;
  const int64_t parts = backward_parts(planes, planes * inner);
  const int64_t per_part = (planes + parts - 1) / parts;
  std::vector<double> part_gx(parts * channels, 0.0), part_g(parts * channels, 0.0);
  at::parallel_for(0, parts, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t p_end = std::min(planes, (q + 1) * per_part);
      for (int64_t p = q * per_part; p < p_end; ++p) {
        const int64_t c = p % channels;
        plane_backward(g + p * inner, x + p * inner, gx + p * inner, inner, scale[c],
                       part_gx[q * channels + c], part_g[q * channels + c]);
      }
    }
  });
  combine_parts(part_gx, part_g, parts, channels, gscale, gshift);
}

// Rows form: per range, the sums run in per-channel float buffers for up to kFlush rows,
// then go into the range's doubles.
void channel_scale_shift_backward_rows(const float* g, const float* x, const float* scale,
                                       float* gx, float* gscale, float* gshift, int64_t rows,
                                       int64_t channels) {
  const int64_t parts = backward_parts(rows, rows * channels);
  const int64_t per_part = (rows + parts - 1) / parts;
  std::vector<double> part_gx(parts * channels, 0.0), part_g(parts * channels, 0.0);
  at::parallel_for(0, parts, 1, [&](int64_t q0, int64_t q1) {
    std::vector<float> acc_gx(channels), acc_g(channels);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t r_end = std::min(rows, (q + 1) * per_part);
      double* out_gx = part_gx.data() + q * channels;
      double* out_g = part_g.data() + q * channels;
      for (int64_t r0 = q * per_part; r0 < r_end; r0 += kFlush) {
        const int64_t r1 = std::min(r_end, r0 + kFlush);
        std::fill(acc_gx.begin(), acc_gx.end(), 0.0f);
        std::fill(acc_g.begin(), acc_g.end(), 0.0f);
        for (int64_t r = r0; r < r1; ++r) {
          const float *gr = g + r * channels, *xr = x + r * channels;
          float* orow = gx + r * channels;
          int64_t c = 0;
          for (; c + kF <= channels; c += kF) {
            const fVec gv = fVec::loadu(gr + c);
            (gv * fVec::loadu(scale + c)).store(orow + c);
            (fVec::loadu(acc_gx.data() + c) + gv * fVec::loadu(xr + c)).store(acc_gx.data() + c);
            (fVec::loadu(acc_g.data() + c) + gv).store(acc_g.data() + c);
          }
          for (; c < channels; ++c) {
            orow[c] = gr[c] * scale[c];
            acc_gx[c] += gr[c] * xr[c];
            acc_g[c] += gr[c];
          }
        }
        for (int64_t c = 0; c < channels; ++c) {
          out_gx[c] += acc_gx[c];
          out_g[c] += acc_g[c];
        }
      }
    }
  });
  combine_parts(part_gx, part_g, parts, channels, gscale, gshift);
}

}  // namespace

void register_channel(KernelTable& t) {
  t.channel_scale_shift_planes = &channel_scale_shift_planes;
  t.channel_scale_shift_rows = &channel_scale_shift_rows;
  t.channel_scale_shift_backward_planes = &channel_scale_shift_backward_planes;
  t.channel_scale_shift_backward_rows = &channel_scale_shift_backward_rows;
}

}  // namespace CPU_CAPABILITY
}  // namespace coreai_opt::cpu
