// Reference kernels of the qparams family.
#include "reference/qparams.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "formats/bits.h"
#include "formats/qparams.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::reference {

namespace {

at::Tensor range_end(const at::Tensor& v, const std::optional<double>& fixed, bool low) {
  if (fixed.has_value()) return at::full_like(v, *fixed);
  return low ? at::clamp_max(v, 0.0) : at::clamp_min(v, 0.0);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> int_qparams(const at::Tensor& min32,
                                                           const at::Tensor& max32, int64_t qmin,
                                                           int64_t qmax, bool symmetric,
                                                           const std::optional<double>& rmin,
                                                           const std::optional<double>& rmax) {
  const auto lo = range_end(min32, rmin, true);
  const auto hi = range_end(max32, rmax, false);
  const double eps = formats::kFloat32Eps;
  if (symmetric) {
    const auto max_abs = at::maximum(-lo, hi);
    const double half = static_cast<float>(qmax - qmin) / 2.0f;
    const auto scale = at::clamp_min(max_abs / half, eps);
    const int64_t zp = static_cast<int64_t>(static_cast<float>(qmax + qmin + 1) / 2.0f);
    return {scale, at::full_like(scale, zp, at::kInt), -max_abs};
  }
  const auto scale = at::clamp_min((hi - lo) / static_cast<double>(qmax - qmin), eps);
  const auto zp = at::clamp(static_cast<double>(qmin) - at::round(lo / scale), qmin, qmax);
  return {scale, at::nan_to_num(zp, static_cast<double>(qmin)).to(at::kInt), lo};
}

at::Tensor float_qparams(const at::Tensor& min32, const at::Tensor& max32,
                         const formats::FloatFormatInfo& info, bool e8m0,
                         const std::optional<double>& rmin, const std::optional<double>& rmax) {
  const auto max_abs = at::maximum(-range_end(min32, rmin, true), range_end(max32, rmax, false));
  if (!e8m0)
    return at::clamp_min(max_abs / static_cast<double>(info.max_value),
                         static_cast<double>(formats::kFloat32Eps));
  const auto e = at::bitwise_and(at::bitwise_right_shift(max_abs.view(at::kInt), 23), 0xFF) - 127;
  const auto es = at::clamp(e - info.max_pow2, -127, 128);
  const auto scale = at::bitwise_left_shift(es + 127, 23).to(at::kInt).view(at::kFloat);
  return at::clamp_min(scale, static_cast<double>(formats::exp2_int(-126)));
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> choose_qparams_int(
    const at::Tensor& min, const at::Tensor& max, int64_t quant_min, int64_t quant_max,
    bool symmetric, std::optional<double> range_min, std::optional<double> range_max) {
  ops::check_choose_qparams_int(min, max, quant_min, quant_max, range_min, range_max);
  auto [s, zp, mv] = int_qparams(min.to(at::kFloat), max.to(at::kFloat), quant_min, quant_max,
                                 symmetric, range_min, range_max);
  return {s.to(min.scalar_type()), zp, mv.to(min.scalar_type())};
}

at::Tensor choose_qparams_float(const at::Tensor& min, const at::Tensor& max, c10::ScalarType dtype,
                                bool e8m0, std::optional<double> range_min,
                                std::optional<double> range_max) {
  const auto fmt = ops::check_choose_qparams_float(min, max, dtype, range_min, range_max);
  const auto s =
      float_qparams(min.to(at::kFloat), max.to(at::kFloat),
                    formats::float_format_info(fmt.float_format), e8m0, range_min, range_max);
  return e8m0 ? s : s.to(min.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CompositeExplicitAutograd, m) {
  COREAI_OPT_QPARAMS_OPS(COREAI_OPT_IMPL)
}

}  // namespace coreai_opt::reference
