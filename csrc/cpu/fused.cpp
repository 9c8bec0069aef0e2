// CPU kernels of the fused family: observe + qparams + fake-quantize in one call, the state
// written in place, and its straight-through backward.
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/ones_like.h>

#include <torch/library.h>
#include <tuple>

#include "cpu/fake_quantize.h"
#include "cpu/kernels/kernels.h"
#include "cpu/memory_order.h"
#include "cpu/observe.h"
#include "cpu/qparams.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::cpu {

namespace {

at::Tensor fused_fake_quantize_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& fake_quant_on, const at::Tensor& scale,
                                        const at::Tensor& zero_point, const at::Tensor& minval,
                                        c10::ScalarType dtype, int64_t quant_min, int64_t quant_max,
                                        bool use_minval);

// The fused op's body; with a mask tensor (bool, x's layout), the cachemask variant's: it
// also records where the straight-through gradient passes.
at::Tensor run_fused(const at::Tensor& x, const at::Tensor& observer_on,
                     const at::Tensor& fake_quant_on, const at::Tensor& running_min,
                     const at::Tensor& running_max, const at::Tensor& scale,
                     const at::Tensor& zero_point, const at::Tensor& minval,
                     at::IntArrayRef block_size, c10::ScalarType dtype, int64_t quant_min,
                     int64_t quant_max, bool symmetric, bool use_minval, bool e8m0,
                     c10::string_view method, double averaging_constant,
                     std::optional<double> range_min, std::optional<double> range_max,
                     at::Tensor* mask) {
  const char* op = mask != nullptr ? "fused_fake_quantize_cachemask" : "fused_fake_quantize";
  const auto checked = ops::check_fused_fake_quantize(
      x, observer_on, fake_quant_on, running_min, running_max, scale, zero_point, minval,
      c10::fromIntArrayRefSlow(block_size), dtype, quant_min, quant_max, method, averaging_constant,
      range_min, range_max, op);
  const auto& fmt = checked.format;
  // y has x's layout; the kernels run in its memory order (memory_order.h).
  const auto& q_sizes = *checked.q_sizes;
  OrderedCall call(x, q_sizes, formats::make_qparam_layout(x.sizes().vec(), q_sizes));
  const at::Tensor& xv = call.x();  // one contiguous view for both passes
  const at::Tensor& yv = call.out();
  const auto& layout = call.layout();
  const int64_t qn = scale.numel();

  if (read_switch(observer_on)) {
    float* rmin = running_min.mutable_data_ptr<float>();
    float* rmax = running_max.mutable_data_ptr<float>();
    if (!(range_min.has_value() && range_max.has_value())) {
      fold_range(batch_minmax(xv, layout), rmin, rmax, checked.method, averaging_constant);
    }
    if (fmt.is_float) {
      float_qparams_into(rmin, rmax, qn, formats::float_format_info(fmt.float_format), e8m0,
                         range_min, range_max, scale.mutable_data_ptr<float>());
    } else {
      int_qparams_into(rmin, rmax, qn, quant_min, quant_max, symmetric, range_min, range_max,
                       scale.mutable_data_ptr<float>(), zero_point.mutable_data_ptr<int32_t>(),
                       minval.mutable_data_ptr<float>());
    }
  }
  const bool fake_quant = read_switch(fake_quant_on);
  // The mask in the call's order (OrderedCall::extra_output), for float32 x on the kernels;
  // other dtypes derive it from the backward op below.
  const bool mask_kernels = mask != nullptr && fake_quant && xv.scalar_type() == at::kFloat;
  const at::Tensor mv = mask_kernels ? call.extra_output(at::kBool) : at::Tensor();
  if (!fake_quant) {
    yv.copy_(xv);
  } else if (xv.numel() > 0) {
    if (fmt.is_float) {
      const auto params = FloatQParams::of(scale, fmt.float_format, op).params();
      if (mask_kernels) {
        kernels().fake_quantize_float_masked(xv, yv, mv, layout, params);
      } else {
        kernels().fake_quantize_float(xv, yv, layout, params);
      }
    } else {
      const auto q =
          use_minval ? IntQParams::of(scale, std::nullopt, minval, quant_min, quant_max, op)
                     : IntQParams::of(scale, zero_point, std::nullopt, quant_min, quant_max, op);
      if (mask_kernels) {
        kernels().fake_quantize_int_masked(xv, yv, mv, layout, q.params());
      } else {
        kernels().fake_quantize_int(xv, yv, layout, q.params());
      }
    }
  }
  if (mask != nullptr) {
    if (mask_kernels) {
      *mask = call.finish_extra();
    } else if (!fake_quant) {
      *mask = at::ones_like(x, x.options().dtype(at::kBool));
    } else {
      // The STE of a gradient of ones is the mask itself (1.0 or 0.0 per element).
      const auto ones = at::ones_like(x);
      *mask = fused_fake_quantize_backward(ones, x, fake_quant_on, scale, zero_point, minval, dtype,
                                           quant_min, quant_max, use_minval)
                  .ne(0);
    }
  }
  return call.finish();
}

at::Tensor fused_fake_quantize(const at::Tensor& x, const at::Tensor& observer_on,
                               const at::Tensor& fake_quant_on, const at::Tensor& running_min,
                               const at::Tensor& running_max, const at::Tensor& scale,
                               const at::Tensor& zero_point, const at::Tensor& minval,
                               at::IntArrayRef block_size, c10::ScalarType dtype, int64_t quant_min,
                               int64_t quant_max, bool symmetric, bool use_minval, bool e8m0,
                               c10::string_view method, double averaging_constant,
                               std::optional<double> range_min, std::optional<double> range_max) {
  return run_fused(x, observer_on, fake_quant_on, running_min, running_max, scale, zero_point,
                   minval, block_size, dtype, quant_min, quant_max, symmetric, use_minval, e8m0,
                   method, averaging_constant, range_min, range_max, nullptr);
}

std::tuple<at::Tensor, at::Tensor> fused_fake_quantize_cachemask(
    const at::Tensor& x, const at::Tensor& observer_on, const at::Tensor& fake_quant_on,
    const at::Tensor& running_min, const at::Tensor& running_max, const at::Tensor& scale,
    const at::Tensor& zero_point, const at::Tensor& minval, at::IntArrayRef block_size,
    c10::ScalarType dtype, int64_t quant_min, int64_t quant_max, bool symmetric, bool use_minval,
    bool e8m0, c10::string_view method, double averaging_constant, std::optional<double> range_min,
    std::optional<double> range_max) {
  at::Tensor mask;
  at::Tensor y =
      run_fused(x, observer_on, fake_quant_on, running_min, running_max, scale, zero_point, minval,
                block_size, dtype, quant_min, quant_max, symmetric, use_minval, e8m0, method,
                averaging_constant, range_min, range_max, &mask);
  return {y, mask};
}

at::Tensor fake_quantize_mask_backward(const at::Tensor& grad, const at::Tensor& mask) {
  ops::check_fake_quantize_mask_backward(grad, mask);
  at::Tensor gx = at::empty_like(mask, grad.options().dtype(grad.scalar_type()));
  // The kernel walks flat memory, so it serves any dense layout (channels_last, transposed)
  // that grad, mask and gx share; gx takes a dense mask's strides, and a grad laid out
  // otherwise is first copied into the mask's memory order (in tiles, contiguous_copy.h).
  if (grad.scalar_type() == at::kFloat && mask.is_non_overlapping_and_dense()) {
    const at::Tensor g = in_memory_order_of(grad, mask);
    if (gx.numel() > 0) kernels().ste_mask_backward(g, mask, gx);
    return gx;
  }
  // Other dtypes and non-dense masks: the same product through ATen, in mask's layout.
  gx.copy_(grad.mul(mask.to(grad.scalar_type())));
  return gx;
}

void fake_quantize_mask_backward_(const at::Tensor& grad, const at::Tensor& mask) {
  ops::check_fake_quantize_mask_backward(grad, mask, "fake_quantize_mask_backward_");
  // The vectorized kernel reads and writes one flat index at a time, so it may write into
  // the grad it reads when both share one dense layout.
  if (grad.scalar_type() == at::kFloat && mask.is_non_overlapping_and_dense() &&
      grad.strides() == mask.strides()) {
    if (grad.numel() > 0) kernels().ste_mask_backward(grad, mask, grad);
    return;
  }
  grad.mul_(mask.to(grad.scalar_type()));
}

at::Tensor fused_fake_quantize_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& fake_quant_on, const at::Tensor& scale,
                                        const at::Tensor& zero_point, const at::Tensor& minval,
                                        c10::ScalarType dtype, int64_t quant_min, int64_t quant_max,
                                        bool use_minval) {
  const char* op = "fused_fake_quantize_backward";
  const auto checked = ops::check_fused_fake_quantize_backward(
      grad, x, fake_quant_on, scale, zero_point, minval, dtype, quant_min, quant_max, use_minval);
  const auto& fmt = checked.format;
  if (!read_switch(fake_quant_on)) {
    at::Tensor gx = at::empty_like(x);  // x's layout, as the forward's y
    gx.copy_(grad);
    return gx;
  }
  OrderedCall call(x, ops::qparam_sizes(x, scale), *checked.layout);
  const at::Tensor& xv = call.x();
  const at::Tensor gv = call.input(grad);
  const at::Tensor& gxv = call.out();
  const auto& layout = call.layout();
  if (xv.numel() > 0) {
    if (fmt.is_float) {
      kernels().fake_quantize_float_backward(
          gv, xv, gxv, layout, FloatQParams::of(scale, fmt.float_format, op).params());
    } else {
      const auto q =
          use_minval ? IntQParams::of(scale, std::nullopt, minval, quant_min, quant_max, op)
                     : IntQParams::of(scale, zero_point, std::nullopt, quant_min, quant_max, op);
      kernels().fake_quantize_int_backward(gv, xv, gxv, layout, q.params());
    }
  }
  return call.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CPU, m) { COREAI_OPT_FUSED_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::cpu
