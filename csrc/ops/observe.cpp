// Range observation schemas.
//
// block_size has x's rank: block_size[d] == x.size(d) reduces dimension d entirely,
// 1 keeps it, anything between must divide x.size(d) and reduces blocks of that length.
// The results have shape [x.size(d) / block_size[d]].
#include "ops/schemas.h"

namespace coreai_opt::ops {

void define_observe(torch::Library& m) {
  // minmax(x, block_size) -> (min, max), in x's dtype. NaN propagates as in torch.amin.
  m.def("minmax(Tensor x, SymInt[] block_size) -> (Tensor, Tensor)", {at::Tag::pt2_compliant_tag});
  // update_range(x, running_min!, running_max!, block_size, method, averaging_constant)
  //   method "static":         running = this batch's range
  //          "moving_average": running = batch where running is +-inf (uninitialised),
  //                            else c * batch + (1 - c) * running
  //          "global_minmax":  running_min = min(running_min, batch min), likewise max
  //   running_* are float32 tensors of the reduced shape; +inf / -inf mean "no data yet".
  m.def(
      "update_range(Tensor x, Tensor(a!) running_min, Tensor(b!) running_max, "
      "SymInt[] block_size, str method, float averaging_constant=0.01) -> ()",
      {at::Tag::pt2_compliant_tag});
}

}  // namespace coreai_opt::ops
