// C entry points of the module-frame stack, called through ctypes by the forward hooks of
// an eager-prepared model.
//
// A hook runs on every call of a hooked module. Called as custom ops, a push and a pop take
// about 1.4 us together, nearly all of it the Python-to-dispatcher call; through ctypes
// (PyDLL: the GIL stays held, no argument boxing) about 0.5 us, and no Python header is
// needed. Errors cannot cross a C boundary: a call whose check fails returns 1 before
// changing anything, and the caller repeats it through the op (_eager_push_frame /
// _eager_pop_frame) to raise the error with its message.
#include "eager/frames_c_api.h"

#include "eager/program.h"

COREAI_OPT_C_API int coreai_opt_eager_push_frame(int64_t program, int64_t module) noexcept {
  try {
    coreai_opt::eager::EagerProgram::from_handle(program).push_frame(module);
    return 0;
  } catch (...) {
    return 1;
  }
}

COREAI_OPT_C_API int coreai_opt_eager_pop_frame(int64_t program, int64_t module) noexcept {
  try {
    coreai_opt::eager::EagerProgram::from_handle(program).pop_frame(module);
    return 0;
  } catch (...) {
    return 1;
  }
}
