// CPU kernels of the pack family: sub-byte formats, the lower index in the lower bits.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "cpu/pack_codes.h"
#include "formats/float_format.h"
#include "formats/int_range.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::cpu {

namespace {

at::Tensor pack(const at::Tensor& q, c10::ScalarType dtype) {
  const auto checked = ops::check_pack(q, dtype);
  const auto& fmt = checked.format;
  const auto qc = q.contiguous();
  auto out =
      at::empty(c10::asIntArrayRefUnchecked(checked.out_sizes), q.options().dtype(at::kByte));
  uint8_t* dst = out.mutable_data_ptr<uint8_t>();
  const int64_t n_out = out.numel();
  if (fmt.is_float) {
    const auto info = formats::float_format_info(fmt.float_format);
    const auto qf = qc.to(at::kFloat);
    const float* src = qf.const_data_ptr<float>();
    for (int64_t i = 0; i < qf.numel(); ++i) {
      TORCH_CHECK_VALUE(src[i] == src[i],
                        "coreai_opt.pack: FP4 has no NaN code; found NaN at "
                        "flat index ",
                        i);
    }
    pack_codes(
        n_out, fmt.bits, [&](int64_t j) { return formats::encode_float_format(src[j], info); },
        dst);
    return out;
  }
  const auto r = formats::int_range(fmt.bits, fmt.is_signed, false);
  const auto q64 = qc.to(at::kLong);
  const int64_t* src = q64.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < q64.numel(); ++i) {
    TORCH_CHECK_VALUE(src[i] >= r.qmin && src[i] <= r.qmax, "coreai_opt.pack: value ", src[i],
                      " at flat index ", i, " does not fit ", ops::dtype_name(dtype),
                      ", whose range is [", r.qmin, ", ", r.qmax, "]");
  }
  pack_codes(
      n_out, fmt.bits, [&](int64_t j) { return src[j]; }, dst);
  return out;
}

at::Tensor unpack(const at::Tensor& packed, c10::ScalarType dtype) {
  const auto checked = ops::check_unpack(packed, dtype);
  const auto& fmt = checked.format;
  const auto out_sizes = c10::asIntArrayRefUnchecked(checked.out_sizes);
  const int per_byte = 8 / fmt.bits;
  const auto pc = packed.contiguous();
  const uint8_t* src = pc.const_data_ptr<uint8_t>();
  const int64_t n = pc.numel();
  const uint32_t mask = (1u << fmt.bits) - 1u;
  if (fmt.is_float) {
    const auto info = formats::float_format_info(fmt.float_format);
    auto out = at::empty(out_sizes, packed.options().dtype(at::kFloat));
    float* dst = out.mutable_data_ptr<float>();
    at::parallel_for(0, n, 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        for (int k = 0; k < per_byte; ++k) {
          dst[i * per_byte + k] =
              formats::decode_float_format((src[i] >> (k * fmt.bits)) & mask, info);
        }
      }
    });
    return out;
  }
  auto out = at::empty(out_sizes, packed.options().dtype(fmt.is_signed ? at::kChar : at::kByte));
  AT_DISPATCH_INTEGRAL_TYPES(out.scalar_type(), "unpack", [&] {
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    const int shift = 32 - fmt.bits;
    at::parallel_for(0, n, 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        for (int k = 0; k < per_byte; ++k) {
          const uint32_t code = (src[i] >> (k * fmt.bits)) & mask;
          // Sign-extend signed codes through the top of a 32-bit word.
          const int32_t v = fmt.is_signed ? (static_cast<int32_t>(code << shift) >> shift)
                                          : static_cast<int32_t>(code);
          dst[i * per_byte + k] = static_cast<scalar_t>(v);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CPU, m) { COREAI_OPT_PACK_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::cpu
