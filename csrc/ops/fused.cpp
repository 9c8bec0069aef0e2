// The fused observe + fake-quantize op that FakeQuantize.forward calls once per step.
#include "ops/schemas.h"

namespace coreai_opt::ops {

void define_fused(torch::Library& m) {
  // fused_fake_quantize(x, observer_on, fake_quant_on, running_min!, running_max!, scale!,
  //                     zero_point!, minval!, block_size, dtype, quant_min, quant_max,
  //                     symmetric, use_minval, e8m0, method, averaging_constant,
  //                     range_min?, range_max?) -> y
  //   observer_on / fake_quant_on: one-element tensors (bool or integer), read by the
  //   kernel, so the caller never branches on them and the op exports as one node.
  //   If observer_on: update_range(x, running_*, block_size, method) with this batch, then
  //   write the qparams of the running range into scale / zero_point / minval (integer
  //   dtypes) or scale (float formats; zero_point / minval untouched). When range_min and
  //   range_max are both given the observation is skipped: the qparams are fixed.
  //   If fake_quant_on: y = fake-quantize(x) with the (updated) qparams, else y = copy of x.
  //   y has x's layout (torch.empty_like(x)): a channels_last x gives a channels_last y,
  //   computed without copying x. Tagged flexible_layout (schemas.h), so under Inductor x
  //   and y keep the layout Inductor picks for x.
  //   dtype: an integer dtype (int2..int8, uint2..uint8; quant_min / quant_max give the
  //   range) or float8_e4m3fn / float8_e5m2 / float4_e2m1fn_x2.
  //   State tensors: float32 running_min / running_max / scale / minval and int32
  //   zero_point, all of the qparam shape [x.size(d) / block_size[d]].
  def_layout_preserving(
      m,
      "fused_fake_quantize(Tensor x, Tensor observer_on, Tensor fake_quant_on, "
      "Tensor(a!) running_min, Tensor(b!) running_max, Tensor(c!) scale, "
      "Tensor(d!) zero_point, Tensor(e!) minval, SymInt[] block_size, ScalarType dtype, "
      "int quant_min, int quant_max, bool symmetric, bool use_minval, bool e8m0, str method, "
      "float averaging_constant=0.01, float? range_min=None, float? range_max=None) -> Tensor");
  // fused_fake_quantize_backward(grad, x, fake_quant_on, scale, zero_point, minval, dtype,
  //                              quant_min, quant_max, use_minval) -> grad_x
  //   The STE of the matching fake-quantize when fake_quant_on, else grad unchanged;
  //   grad_x has x's layout (grad may have any).
  def_layout_preserving_backward(
      m,
      "fused_fake_quantize_backward(Tensor grad, Tensor x, Tensor fake_quant_on, "
      "Tensor scale, Tensor zero_point, Tensor minval, ScalarType dtype, int quant_min, "
      "int quant_max, bool use_minval) -> Tensor");
  // fused_fake_quantize_cachemask(<fused_fake_quantize's arguments>) -> (y, mask)
  //   fused_fake_quantize, and a bool mask of x's shape and layout: true where the
  //   straight-through gradient passes (fake_quant_on off, or the element's code within
  //   [quant_min, quant_max] / |x / scale| within the float format's range, with the qparams
  //   y used). fused_fake_quantize's autograd saves this mask (one byte per element) for
  //   its backward instead of x.
  def_layout_preserving(
      m,
      "fused_fake_quantize_cachemask(Tensor x, Tensor observer_on, Tensor fake_quant_on, "
      "Tensor(a!) running_min, Tensor(b!) running_max, Tensor(c!) scale, "
      "Tensor(d!) zero_point, Tensor(e!) minval, SymInt[] block_size, ScalarType dtype, "
      "int quant_min, int quant_max, bool symmetric, bool use_minval, bool e8m0, str method, "
      "float averaging_constant=0.01, float? range_min=None, float? range_max=None) "
      "-> (Tensor, Tensor)");
  // fake_quantize_mask_backward(grad, mask) -> grad_x
  //   grad * mask (1.0 where mask, else 0.0: a NaN gradient stays NaN, as in
  //   fused_fake_quantize_backward); grad_x has mask's layout and grad's dtype.
  def_layout_preserving_backward(m,
                                 "fake_quantize_mask_backward(Tensor grad, Tensor mask) -> Tensor");
  // fake_quantize_mask_backward_(grad, mask) -> ()
  //   The same product written into grad (what the fused op's backward node runs when it
  //   holds the only reference to the incoming gradient and its storage). Returns nothing:
  //   functionalization refuses custom ops whose outputs alias an input.
  m.def("fake_quantize_mask_backward_(Tensor(a!) grad, Tensor mask) -> ()",
        {at::Tag::pt2_compliant_tag});
}

}  // namespace coreai_opt::ops
