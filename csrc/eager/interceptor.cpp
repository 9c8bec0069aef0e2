// The boxed kernel every intercepted aten overload gets on kInterceptKey (one functor per
// overload, carrying its entry).
//
// Per call: switch interception off for the rest of the call (the op's insides and the
// fake-quantize ops are not intercepted), count the call in the innermost module frame, look
// its policy up in that frame's EagerProgram, fake-quantize the listed inputs, redispatch
// below the key, fake-quantize the listed outputs. No Python on this path: a Python
// fake-quantizer is only reached through an op call when a slot needs one.
#include "eager/interceptor.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>

#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "eager/frames.h"
#include "eager/key.h"
#include "eager/program.h"
#include "eager/scope.h"
#include "ops/checks.h"

namespace coreai_opt::eager {

namespace {

struct OpEntry {
  int64_t base_id = 0;
  bool pass_through = false;
  bool in_place = false;  // the first argument is written and returned (add_, mul_, ...)
};

// What register_op registered, to refuse re-registering an overload with other settings. The
// kernels carry their own entry (InterceptKernel), so the per-call path never reads this.
std::mutex g_entries_mutex;
std::unordered_map<c10::OperatorName, OpEntry> g_entries;
std::vector<std::unique_ptr<torch::Library>> g_libraries;
std::once_flag g_fallback_once;

bool quantizable(const at::Tensor& t) {
  if (!t.defined() || t.unsafeGetTensorImpl()->is_wrapped_number() || t.numel() <= 1) {
    return false;
  }
  return ops::is_float_input_dtype(t.scalar_type());
}

using RecordSig = void(c10::string_view, c10::string_view, int64_t, int64_t, int64_t,
                       const c10::List<std::optional<at::Tensor>>&, at::IntArrayRef,
                       at::IntArrayRef, const c10::List<std::optional<at::Tensor>>&);

const c10::TypedOperatorHandle<RecordSig>& record_op() {
  static const auto handle = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("coreai_opt::_eager_record_call", "")
                                 .typed<RecordSig>();
  return handle;
}

void redispatch(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  op.redispatchBoxed(ks & keys_after_intercept(), stack);
}

// Prepare's recording pass: run the op, then hand every tensor argument and output to
// Python (which decides what to quantize and builds the EagerProgram's policies).
void record(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack,
            const Frame& frame, int64_t base_id, int64_t call_index) {
  const auto& schema = op.schema();
  const size_t n_args = schema.arguments().size();
  const size_t first = stack->size() - n_args;
  c10::List<std::optional<at::Tensor>> inputs;
  std::vector<int64_t> indices, elements;
  for (size_t i = 0; i < n_args; ++i) {
    const c10::IValue& v = (*stack)[first + i];
    if (v.isTensor()) {
      inputs.push_back(v.toTensor());
      indices.push_back(static_cast<int64_t>(i));
      elements.push_back(-1);
    } else if (v.isTensorList()) {
      const auto list = v.toTensorList();
      for (size_t j = 0; j < list.size(); ++j) {
        inputs.push_back(list.get(j));
        indices.push_back(static_cast<int64_t>(i));
        elements.push_back(static_cast<int64_t>(j));
      }
    }
  }
  redispatch(op, ks, stack);
  const size_t n_ret = schema.returns().size();
  c10::List<std::optional<at::Tensor>> outputs;
  for (size_t i = stack->size() - n_ret; i < stack->size(); ++i) {
    const c10::IValue& v = (*stack)[i];
    outputs.push_back(v.isTensor() ? std::optional<at::Tensor>(v.toTensor()) : std::nullopt);
  }
  const auto& name = op.operator_name();
  record_op().call(name.name, name.overload_name, frame.module, base_id, call_index, inputs,
                   indices, elements, outputs);
}

void intercept(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack,
               const OpEntry& entry) {
  c10::impl::ExcludeDispatchKeyGuard no_reentry(kInterceptKey);
  Frame* frame = current_frame();
  if (frame == nullptr) {  // outside every module frame: nothing to count or quantize
    redispatch(op, ks, stack);
    return;
  }
  if (frame->counters.size() <= static_cast<size_t>(entry.base_id)) {
    frame->counters.resize(entry.base_id + 1, 0);
  }
  const int64_t call_index = frame->counters[entry.base_id]++;
  const EagerProgram& program = *frame->program;
  if (program.recording()) {
    record(op, ks, stack, *frame, entry.base_id, call_index);
    return;
  }
  const OpPolicy* policy = program.find(frame->module, entry.base_id, call_index);
  if (policy == nullptr) {
    redispatch(op, ks, stack);
    return;
  }
  const size_t n_args = op.schema().arguments().size();
  const size_t first = stack->size() - n_args;
  for (const SlotUse& use : policy->inputs) {
    c10::IValue& v = (*stack)[first + use.index];
    if (use.element < 0) {
      if (!v.isTensor() || !quantizable(v.toTensor())) {
        continue;
      }
      if (entry.in_place && use.index == 0) {
        // The op writes into its first argument: quantize that tensor itself, so the caller's
        // tensor (which the op returns) stays the one that is modified. The fake-quantizer
        // reads a clone: it saves its input for backward, and copy_ is about to change it.
        const at::Tensor& self = v.toTensor();
        self.copy_(program.apply(use.slot, self.clone()));
      } else {
        v = program.apply(use.slot, v.toTensor());
      }
    } else if (v.isTensorList()) {
      auto list = v.toTensorList();
      if (use.element < static_cast<int64_t>(list.size()) && quantizable(list.get(use.element))) {
        list.set(use.element, program.apply(use.slot, list.get(use.element)));
      }
    }
  }
  redispatch(op, ks, stack);
  const size_t n_ret = op.schema().returns().size();
  const size_t first_ret = stack->size() - n_ret;
  for (const SlotUse& use : policy->outputs) {
    c10::IValue& r = (*stack)[first_ret + use.index];
    if (!r.isTensor() || !quantizable(r.toTensor())) {
      continue;
    }
    if (entry.in_place && use.index == 0) {
      const at::Tensor& out = r.toTensor();
      out.copy_(program.apply(use.slot, out.clone()));
    } else {
      r = program.apply(use.slot, r.toTensor());
    }
  }
}

// The kernel registered for one intercepted overload. It carries the overload's entry, so a
// call takes no lock and hashes no operator name to find it.
class InterceptKernel final : public c10::OperatorKernel {
 public:
  explicit InterceptKernel(OpEntry entry) : entry_(entry) {}
  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
    intercept(op, ks, stack, entry_);
  }

 private:
  const OpEntry entry_;
};

// Container ops whose C++ bodies call aten ops themselves (scaled_dot_product_attention,
// lstm, einsum, ...): switch interception off for their insides so those are not seen as
// separate matmul / softmax / bmm calls.
void pass_through_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks,
                         torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_reentry(kInterceptKey);
  redispatch(op, ks, stack);
}

}  // namespace

void ensure_fallback() {
  std::call_once(g_fallback_once, [] {
    TORCH_CHECK(!c10::Dispatcher::singleton().hasBackendFallbackForDispatchKey(kInterceptKey),
                "coreai_opt eager mode intercepts ops through the dispatch key ", kInterceptKey,
                ", but a fallback kernel for that key is already registered (a PrivateUse1 backend "
                "with autocast support, most likely). The two cannot coexist in one process: use "
                "execution_mode='graph' instead.");
    static torch::Library library(torch::Library::IMPL, "_", kInterceptKey, __FILE__, __LINE__);
    library.fallback(torch::CppFunction::makeFallthrough());
  });
}

namespace {

bool writes_first_argument(const c10::FunctionSchema& schema) {
  if (schema.arguments().empty() || schema.returns().empty()) {
    return false;
  }
  const auto* alias = schema.arguments()[0].alias_info();
  return alias != nullptr && alias->isWrite();
}

}  // namespace

void register_op(const std::string& name, const std::string& overload, int64_t base_id,
                 bool pass_through) {
  ensure_fallback();
  const auto handle = c10::Dispatcher::singleton().findSchema({name, overload});
  TORCH_CHECK(handle.has_value(), "coreai_opt eager: no operator ", name,
              overload.empty() ? "" : ".", overload, " to intercept");
  TORCH_CHECK(base_id >= 0 && base_id < (int64_t{1} << 16),
              "coreai_opt eager: op base id out of range: ", base_id);
  std::lock_guard<std::mutex> lock(g_entries_mutex);
  const c10::OperatorName key{name, overload};
  const auto it = g_entries.find(key);
  if (it != g_entries.end()) {
    TORCH_CHECK(it->second.base_id == base_id && it->second.pass_through == pass_through,
                "coreai_opt eager: ", name, ".", overload,
                " is already intercepted with other settings");
    return;
  }
  TORCH_CHECK(!handle->hasKernelForDispatchKey(kInterceptKey), "coreai_opt eager: ", name, ".",
              overload, " already has a kernel for dispatch key ", kInterceptKey,
              " from another library; eager mode cannot intercept it (use graph mode)");
  const auto sep = name.find("::");
  TORCH_CHECK(sep != std::string::npos,
              "coreai_opt eager: operator name without namespace: ", name);
  const std::string ns = name.substr(0, sep);
  const std::string op_name = name.substr(sep + 2) + (overload.empty() ? "" : "." + overload);
  const OpEntry entry{base_id, pass_through, writes_first_argument(handle->schema())};
  auto library =
      std::make_unique<torch::Library>(torch::Library::IMPL, ns, kInterceptKey, __FILE__, __LINE__);
  if (pass_through) {
    library->impl(op_name.c_str(),
                  torch::CppFunction::makeFromBoxedFunction<&pass_through_kernel>());
  } else {
    library->impl(op_name.c_str(), torch::CppFunction::makeFromBoxedFunctor(
                                       std::make_unique<InterceptKernel>(entry)));
  }
  g_libraries.push_back(std::move(library));
  g_entries[key] = entry;
}

namespace {

void register_op_entry(c10::string_view name, c10::string_view overload, int64_t base_id,
                       bool pass_through) {
  register_op(std::string(name), std::string(overload), base_id, pass_through);
}

void push_frame_entry(int64_t program, int64_t module) {
  EagerProgram::from_handle(program).push_frame(module);
}
void pop_frame_entry(int64_t program, int64_t module) {
  EagerProgram::from_handle(program).pop_frame(module);
}
void refuse_tracing_entry() {
  TORCH_CHECK(false,
              "an eager-mode prepared model cannot be compiled or exported: its "
              "fake-quantizers run inside the dispatcher, which torch.compile / torch.export "
              "do not trace. Use execution_mode='graph' (QuantizerConfig(execution_mode="
              "'graph')) to get a model that compiles and exports");
}
int64_t scope_depth_entry() { return scope_depth(); }
int64_t frame_depth_entry() { return frame_depth(); }
bool key_included_entry() { return c10::impl::tls_is_dispatch_key_included(kInterceptKey); }
bool key_excluded_entry() { return c10::impl::tls_is_dispatch_key_excluded(kInterceptKey); }

}  // namespace

void define_eager(torch::Library& m) {
  // _eager_register_op(name, overload, base_id, pass_through) -> ()
  //   Intercept aten overload `name.overload` while an eager scope is open (see register_op).
  m.def("_eager_register_op(str name, str overload, int base_id, bool pass_through) -> ()",
        &register_op_entry);
  // _eager_push_frame(program, module) -> () / _eager_pop_frame(program, module) -> ()
  //   Push / pop the frame of module index `module` of the EagerProgram with that handle
  //   (the forward pre / post hooks of a prepared module); pushing opens the scope.
  m.def("_eager_push_frame(int program, int module) -> ()", &push_frame_entry);
  m.def("_eager_pop_frame(int program, int module) -> ()", &pop_frame_entry);
  // _eager_refuse_tracing() -> ()
  //   Always raises: what an eager-prepared model's root calls when torch.compile or
  //   torch.export traces it (an op, so that Dynamo's tracing fails instead of breaking).
  m.def("_eager_refuse_tracing() -> ()", &refuse_tracing_entry);
  // _eager_scope_depth() -> int / _eager_frame_depth() -> int
  //   This thread's interception scope depth and module frame count (tests, diagnostics).
  m.def("_eager_scope_depth() -> int", &scope_depth_entry);
  m.def("_eager_frame_depth() -> int", &frame_depth_entry);
  // _eager_key_included() -> bool / _eager_key_excluded() -> bool
  //   The intercept key's TLS bits on this thread (tests, diagnostics).
  m.def("_eager_key_included() -> bool", &key_included_entry);
  m.def("_eager_key_excluded() -> bool", &key_excluded_entry);
  // _eager_apply_python_fake_quantizer(x, fq_id) -> y
  //   y = the Python fake-quantizer registered under fq_id applied to x. Schema only: the
  //   kernel is a Python function (CompositeImplicitAutograd) registered by
  //   coreai_opt.quantization._eager, so autograd flows through what the module does.
  m.def("_eager_apply_python_fake_quantizer(Tensor x, int fq_id) -> Tensor");
  // _eager_record_call(name, overload, module, base_id, call_index, inputs, input_indices,
  //                    input_elements, outputs) -> ()
  //   One intercepted call of prepare's recording pass: its tensor arguments (schema index,
  //   Tensor[] element or -1) and outputs. Schema only: the kernel is Python.
  m.def(
      "_eager_record_call(str name, str overload, int module, int base_id, int call_index, "
      "Tensor?[] inputs, "
      "int[] input_indices, int[] input_elements, Tensor?[] outputs) -> ()");
  m.class_<EagerProgram>("EagerProgram")
      .def(torch::init<>())
      .def("handle", &EagerProgram::handle)
      .def("add_native_slot", &EagerProgram::add_native_slot)
      .def("add_python_slot", &EagerProgram::add_python_slot)
      .def("clear_slots", &EagerProgram::clear_slots)
      .def("num_slots", &EagerProgram::num_slots)
      .def("set_op_policy", &EagerProgram::set_op_policy)
      .def("clear_policies", &EagerProgram::clear_policies)
      .def("num_policies", &EagerProgram::num_policies)
      .def("set_recording", &EagerProgram::set_recording)
      .def("push_frame", &EagerProgram::push_frame)
      .def("pop_frame", &EagerProgram::pop_frame);
}

}  // namespace coreai_opt::eager
