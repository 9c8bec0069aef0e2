// EagerProgram: the C++ tables of one eager-prepared model (torch.classes.coreai_opt.EagerProgram).
//
// Python builds it at prepare time and re-binds its fake-quantizer slots whenever the state
// tensors they point at are replaced (.to(), load_state_dict, deepcopy, ...). The intercepting
// kernel only reads it: per (module, op base name, call index) which arguments and outputs go
// through which fake-quantizer slot. A slot is either native (the fused observe +
// fake-quantize op on bound state tensors, no Python) or a Python fake-quantizer module called
// through the coreai_opt::_eager_apply_python_fake_quantizer op (user-defined implementations).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/custom_class.h>

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace coreai_opt::eager {

struct NativeSlot {
  at::Tensor observer_on, observer_off, fake_quant_on;
  at::Tensor running_min, running_max, scale, zero_point, minval;
  std::vector<int64_t> pattern;  // per dim: block size, or -1 for "the input's size"
  c10::ScalarType dtype = c10::ScalarType::Char;
  int64_t quant_min = 0, quant_max = 0;
  bool symmetric = false, use_minval = false, e8m0 = false, export_mode = false;
  std::string method;
  double averaging_constant = 0.01;
  // float_range as used for float32, float16, bfloat16 inputs (nullopt: observed bound).
  std::optional<double> range_min[3], range_max[3];
};

struct Slot {
  bool native = false;
  NativeSlot state;
  int64_t python_id = -1;  // the Python fake-quantizer (fallback for what the native path lacks)
};

// One tensor position of an op call: argument index in the schema and, for a Tensor[]
// argument, the element index (-1 for a plain tensor argument / an output).
struct SlotUse {
  int64_t index = 0;
  int64_t element = -1;
  int64_t slot = -1;
};

struct OpPolicy {
  std::vector<SlotUse> inputs;
  std::vector<SlotUse> outputs;
};

class EagerProgram : public torch::CustomClassHolder {
 public:
  EagerProgram();
  ~EagerProgram() override;
  EagerProgram(const EagerProgram&) = delete;
  EagerProgram& operator=(const EagerProgram&) = delete;

  // The handle the frame ops (_eager_push_frame / _eager_pop_frame) take: a plain int is
  // several times cheaper to pass from a Python hook than a custom-class method call.
  int64_t handle() const { return handle_; }
  // The live program with this handle (raises for an unknown one).
  static EagerProgram& from_handle(int64_t handle);

  // -- building (Python, at prepare / re-bind) --------------------------------------------
  // state: observer_on, observer_off, fake_quant_on, running_min, running_max, scale,
  // zero_point, minval. ranges: six doubles (min/max for float32, float16, bfloat16), NaN
  // meaning "not pinned".
  int64_t add_native_slot(std::vector<at::Tensor> state, std::vector<int64_t> pattern,
                          c10::ScalarType dtype, int64_t quant_min, int64_t quant_max,
                          bool symmetric, bool use_minval, bool e8m0, bool export_mode,
                          std::string method, double averaging_constant, std::vector<double> ranges,
                          int64_t python_id);
  int64_t add_python_slot(int64_t python_id);
  void clear_slots();
  int64_t num_slots() const { return static_cast<int64_t>(slots_.size()); }
  void set_op_policy(int64_t module, int64_t base_id, int64_t call_index,
                     std::vector<int64_t> input_indices, std::vector<int64_t> input_elements,
                     std::vector<int64_t> input_slots, std::vector<int64_t> output_indices,
                     std::vector<int64_t> output_slots);
  void clear_policies() { policies_.clear(); }
  int64_t num_policies() const { return static_cast<int64_t>(policies_.size()); }
  void set_recording(bool on) { recording_ = on; }
  bool recording() const { return recording_; }

  // -- module frames (forward pre / post hooks) --------------------------------------------
  void push_frame(int64_t module);
  void pop_frame(int64_t module);

  // -- the intercepting kernel ----------------------------------------------------------------
  const OpPolicy* find(int64_t module, int64_t base_id, int64_t call_index) const;
  at::Tensor apply(int64_t slot, const at::Tensor& x) const;

 private:
  static uint64_t key(int64_t module, int64_t base_id, int64_t call_index);
  int64_t handle_ = 0;
  std::vector<Slot> slots_;
  std::unordered_map<uint64_t, OpPolicy> policies_;
  bool recording_ = false;
};

}  // namespace coreai_opt::eager
