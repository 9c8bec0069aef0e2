// Shape rules of pack / unpack, shared by every device's kernels.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/core/SymInt.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <vector>

#include "ops/checks.h"

namespace coreai_opt::ops {

// Only the sub-byte formats pack.
inline QuantFormat packable_format_of(c10::ScalarType dtype, const char* op) {
  using ST = c10::ScalarType;
  TORCH_CHECK_VALUE(dtype == ST::Int4 || dtype == ST::UInt4 || dtype == ST::Int2 ||
                        dtype == ST::UInt2 || dtype == ST::Float4_e2m1fn_x2,
                    "coreai_opt.", op, ": dtype is ", dtype_name(dtype),
                    "; allowed: torch.int4, torch.uint4, torch.int2, torch.uint2, "
                    "torch.float4_e2m1fn_x2");
  return quant_format_of(dtype, op);
}

template <typename T>
std::vector<T> packed_sizes(c10::ArrayRef<T> sizes, const QuantFormat& fmt, const char* op) {
  TORCH_CHECK_VALUE(!sizes.empty(), "coreai_opt.", op, ": needs at least one dimension");
  const int per_byte = 8 / fmt.bits;
  std::vector<T> out(sizes.begin(), sizes.end());
  const T& last = out.back();
  TORCH_CHECK_VALUE(last % per_byte == 0, "coreai_opt.", op, ": the last dimension (", last,
                    ") must be a multiple of ", per_byte, " to pack ", per_byte, " values a byte");
  out.back() = last / per_byte;
  return out;
}

template <typename T>
std::vector<T> unpacked_sizes(c10::ArrayRef<T> sizes, const QuantFormat& fmt) {
  TORCH_CHECK_VALUE(!sizes.empty(), "coreai_opt.unpack: needs at least one dimension");
  std::vector<T> out(sizes.begin(), sizes.end());
  out.back() = out.back() * (8 / fmt.bits);
  return out;
}

}  // namespace coreai_opt::ops
