// Float32 views of small qparam tensors for the CPU kernels: the tensor's own memory when it
// already is contiguous float32, else a converted copy; or one value repeated. Kept apart
// from the kernels so their inner loops only ever see `const float*`.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace coreai_opt::cpu {

class QParamBuffer {
 public:
  QParamBuffer() = default;
  // Movable only: the data pointer may point into the buffer's own storage.
  QParamBuffer(QParamBuffer&&) = default;
  QParamBuffer& operator=(QParamBuffer&&) = default;
  QParamBuffer(const QParamBuffer&) = delete;
  QParamBuffer& operator=(const QParamBuffer&) = delete;

  // Values of t (any real dtype, float8_e8m0fnu included) as float32.
  static QParamBuffer of(const at::Tensor& t);
  // Takes ownership of values computed on the host.
  static QParamBuffer owning(std::vector<float> values);

  const float* data() const { return ptr_; }

 private:
  at::Tensor keep_;
  std::vector<float> storage_;
  const float* ptr_ = nullptr;
};

// Every scale must be positive and not NaN (read from CPU memory: no sync involved).
void check_scales_positive(const QParamBuffer& scale, int64_t n, const char* op);

// Reads a one-element switch tensor (bool or any number type; checked by the op's argument
// check) as a bool.
bool read_switch(const at::Tensor& flag);

}  // namespace coreai_opt::cpu
