#include "eager/program.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <c10/util/SmallVector.h>
#include <torch/csrc/autograd/graph_task.h>

#include <cmath>

#include "eager/frames.h"
#include "ops/fused_op_handle.h"
#include "ops/handle_table.h"

namespace coreai_opt::eager {

namespace {

using PythonSig = at::Tensor(const at::Tensor&, int64_t);

const c10::TypedOperatorHandle<PythonSig>& python_op() {
  static const auto handle =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("coreai_opt::_eager_apply_python_fake_quantizer", "")
          .typed<PythonSig>();
  return handle;
}

// Index into NativeSlot::range_* for an input dtype, or -1 when the native path lacks it.
int range_index(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float:
      return 0;
    case c10::ScalarType::Half:
      return 1;
    case c10::ScalarType::BFloat16:
      return 2;
    default:
      return -1;
  }
}

std::optional<double> pinned(double v) {
  return std::isnan(v) ? std::nullopt : std::optional<double>(v);
}

ops::HandleTable<EagerProgram> g_programs;

}  // namespace

EagerProgram::EagerProgram() : handle_(g_programs.add(this)) {}

EagerProgram::~EagerProgram() { g_programs.remove(handle_); }

EagerProgram& EagerProgram::from_handle(int64_t handle) {
  EagerProgram* program = g_programs.find(handle);
  TORCH_CHECK(program != nullptr, "coreai_opt eager: no EagerProgram with handle ", handle,
              " (the prepared model's tables were freed)");
  return *program;
}

int64_t EagerProgram::add_native_slot(std::vector<at::Tensor> state, std::vector<int64_t> pattern,
                                      c10::ScalarType dtype, int64_t quant_min, int64_t quant_max,
                                      bool symmetric, bool use_minval, bool e8m0, bool export_mode,
                                      std::string method, double averaging_constant,
                                      std::vector<double> ranges, int64_t python_id) {
  TORCH_CHECK(state.size() == 8, "EagerProgram.add_native_slot: expected 8 state tensors, got ",
              state.size());
  TORCH_CHECK(ranges.size() == 6, "EagerProgram.add_native_slot: expected 6 range values, got ",
              ranges.size());
  Slot slot;
  slot.native = true;
  slot.python_id = python_id;
  NativeSlot& s = slot.state;
  s.observer_on = state[0];
  s.observer_off = state[1];
  s.fake_quant_on = state[2];
  s.running_min = state[3];
  s.running_max = state[4];
  s.scale = state[5];
  s.zero_point = state[6];
  s.minval = state[7];
  s.pattern = std::move(pattern);
  s.dtype = dtype;
  s.quant_min = quant_min;
  s.quant_max = quant_max;
  s.symmetric = symmetric;
  s.use_minval = use_minval;
  s.e8m0 = e8m0;
  s.export_mode = export_mode;
  s.method = std::move(method);
  s.averaging_constant = averaging_constant;
  for (int i = 0; i < 3; ++i) {
    s.range_min[i] = pinned(ranges[2 * i]);
    s.range_max[i] = pinned(ranges[2 * i + 1]);
  }
  slots_.push_back(std::move(slot));
  return num_slots() - 1;
}

int64_t EagerProgram::add_python_slot(int64_t python_id) {
  Slot slot;
  slot.python_id = python_id;
  slots_.push_back(std::move(slot));
  return num_slots() - 1;
}

void EagerProgram::clear_slots() { slots_.clear(); }

uint64_t EagerProgram::key(int64_t module, int64_t base_id, int64_t call_index) {
  // 24 bits of module index, 16 of op base id, 24 of call index: far beyond any model.
  return (static_cast<uint64_t>(module) << 40) | (static_cast<uint64_t>(base_id) << 24) |
         static_cast<uint64_t>(call_index);
}

void EagerProgram::set_op_policy(int64_t module, int64_t base_id, int64_t call_index,
                                 std::vector<int64_t> input_indices,
                                 std::vector<int64_t> input_elements,
                                 std::vector<int64_t> input_slots,
                                 std::vector<int64_t> output_indices,
                                 std::vector<int64_t> output_slots) {
  TORCH_CHECK(module >= 0 && module < (int64_t{1} << 24) && base_id >= 0 &&
                  base_id < (int64_t{1} << 16) && call_index >= 0 &&
                  call_index < (int64_t{1} << 24),
              "EagerProgram.set_op_policy: index out of range (module ", module, ", op ", base_id,
              ", call ", call_index, ")");
  TORCH_CHECK(input_indices.size() == input_elements.size() &&
                  input_indices.size() == input_slots.size() &&
                  output_indices.size() == output_slots.size(),
              "EagerProgram.set_op_policy: index and slot lists differ in length");
  OpPolicy policy;
  for (size_t i = 0; i < input_indices.size(); ++i) {
    TORCH_CHECK(input_slots[i] >= 0 && input_slots[i] < num_slots(),
                "EagerProgram.set_op_policy: unknown slot ", input_slots[i]);
    policy.inputs.push_back(SlotUse{input_indices[i], input_elements[i], input_slots[i]});
  }
  for (size_t i = 0; i < output_indices.size(); ++i) {
    TORCH_CHECK(output_slots[i] >= 0 && output_slots[i] < num_slots(),
                "EagerProgram.set_op_policy: unknown slot ", output_slots[i]);
    policy.outputs.push_back(SlotUse{output_indices[i], -1, output_slots[i]});
  }
  policies_[key(module, base_id, call_index)] = std::move(policy);
}

void EagerProgram::push_frame(int64_t module) { eager::push_frame(this, module); }

void EagerProgram::pop_frame(int64_t module) { eager::pop_frame(this, module); }

const OpPolicy* EagerProgram::find(int64_t module, int64_t base_id, int64_t call_index) const {
  const auto it = policies_.find(key(module, base_id, call_index));
  return it == policies_.end() ? nullptr : &it->second;
}

at::Tensor EagerProgram::apply(int64_t slot_index, const at::Tensor& x) const {
  TORCH_CHECK(slot_index >= 0 && slot_index < num_slots(), "coreai_opt eager: fake-quantizer slot ",
              slot_index,
              " is not bound (the model's EagerProgram was not re-bound after a change)");
  const Slot& slot = slots_[slot_index];
  const int ri = range_index(x.scalar_type());
  if (!slot.native || ri < 0 || x.dim() != static_cast<int64_t>(slot.state.pattern.size())) {
    return python_op().call(x, slot.python_id);
  }
  const NativeSlot& s = slot.state;
  // Inline storage: no heap allocation per call for tensors of up to 8 dims.
  c10::SmallVector<c10::SymInt, 8> block;
  for (size_t d = 0; d < s.pattern.size(); ++d) {
    block.emplace_back(s.pattern[d] < 0 ? x.size(static_cast<int64_t>(d)) : s.pattern[d]);
  }
  // Backward passes (activation-checkpoint recompute, often on autograd's worker threads)
  // re-apply fake-quant but never observe: the forward already saw this batch.
  const bool in_backward = torch::autograd::get_current_graph_task_id() != -1;
  const at::Tensor& observer = (in_backward || s.export_mode) ? s.observer_off : s.observer_on;
  return ops::fused_fake_quantize_op().call(
      x, observer, s.fake_quant_on, s.running_min, s.running_max, s.scale, s.zero_point, s.minval,
      block, s.dtype, s.quant_min, s.quant_max, s.symmetric, s.use_minval, s.e8m0, s.method,
      s.averaging_constant, s.range_min[ri], s.range_max[ri]);
}

}  // namespace coreai_opt::eager
