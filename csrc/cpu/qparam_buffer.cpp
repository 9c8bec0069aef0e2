#include "cpu/qparam_buffer.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

namespace coreai_opt::cpu {

QParamBuffer QParamBuffer::of(const at::Tensor& t) {
  QParamBuffer b;
  if (t.scalar_type() == at::kFloat && t.is_contiguous()) {
    b.keep_ = t;
    b.ptr_ = t.const_data_ptr<float>();
  } else {
    b.keep_ = t.to(at::kFloat).contiguous();
    b.ptr_ = b.keep_.const_data_ptr<float>();
  }
  return b;
}

QParamBuffer QParamBuffer::constant(float v, int64_t n) {
  QParamBuffer b;
  b.storage_.assign(static_cast<size_t>(n > 0 ? n : 1), v);
  b.ptr_ = b.storage_.data();
  return b;
}

void check_scales_positive(const QParamBuffer& scale, int64_t n, const char* op) {
  const float* s = scale.data();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK_VALUE(s[i] > 0.0f, "coreai_opt.", op,
                      ": every scale must be positive and not NaN; found ", s[i], " at flat index ",
                      i);
  }
}

bool read_switch(const at::Tensor& flag, const char* op, const char* arg) {
  TORCH_CHECK_VALUE(flag.numel() == 1, "coreai_opt.", op, ": ", arg,
                    " must hold exactly one element; it has ", flag.numel());
  bool on = false;
  AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kHalf, at::kBFloat16, flag.scalar_type(), "switch",
                             [&] { on = *flag.const_data_ptr<scalar_t>() != scalar_t(0); });
  return on;
}

}  // namespace coreai_opt::cpu
