// CPU kernels of the qparams family: scale / zero point / minval from observed ranges.
#include "cpu/qparams.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu/qparam_buffer.h"
#include "formats/e8m0.h"
#include "formats/qparams.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::cpu {

namespace {

// Ends of the range used for qparams: float_range when given, else widened to include 0.
inline float range_lo(float v, const std::optional<double>& fixed) {
  return fixed.has_value() ? static_cast<float>(*fixed) : formats::widen_lo(v);
}
inline float range_hi(float v, const std::optional<double>& fixed) {
  return fixed.has_value() ? static_cast<float>(*fixed) : formats::widen_hi(v);
}

}  // namespace

void int_qparams_into(const float* lo, const float* hi, int64_t n, int64_t quant_min,
                      int64_t quant_max, bool symmetric, const std::optional<double>& range_min,
                      const std::optional<double>& range_max, float* scale, int32_t* zp,
                      float* minval) {
  for (int64_t i = 0; i < n; ++i) {
    const auto p = formats::int_qparams(range_lo(lo[i], range_min), range_hi(hi[i], range_max),
                                        static_cast<int32_t>(quant_min),
                                        static_cast<int32_t>(quant_max), symmetric);
    scale[i] = p.scale;
    zp[i] = p.zero_point;
    minval[i] = p.minval;
  }
}

void float_qparams_into(const float* lo, const float* hi, int64_t n,
                        const formats::FloatFormatInfo& info, bool e8m0,
                        const std::optional<double>& range_min,
                        const std::optional<double>& range_max, float* scale) {
  for (int64_t i = 0; i < n; ++i) {
    const float max_abs =
        formats::max_abs_of(range_lo(lo[i], range_min), range_hi(hi[i], range_max));
    scale[i] = e8m0 ? formats::e8m0_scale(max_abs, info.max_pow2)
                    : formats::clamp_eps_nan(max_abs / info.max_value);
  }
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> choose_qparams_int(
    const at::Tensor& min, const at::Tensor& max, int64_t quant_min, int64_t quant_max,
    bool symmetric, std::optional<double> range_min, std::optional<double> range_max) {
  ops::check_choose_qparams_int(min, max, quant_min, quant_max, range_min, range_max);
  const auto lo = QParamBuffer::of(min);
  const auto hi = QParamBuffer::of(max);
  auto f32 = min.options().dtype(at::kFloat);
  auto scale = at::empty(min.sizes(), f32);
  auto zp = at::empty(min.sizes(), min.options().dtype(at::kInt));
  auto minval = at::empty(min.sizes(), f32);
  int_qparams_into(lo.data(), hi.data(), min.numel(), quant_min, quant_max, symmetric, range_min,
                   range_max, scale.mutable_data_ptr<float>(), zp.mutable_data_ptr<int32_t>(),
                   minval.mutable_data_ptr<float>());
  return {scale.to(min.scalar_type()), zp, minval.to(min.scalar_type())};
}

at::Tensor choose_qparams_float(const at::Tensor& min, const at::Tensor& max, c10::ScalarType dtype,
                                bool e8m0, std::optional<double> range_min,
                                std::optional<double> range_max) {
  const auto fmt = ops::check_choose_qparams_float(min, max, dtype, range_min, range_max);
  const auto lo = QParamBuffer::of(min);
  const auto hi = QParamBuffer::of(max);
  auto scale = at::empty(min.sizes(), min.options().dtype(at::kFloat));
  float_qparams_into(lo.data(), hi.data(), min.numel(),
                     formats::float_format_info(fmt.float_format), e8m0, range_min, range_max,
                     scale.mutable_data_ptr<float>());
  return e8m0 ? scale : scale.to(min.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CPU, m) { COREAI_OPT_QPARAMS_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::cpu
