// The thread-local stack of module frames that names intercepted ops `<module>.<op>[_k]`.
//
// Forward pre / post hooks push and pop a frame per module call (only on modules that need
// one); each frame counts the calls of each op base name in that module call, so a module
// called twice numbers its ops the same way both times.
#pragma once

#include <c10/util/SmallVector.h>

#include <cstdint>
#include <vector>

namespace coreai_opt::eager {

class EagerProgram;

struct Frame {
  const EagerProgram* program = nullptr;
  int64_t module = 0;
  // Calls per op base id in this module call; inline storage covers the built-in op types,
  // so a module call allocates nothing.
  c10::SmallVector<int32_t, 64> counters;
};

void push_frame(const EagerProgram* program, int64_t module);
void pop_frame(const EagerProgram* program, int64_t module);

// The innermost frame of this thread, or nullptr.
Frame* current_frame();
int64_t frame_depth();

}  // namespace coreai_opt::eager
