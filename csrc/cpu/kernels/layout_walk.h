// Parallel walks over an input in canonical-layout order (see formats/qparam_layout.h).
//
// The input is split into runs along the innermost canonical dimension. Within a run the
// qparam is one value (innermost Broadcast) or advances one per element (innermost Full),
// so inner loops never divide or take a modulus; the qparam base of a run comes from an
// odometer over the outer dimensions that is set up once per parallel chunk.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "formats/qparam_layout.h"

namespace coreai_opt::cpu {
inline namespace CPU_CAPABILITY {

constexpr int64_t kGrain = 32768;

// Default chunk_done of the walks: nothing to do when a parallel chunk ends.
struct NoChunkEnd {
  void operator()() const {}
};

// Odometer over the outer canonical dimensions (all but the innermost).
class OuterCursor {
 public:
  OuterCursor(const formats::QParamLayout& layout, int64_t row) : layout_(layout) {
    const int64_t n_outer = static_cast<int64_t>(layout.dims.size()) - 1;
    idx_.assign(n_outer > 0 ? n_outer : 0, 0);
    for (int64_t d = n_outer - 1; d >= 0; --d) {
      const auto& dim = layout.dims[d];
      idx_[d] = row % dim.size;
      row /= dim.size;
      if (dim.full) qbase_ += idx_[d] * dim.qstride;
    }
  }
  int64_t qbase() const { return qbase_; }
  void next() {
    for (int64_t d = static_cast<int64_t>(idx_.size()) - 1; d >= 0; --d) {
      const auto& dim = layout_.dims[d];
      if (dim.full) qbase_ += dim.qstride;
      if (++idx_[d] < dim.size) return;
      if (dim.full) qbase_ -= dim.qstride * dim.size;
      idx_[d] = 0;
    }
  }

 private:
  const formats::QParamLayout& layout_;
  std::vector<int64_t> idx_;
  int64_t qbase_ = 0;
};

// Calls run(offset, length, qparam_index_of_first_element) for consecutive pieces of the
// flat element range, in parallel. With an innermost Broadcast dimension the qparam is the
// same for the whole piece; with innermost Full it advances with the element. chunk_done()
// runs on the worker at the end of each parallel chunk (a fence after streaming stores).
template <typename Run, typename ChunkDone = NoChunkEnd>
void for_each_run(const formats::QParamLayout& layout, const Run& run,
                  const ChunkDone& chunk_done = {}) {
  const int64_t inner = layout.inner_size();
  const bool inner_full = layout.inner_full();
  const auto& dims = layout.dims;
  // The common layouts get loops without the odometer: per-tensor or one qparam per
  // element ([B] / [F]), outer channels and contiguous blocks ([F, B]), channels on the
  // last dimension ([B, F]).
  if (dims.size() == 1) {
    at::parallel_for(0, layout.numel, kGrain, [&](int64_t begin, int64_t end) {
      run(begin, end - begin, inner_full ? begin : 0);
      chunk_done();
    });
    return;
  }
  if (dims.size() == 2) {
    at::parallel_for(0, layout.numel, kGrain, [&](int64_t begin, int64_t end) {
      int64_t row = begin / inner;
      int64_t col = begin % inner;
      for (int64_t e = begin; e < end; ++row, col = 0) {
        const int64_t len = std::min(inner - col, end - e);
        run(e, len, inner_full ? col : row);
        e += len;
      }
      chunk_done();
    });
    return;
  }
  at::parallel_for(0, layout.numel, kGrain, [&](int64_t begin, int64_t end) {
    int64_t row = begin / inner;
    int64_t col = begin % inner;
    OuterCursor cursor(layout, row);
    int64_t e = begin;
    while (e < end) {
      const int64_t len = std::min(inner - col, end - e);
      run(e, len, cursor.qbase() + (inner_full ? col : 0));
      e += len;
      col = 0;
      cursor.next();
    }
    chunk_done();
  });
}

// The [F, B] layouts with an innermost Broadcast no longer than kGrain: rows that each share
// one qparam (per-channel weights, per-block blocks). Calls run(offset, length, q) for whole
// rows inside each parallel chunk and returns true; returns false for any other layout.
// Give it an always-inline lambda: a 32-element block then costs no call and no reload of
// the loop constants, which for_each_run's generic walk cannot avoid.
template <typename Run, typename ChunkDone = NoChunkEnd>
bool for_each_row(const formats::QParamLayout& layout, const Run& run,
                  const ChunkDone& chunk_done = {}) {
  const int64_t inner = layout.inner_size();
  if (layout.dims.size() != 2 || layout.inner_full() || inner <= 0 || inner > kGrain) {
    return false;
  }
  const int64_t rows = layout.numel / inner;
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) run(r * inner, inner, r);
    chunk_done();
  });
  return true;
}

// Reductions into per-qparam accumulators of type Acc (qnumel of them, started at
// `identity`). reduce_run(acc, offset, length, qparam_index) folds one run into acc;
// combine(a, b) merges two accumulators. Where the outermost canonical dimension is Full
// its slices own disjoint qparams and run in parallel without copies; otherwise each
// thread reduces into its own buffer and the buffers are merged at the end.
template <typename Acc, typename ReduceRun, typename Combine>
void reduce_runs(const formats::QParamLayout& layout, Acc* out, const Acc& identity,
                 const ReduceRun& reduce_run, const Combine& combine) {
  const int64_t qn = layout.qnumel;
  for (int64_t i = 0; i < qn; ++i) out[i] = identity;
  if (layout.numel == 0) return;
  const int64_t inner = layout.inner_size();
  const bool inner_full = layout.inner_full();

  auto walk = [&](Acc* acc, int64_t begin, int64_t end) {
    int64_t row = begin / inner;
    int64_t col = begin % inner;
    OuterCursor cursor(layout, row);
    int64_t e = begin;
    while (e < end) {
      const int64_t len = std::min(inner - col, end - e);
      reduce_run(acc, e, len, cursor.qbase() + (inner_full ? col : 0));
      e += len;
      col = 0;
      cursor.next();
    }
  };

  const auto& outer = layout.dims.front();
  if (outer.full && layout.dims.size() > 1) {
    const int64_t slice = layout.numel / outer.size;
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(slice, 1));
    at::parallel_for(0, outer.size, grain,
                     [&](int64_t g0, int64_t g1) { walk(out, g0 * slice, g1 * slice); });
    return;
  }
  if (outer.full) {  // a single Full dimension: every element has its own qparam
    walk(out, 0, layout.numel);
    return;
  }
  const int nthreads = at::get_num_threads();
  std::vector<Acc> partial(static_cast<size_t>(nthreads) * qn, identity);
  std::vector<char> used(nthreads, 0);
  at::parallel_for(0, layout.numel, kGrain, [&](int64_t begin, int64_t end) {
    const int t = at::get_thread_num();
    used[t] = 1;
    walk(partial.data() + static_cast<size_t>(t) * qn, begin, end);
  });
  for (int t = 0; t < nthreads; ++t) {
    if (!used[t]) continue;
    const Acc* p = partial.data() + static_cast<size_t>(t) * qn;
    for (int64_t i = 0; i < qn; ++i) out[i] = combine(out[i], p[i]);
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace coreai_opt::cpu
