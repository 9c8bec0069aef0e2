// fused_fake_quantize with its 18 non-input arguments bound once: the eager hot path of a
// Python fake-quantizer module.
//
// Calling fused_fake_quantize from Python converts each of its 19 arguments against the
// schema (a SymInt list, a ScalarType, a string, optional floats, ...): about 4 us of the
// 6.3 us a call on a 3x3 conv weight took, measured in a warm loop, and more inside a
// training step. A FakeQuantize binds its arguments when it builds them (once per input
// shape, dtype and state epoch) and then calls _fused_fake_quantize_bound(x, handle), which
// converts one tensor and one int. The bound arguments hold references to the module's
// state tensors, as the Python tuple they replace did; the handle object frees them.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <vector>

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

at::Tensor fused_fake_quantize_bound(const at::Tensor& x, int64_t handle) {
  const FusedArgs* a = g_bound.find(handle);
  TORCH_CHECK(a != nullptr, "coreai_opt::_fused_fake_quantize_bound: no bound arguments ",
              "with handle ", handle, " (their BoundFusedArgs object was freed)");
  // The object that owns *a stays alive for the call: its Python owner is on the stack.
  return fused_fake_quantize_op().call(
      x, a->observer_on, a->fake_quant_on, a->running_min, a->running_max, a->scale, a->zero_point,
      a->minval, a->block_size, a->dtype, a->quant_min, a->quant_max, a->symmetric, a->use_minval,
      a->e8m0, a->method, a->averaging_constant, a->range_min, a->range_max);
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
}

}  // namespace coreai_opt::ops
