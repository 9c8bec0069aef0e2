// The thread-local stack of module frames that names intercepted ops `<module>.<op>[_k]`.
//
// Forward pre / post hooks push and pop a frame per module call (only on modules that need
// one); each frame counts the calls of each op base name in that module call, so a module
// called twice numbers its ops the same way both times.
#pragma once

#include <cstdint>
#include <vector>

namespace coreai_opt::eager {

class EagerProgram;

struct Frame {
  const EagerProgram* program = nullptr;
  int64_t module = 0;
  std::vector<int32_t> counters;  // calls per op base id in this module call
};

void push_frame(const EagerProgram* program, int64_t module);
void pop_frame(const EagerProgram* program, int64_t module);

// The innermost frame of this thread, or nullptr.
Frame* current_frame();
int64_t frame_depth();

}  // namespace coreai_opt::eager
