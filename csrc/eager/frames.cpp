#include "eager/frames.h"

#include <c10/util/Exception.h>

#include "eager/scope.h"

namespace coreai_opt::eager {

namespace {
thread_local std::vector<Frame> t_frames;
}  // namespace

void push_frame(const EagerProgram* program, int64_t module) {
  // Every frame also opens the scope, so calling a prepared submodule directly quantizes too.
  open_scope();
  t_frames.push_back(Frame{program, module, {}});
}

void pop_frame(const EagerProgram* program, int64_t module) {
  TORCH_CHECK(!t_frames.empty(), "coreai_opt eager: module frame popped from an empty stack");
  const Frame& top = t_frames.back();
  TORCH_CHECK(top.program == program && top.module == module,
              "coreai_opt eager: module frames popped out of order (module ", module,
              " popped while module ", top.module, " is innermost)");
  t_frames.pop_back();
  close_scope();
}

Frame* current_frame() { return t_frames.empty() ? nullptr : &t_frames.back(); }

int64_t frame_depth() { return static_cast<int64_t>(t_frames.size()); }

}  // namespace coreai_opt::eager
