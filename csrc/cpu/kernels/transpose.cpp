// Batched 2-D transpose of float32: a grad laid out unlike x (NCHW against channels_last, or
// the reverse) copied into x's memory order before an elementwise kernel. ATen's strided
// copy walks such a permutation element by element; 16 x 16 tiles through at::vec's
// per-ISA transpose_mxn move it at about the speed of a plain copy.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>

#include "cpu/kernels/kernels_isa.h"
#include "cpu/kernels/layout_walk.h"

namespace coreai_opt::cpu {
inline namespace CPU_CAPABILITY {

namespace {

constexpr int64_t kTile = 16;

// dst[b][c][r] = src[b][r][c] for src [batch, rows, cols] and dst [batch, cols, rows], both
// contiguous.
void transpose_batched(const float* src, float* dst, int64_t batch, int64_t rows, int64_t cols) {
  const int64_t row_tiles = (rows + kTile - 1) / kTile;
  // One task per (batch, band of kTile rows): contiguous reads of src, strided writes. A
  // chunk takes about kGrain elements, so a small tensor stays on the calling thread.
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, kTile * cols));
  at::parallel_for(0, batch * row_tiles, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / row_tiles;
      const int64_t r0 = (task % row_tiles) * kTile;
      const int64_t m = std::min(kTile, rows - r0);
      const float* s = src + b * rows * cols + r0 * cols;
      float* d = dst + b * rows * cols + r0;
      int64_t c0 = 0;
      if (m == kTile) {
        for (; c0 + kTile <= cols; c0 += kTile) {
          at::vec::transpose_mxn<float, kTile, kTile>(s + c0, cols, d + c0 * rows, rows);
        }
      }
      for (; c0 < cols; ++c0) {  // the ragged edge
        for (int64_t i = 0; i < m; ++i) d[c0 * rows + i] = s[i * cols + c0];
      }
    }
  });
}

}  // namespace

void register_transpose(KernelTable& t) { t.transpose_batched = &transpose_batched; }

}  // namespace CPU_CAPABILITY
}  // namespace coreai_opt::cpu
