#include "cpu/qparam_buffer.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <utility>

#include "formats/e8m0.h"

namespace coreai_opt::cpu {

namespace {
constexpr int64_t kQParamGrain = 16384;
}  // namespace

QParamBuffer QParamBuffer::of(const at::Tensor& t) {
  QParamBuffer b;
  if (t.scalar_type() == at::kFloat && t.is_contiguous()) {
    b.keep_ = t;
    b.ptr_ = t.const_data_ptr<float>();
    return b;
  }
  // Converted by hand: these tensors are tiny, and a tensor-level .to() would cost more than
  // a whole small fake-quantize call.
  const at::Tensor c = t.contiguous();
  const int64_t n = c.numel();
  b.storage_.resize(static_cast<size_t>(n > 0 ? n : 1));
  if (c.scalar_type() == at::kFloat8_e8m0fnu) {
    const auto* codes = static_cast<const uint8_t*>(c.const_data_ptr());
    float* dst = b.storage_.data();
    for (int64_t i = 0; i < n; ++i) dst[i] = formats::e8m0_decode(codes[i]);
  } else {
    AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, c.scalar_type(), "qparams",
                               [&] {
                                 const scalar_t* src = c.const_data_ptr<scalar_t>();
                                 float* dst = b.storage_.data();
                                 // Per-block qparams of a large weight run to hundreds of thousands
                                 // of values.
                                 at::parallel_for(0, n, kQParamGrain, [&](int64_t i0, int64_t i1) {
                                   for (int64_t i = i0; i < i1; ++i)
                                     dst[i] = static_cast<float>(src[i]);
                                 });
                               });
  }
  b.ptr_ = b.storage_.data();
  return b;
}

QParamBuffer QParamBuffer::owning(std::vector<float> values) {
  QParamBuffer b;
  b.storage_ = std::move(values);
  b.ptr_ = b.storage_.data();
  return b;
}

void check_scales_positive(const QParamBuffer& scale, int64_t n, const char* op) {
  const float* s = scale.data();
  // A branch-free pass the compiler vectorises; the offending index is looked up only when
  // there is one. Per-block weights have hundreds of thousands of scales.
  bool all_positive = true;
  for (int64_t i = 0; i < n; ++i) all_positive &= s[i] > 0.0f;
  if (all_positive) return;
  int64_t i = 0;
  while (i < n && s[i] > 0.0f) ++i;
  TORCH_CHECK_VALUE(false, "coreai_opt.", op, ": every scale must be positive and not NaN; found ",
                    s[i], " at flat index ", i);
}

bool read_switch(const at::Tensor& flag) {
  bool on = false;
  AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kHalf, at::kBFloat16, flag.scalar_type(), "switch",
                             [&] { on = *flag.const_data_ptr<scalar_t>() != scalar_t(0); });
  return on;
}

}  // namespace coreai_opt::cpu
