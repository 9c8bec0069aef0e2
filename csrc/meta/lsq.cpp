// Meta kernels of the lsq family.
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "meta/like.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::meta {

namespace {

at::Tensor fake_quantize_lsq(const at::Tensor& x, const at::Tensor& scale,
                             const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max,
                             double /*grad_factor*/) {
  ops::check_fake_quantize_lsq(x, scale, zero_point, quant_min, quant_max);
  return at::empty_like(x);  // x's layout, as every device returns
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quantize_lsq_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max, double /*grad_factor*/) {
  ops::check_fake_quantize_lsq_backward(grad, x, scale, zero_point, quant_min, quant_max);
  return {at::empty_like(x), like(scale), like(zero_point)};
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Meta, m) { COREAI_OPT_LSQ_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::meta
