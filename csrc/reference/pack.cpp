// Reference kernels of the pack family.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "formats/float_format.h"
#include "ops/checks.h"
#include "ops/schemas.h"
#include "reference/fake_quantize.h"

namespace coreai_opt::reference {

namespace {

// FP4 code of values already on the E2M1 grid: index of |v| in {0,.5,1,1.5,2,3,4,6} + sign.
at::Tensor fp4_codes(const at::Tensor& v) {
  const auto a = v.abs();
  const auto idx = at::where(a < 2, a * 2, at::where(a < 4, a + 2, a / 2 + 4)).to(at::kInt);
  const auto sign = at::signbit(v).to(at::kInt) * 8;
  return idx + sign;
}

at::Tensor pack(const at::Tensor& q, c10::ScalarType dtype) {
  const auto checked = ops::check_pack(q, dtype);
  const auto& fmt = checked.format;
  const auto out_sizes = c10::asIntArrayRefUnchecked(checked.out_sizes);
  const int per_byte = 8 / fmt.bits;
  at::Tensor codes;
  if (fmt.is_float) {
    const auto info = formats::float_format_info(fmt.float_format);
    codes = fp4_codes(
        float_grid_round(at::clamp(q.to(at::kFloat), -info.max_value, info.max_value), info));
  } else {
    codes = at::bitwise_and(q.to(at::kInt), (1 << fmt.bits) - 1);
  }
  std::vector<int64_t> grouped(out_sizes.begin(), out_sizes.end());
  grouped.push_back(per_byte);
  const auto shifts = at::arange(0, 8, fmt.bits, q.options().dtype(at::kInt));
  return at::bitwise_left_shift(codes.reshape(grouped), shifts)
      .sum(-1)
      .to(at::kByte)
      .reshape(out_sizes);
}

at::Tensor unpack(const at::Tensor& packed, c10::ScalarType dtype) {
  const auto checked = ops::check_unpack(packed, dtype);
  const auto& fmt = checked.format;
  const auto out_sizes = c10::asIntArrayRefUnchecked(checked.out_sizes);
  const auto shifts = at::arange(0, 8, fmt.bits, packed.options().dtype(at::kInt));
  const auto codes = at::bitwise_and(
      at::bitwise_right_shift(packed.to(at::kInt).unsqueeze(-1), shifts), (1 << fmt.bits) - 1);
  if (fmt.is_float) {
    const auto info = formats::float_format_info(fmt.float_format);
    std::vector<float> table(16);
    for (uint32_t c = 0; c < 16; ++c) table[c] = formats::decode_float_format(c, info);
    const auto lut = at::tensor(table, packed.options().dtype(at::kFloat));
    return lut.index({codes.reshape(-1).to(at::kLong)}).reshape(out_sizes);
  }
  const int shift = 32 - fmt.bits;
  auto v = codes;
  if (fmt.is_signed) v = at::bitwise_right_shift(at::bitwise_left_shift(codes, shift), shift);
  return v.to(fmt.is_signed ? at::kChar : at::kByte).reshape(out_sizes);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CompositeExplicitAutograd, m) {
  COREAI_OPT_PACK_OPS(COREAI_OPT_IMPL)
}

}  // namespace coreai_opt::reference
