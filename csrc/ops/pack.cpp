// Sub-byte packing schemas.
#include "ops/schemas.h"

namespace coreai_opt::ops {

void define_pack(torch::Library& m) {
  // pack(q, dtype) -> uint8 tensor, packed along the last dimension.
  //   int4 / uint4: 2 values a byte; int2 / uint2: 4 a byte; float4_e2m1fn_x2: 2 a byte.
  //   The element with the lower index sits in the lower bits. Integer q must be an integer
  //   tensor whose values fit the dtype (checked on CPU); FP4 q is a float tensor, encoded
  //   with saturating round-to-nearest-even (NaN is refused: FP4 has no NaN code).
  //   The last dimension must be a multiple of the values per byte.
  m.def("pack(Tensor q, ScalarType dtype) -> Tensor", {at::Tag::pt2_compliant_tag});
  // unpack(packed, dtype) -> int8 (signed), uint8 (unsigned) or float32 (FP4) tensor whose
  //   last dimension is values-per-byte times packed's. Inverse of pack.
  m.def("unpack(Tensor packed, ScalarType dtype) -> Tensor", {at::Tag::pt2_compliant_tag});
}

}  // namespace coreai_opt::ops
