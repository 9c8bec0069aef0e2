// fused_fake_quantize with its 18 non-input arguments bound once: the eager hot path of a
// Python fake-quantizer module, and what torch.compile records for it.
//
// Calling fused_fake_quantize from Python converts each of its 19 arguments against the
// schema (a SymInt list, a ScalarType, a string, optional floats, ...): about 4 us of the
// 6.3 us a call on a 3x3 conv weight took, measured in a warm loop, and more inside a
// training step. A FakeQuantize binds its arguments when it builds them (once per input
// shape, dtype and state epoch) and then calls _fused_fake_quantize_bound(x, handle), which
// converts one tensor and one int. The bound arguments hold references to the module's
// state tensors, as the Python tuple they replace did; the handle object frees them.
//
// Under torch.compile a fake-quantizer calls _fused_fake_quantize_bound_traced(x, handle,
// block_size) instead (its trace plan holds the handle): the compiled graph then takes x
// alone, not the seven state and switch tensors, which Dynamo would otherwise guard before
// every call of the compiled model (a TENSOR_MATCH each), and the compiled code converts
// three arguments per call instead of sixteen. The state the op writes is hidden from the
// graph, which is sound because nothing else in a graph reads it: the op is opaque to
// Inductor, AOTAutograd never recomputes an op outside torch's allowlist, and two calls
// under one handle are ordered by data (graph mode calls one fake-quantizer twice only
// across a rank-reducing op, and only a call of the planned rank is recorded this way).
// block_size is an argument because it follows x's (possibly symbolic) shape.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/differentiable.h"
#include "ops/fused_op_handle.h"
#include "ops/handle_table.h"
#include "ops/schemas.h"

namespace coreai_opt::ops {

namespace {

// fused_fake_quantize's arguments after x, as the op takes them.
struct FusedArgs {
  at::Tensor observer_on, fake_quant_on, running_min, running_max, scale, zero_point, minval;
  std::vector<c10::SymInt> block_size;
  c10::ScalarType dtype = c10::ScalarType::Char;
  int64_t quant_min = 0, quant_max = 0;
  bool symmetric = false, use_minval = false, e8m0 = false;
  std::string method;
  double averaging_constant = 0.01;
  std::optional<double> range_min, range_max;
};

// The bound arguments by handle (a plain int is what the per-call op takes).
HandleTable<const FusedArgs> g_bound;

}  // namespace

// The owner of one set of bound arguments (torch.classes.coreai_opt.BoundFusedArgs): the
// handle stays valid while this object lives.
class BoundFusedArgs : public torch::CustomClassHolder {
 public:
  explicit BoundFusedArgs(FusedArgs args) : args_(std::move(args)), handle_(g_bound.add(&args_)) {}
  ~BoundFusedArgs() override { g_bound.remove(handle_); }
  BoundFusedArgs(const BoundFusedArgs&) = delete;
  BoundFusedArgs& operator=(const BoundFusedArgs&) = delete;
  int64_t handle() const { return handle_; }

 private:
  const FusedArgs args_;
  const int64_t handle_;
};

namespace {

c10::intrusive_ptr<BoundFusedArgs> bind_fused_fake_quantize(
    const at::Tensor& observer_on, const at::Tensor& fake_quant_on, const at::Tensor& running_min,
    const at::Tensor& running_max, const at::Tensor& scale, const at::Tensor& zero_point,
    const at::Tensor& minval, c10::SymIntArrayRef block_size, c10::ScalarType dtype,
    int64_t quant_min, int64_t quant_max, bool symmetric, bool use_minval, bool e8m0,
    c10::string_view method, double averaging_constant, std::optional<double> range_min,
    std::optional<double> range_max) {
  FusedArgs a{observer_on,
              fake_quant_on,
              running_min,
              running_max,
              scale,
              zero_point,
              minval,
              std::vector<c10::SymInt>(block_size.begin(), block_size.end()),
              dtype,
              quant_min,
              quant_max,
              symmetric,
              use_minval,
              e8m0,
              std::string(method),
              averaging_constant,
              range_min,
              range_max};
  return c10::make_intrusive<BoundFusedArgs>(std::move(a));
}

// The arguments bound under handle, or an error naming op. The object that owns them stays
// alive for the call: its Python owner is held by the caller (the fake-quantizer).
const FusedArgs& bound_args(int64_t handle, const char* op) {
  const FusedArgs* a = g_bound.find(handle);
  TORCH_CHECK(a != nullptr, "coreai_opt::", op, ": no bound arguments with handle ", handle,
              " (their BoundFusedArgs object was freed)");
  return *a;
}

// call(x, <the bound arguments>, block_size): the fused op's argument list, written once
// for every form below.
template <typename Call>
auto with_bound_args(const at::Tensor& x, const FusedArgs& a, c10::SymIntArrayRef block_size,
                     Call&& call) {
  return call(x, a.observer_on, a.fake_quant_on, a.running_min, a.running_max, a.scale,
              a.zero_point, a.minval, block_size, a.dtype, a.quant_min, a.quant_max, a.symmetric,
              a.use_minval, a.e8m0, a.method, a.averaging_constant, a.range_min, a.range_max);
}

// The eager form is a composite kernel: the fused op's own Autograd kernel records the graph.
at::Tensor fused_fake_quantize_bound(const at::Tensor& x, int64_t handle) {
  const FusedArgs& a = bound_args(handle, "_fused_fake_quantize_bound");
  return with_bound_args(x, a, a.block_size, [](const auto&... args) {
    return fused_fake_quantize_op().call(args...);
  });
}

// The traced forms run below autograd (their Autograd kernels see to that). autograd's
// call_below runs the fused op there and bumps the version counters of the state its schema
// marks as written, as the fused op's own Autograd kernel does, so a reader that compares
// versions (a fake-quantizer's version cache) sees the write.
at::Tensor fused_fake_quantize_bound_traced(const at::Tensor& x, int64_t handle,
                                            c10::SymIntArrayRef block_size) {
  const FusedArgs& a = bound_args(handle, "_fused_fake_quantize_bound_traced");
  return with_bound_args(x, a, block_size, [](const auto&... args) {
    return autograd::call_below(fused_fake_quantize_op(), args...);
  });
}

std::tuple<at::Tensor, at::Tensor> fused_fake_quantize_bound_cachemask(
    const at::Tensor& x, int64_t handle, c10::SymIntArrayRef block_size) {
  const FusedArgs& a = bound_args(handle, "_fused_fake_quantize_bound_cachemask");
  return with_bound_args(x, a, block_size, [](const auto&... args) {
    return autograd::call_below(fused_fake_quantize_cachemask_op(), args...);
  });
}

// Meta kernels (what torch.compile traces with): outputs in x's layout, as every device
// gives them. The handle must be live; the device kernel checks the arguments.
at::Tensor fused_fake_quantize_bound_traced_meta(const at::Tensor& x, int64_t handle,
                                                 c10::SymIntArrayRef /*block_size*/) {
  bound_args(handle, "_fused_fake_quantize_bound_traced");
  return at::empty_like(x);
}

std::tuple<at::Tensor, at::Tensor> fused_fake_quantize_bound_cachemask_meta(
    const at::Tensor& x, int64_t handle, c10::SymIntArrayRef /*block_size*/) {
  bound_args(handle, "_fused_fake_quantize_bound_cachemask");
  return {at::empty_like(x), at::empty_like(x, x.options().dtype(at::kBool))};
}

}  // namespace

void define_bound_fused(torch::Library& m) {
  m.class_<BoundFusedArgs>("BoundFusedArgs").def("handle", &BoundFusedArgs::handle);
  // _bind_fused_fake_quantize(<fused_fake_quantize's arguments after x>) -> BoundFusedArgs
  //   Keeps the arguments (the state tensors by reference) under a new handle, valid while
  //   the returned object lives. No checks here: fused_fake_quantize checks every call.
  m.def(
      "_bind_fused_fake_quantize(Tensor observer_on, Tensor fake_quant_on, "
      "Tensor running_min, Tensor running_max, Tensor scale, Tensor zero_point, "
      "Tensor minval, SymInt[] block_size, ScalarType dtype, int quant_min, int quant_max, "
      "bool symmetric, bool use_minval, bool e8m0, str method, float averaging_constant, "
      "float? range_min, float? range_max) -> __torch__.torch.classes.coreai_opt.BoundFusedArgs",
      &bind_fused_fake_quantize);
  // _fused_fake_quantize_bound(x, handle) -> y
  //   fused_fake_quantize(x, <the arguments bound under handle>). A composite kernel, so
  //   autograd runs through fused_fake_quantize's own. Eager plumbing: never traced (a
  //   fake-quantizer under torch.compile / export calls fused_fake_quantize itself).
  m.def("_fused_fake_quantize_bound(Tensor x, int handle) -> Tensor", &fused_fake_quantize_bound);
  // _fused_fake_quantize_bound_traced(x, handle, block_size) -> y
  //   fused_fake_quantize(x, <the arguments bound under handle, block_size replaced>): what
  //   a fake-quantizer under torch.compile records (not under torch.export, whose graph
  //   keeps the state tensors). Writes the bound state without declaring it (see the top
  //   of this file). Autograd: the straight-through mask of
  //   _fused_fake_quantize_bound_cachemask (autograd/fused.cpp).
  def_layout_preserving(
      m, "_fused_fake_quantize_bound_traced(Tensor x, int handle, SymInt[] block_size) -> Tensor");
  // _fused_fake_quantize_bound_cachemask(x, handle, block_size) -> (y, mask)
  //   fused_fake_quantize_cachemask with the bound arguments, block_size replaced.
  def_layout_preserving(m,
                        "_fused_fake_quantize_bound_cachemask(Tensor x, int handle, "
                        "SymInt[] block_size) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(coreai_opt, CompositeExplicitAutograd, m) {
  m.impl("_fused_fake_quantize_bound_traced", &fused_fake_quantize_bound_traced);
  m.impl("_fused_fake_quantize_bound_cachemask", &fused_fake_quantize_bound_cachemask);
}

TORCH_LIBRARY_IMPL(coreai_opt, Meta, m) {
  m.impl("_fused_fake_quantize_bound_traced", &fused_fake_quantize_bound_traced_meta);
  m.impl("_fused_fake_quantize_bound_cachemask", &fused_fake_quantize_bound_cachemask_meta);
}

}  // namespace coreai_opt::ops
