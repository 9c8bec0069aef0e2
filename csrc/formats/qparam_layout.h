// How a qparam tensor maps onto its input, reduced to the few loops a kernel needs.
//
// The op contract says a qparam tensor has the input's rank and each dimension is 1
// (shared), the input's size (one per index) or size / block (one per block). Such a
// pairing is rewritten as a list of canonical dimensions, outermost first:
//   Full      the qparam index moves with this dimension
//   Broadcast one qparam is shared along this dimension
// A blocked dimension becomes (size / block, Full) followed by (block, Broadcast); size-1
// dimensions vanish and neighbours of the same kind merge. Per-tensor becomes [B], per
// channel on the outer dimension [F, B], contiguous blocks [F, B], per channel on the
// last dimension [B, F]. Because qparams are contiguous, the flat qparam index is the
// row-major index over the Full dimensions alone.
//
// Libtorch-free: shared by the CPU kernels, the checks and the Catch2 tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace coreai_opt::formats {

struct CanonicalDim {
  int64_t size;
  bool full;
  int64_t qstride;  // stride of this dimension in the flat qparam index (0 when Broadcast)
};

struct QParamLayout {
  std::vector<CanonicalDim> dims;  // outermost first; never empty when numel > 0
  int64_t numel = 0;               // elements of the input
  int64_t qnumel = 0;              // elements of the qparam tensor

  int64_t inner_size() const { return dims.empty() ? 1 : dims.back().size; }
  bool inner_full() const { return !dims.empty() && dims.back().full; }
  bool per_tensor() const { return qnumel == 1; }
};

// Returns an empty string when q_sizes is a valid qparam shape for x_sizes, else a
// sentence naming the offending dimension.
inline std::string qparam_shape_error(const std::vector<int64_t>& x_sizes,
                                      const std::vector<int64_t>& q_sizes) {
  if (x_sizes.size() != q_sizes.size()) {
    return "it has " + std::to_string(q_sizes.size()) + " dimensions but the input has " +
           std::to_string(x_sizes.size());
  }
  for (size_t d = 0; d < x_sizes.size(); ++d) {
    const int64_t x = x_sizes[d];
    const int64_t q = q_sizes[d];
    const bool ok = q == 1 || q == x || (q > 0 && x % q == 0);
    if (!ok) {
      return "dimension " + std::to_string(d) + " has " + std::to_string(q) +
             " entries, which is neither 1, the input's size " + std::to_string(x) +
             ", nor a divisor of it";
    }
  }
  return {};
}

// Builds the canonical layout; q_sizes must have passed qparam_shape_error.
inline QParamLayout make_qparam_layout(const std::vector<int64_t>& x_sizes,
                                       const std::vector<int64_t>& q_sizes) {
  QParamLayout layout;
  layout.numel = 1;
  layout.qnumel = 1;
  for (size_t d = 0; d < x_sizes.size(); ++d) {
    layout.numel *= x_sizes[d];
    layout.qnumel *= q_sizes[d];
  }
  auto push = [&layout](int64_t size, bool full) {
    if (size == 1) return;
    if (!layout.dims.empty() && layout.dims.back().full == full) {
      layout.dims.back().size *= size;
    } else {
      layout.dims.push_back(CanonicalDim{size, full, 0});
    }
  };
  for (size_t d = 0; d < x_sizes.size(); ++d) {
    const int64_t x = x_sizes[d];
    const int64_t q = q_sizes[d];
    if (q == 1) {
      push(x, false);
    } else if (q == x) {
      push(x, true);
    } else {
      push(q, true);
      push(x / q, false);
    }
  }
  if (layout.dims.empty()) layout.dims.push_back(CanonicalDim{1, false, 0});
  int64_t stride = 1;
  for (auto it = layout.dims.rbegin(); it != layout.dims.rend(); ++it) {
    if (it->full) {
      it->qstride = stride;
      stride *= it->size;
    }
  }
  return layout;
}

// qparam shape for a block size (block[d] == x[d] reduces d, 1 keeps it). Returns an empty
// string on success and fills q_sizes, else names the dimension that does not divide.
inline std::string qparam_sizes_from_blocks(const std::vector<int64_t>& x_sizes,
                                            const std::vector<int64_t>& block,
                                            std::vector<int64_t>& q_sizes) {
  if (block.size() != x_sizes.size()) {
    return "block_size has " + std::to_string(block.size()) + " entries but the input has " +
           std::to_string(x_sizes.size()) + " dimensions";
  }
  q_sizes.assign(x_sizes.size(), 1);
  for (size_t d = 0; d < x_sizes.size(); ++d) {
    const int64_t x = x_sizes[d];
    const int64_t b = block[d];
    if (b <= 0) {
      return "block_size[" + std::to_string(d) + "] is " + std::to_string(b) +
             "; block sizes must be positive";
    }
    if (x == 0) {
      q_sizes[d] = 0;
      continue;
    }
    if (x % b != 0) {
      return "block_size[" + std::to_string(d) + "] = " + std::to_string(b) +
             " does not divide the input's dimension " + std::to_string(d) + " of size " +
             std::to_string(x);
    }
    q_sizes[d] = x / b;
  }
  return {};
}

}  // namespace coreai_opt::formats
