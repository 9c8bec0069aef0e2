#include "cpu/contiguous_copy.h"

#include <ATen/ops/empty.h>

#include <vector>

#include "cpu/kernels/kernels.h"

namespace coreai_opt::cpu {

namespace {

struct Dim {
  int64_t size;
  int64_t stride;
};

// v's dimensions with the size-1 ones dropped and each run that is contiguous in memory
// (stride[i] == size[i + 1] * stride[i + 1]) merged into one.
std::vector<Dim> coalesced(const at::Tensor& v) {
  std::vector<Dim> dims;
  for (int64_t d = 0; d < v.dim(); ++d) {
    if (v.size(d) == 1) continue;
    const Dim next{v.size(d), v.stride(d)};
    if (!dims.empty() && dims.back().stride == next.size * next.stride) {
      dims.back() = {dims.back().size * next.size, next.stride};
    } else {
      dims.push_back(next);
    }
  }
  return dims;
}

}  // namespace

at::Tensor contiguous_copy(const at::Tensor& v) {
  if (v.is_contiguous()) return v;
  if (v.scalar_type() == at::kFloat) {
    // [batch, p, q] with strides (p * q, 1, p) (batch may be absent): element (b, i, j) sits
    // at b * p * q + j * p + i, so v is the transpose of a contiguous [batch, q, p] array.
    std::vector<Dim> dims = coalesced(v);
    if (dims.size() == 2) dims.insert(dims.begin(), Dim{1, dims[0].size * dims[1].size});
    if (dims.size() == 3) {
      const int64_t p = dims[1].size, q = dims[2].size;
      if (dims[1].stride == 1 && dims[2].stride == p && dims[0].stride == p * q) {
        at::Tensor out = at::empty(v.sizes(), v.options());
        kernels().transpose_batched(v.const_data_ptr<float>(), out.mutable_data_ptr<float>(),
                                    dims[0].size, q, p);
        return out;
      }
    }
  }
  return v.contiguous();
}

}  // namespace coreai_opt::cpu
