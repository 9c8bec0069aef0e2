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

namespace {

// 0 after call(program) returned, 1 if it threw (its checks run before any change).
template <typename Call>
int status_of(int64_t program, const Call& call) noexcept {
  try {
    call(coreai_opt::eager::EagerProgram::from_handle(program));
    return 0;
  } catch (...) {
    return 1;
  }
}

}  // namespace

COREAI_OPT_C_API int coreai_opt_eager_push_frame(int64_t program, int64_t module) noexcept {
  return status_of(program, [module](auto& p) { p.push_frame(module); });
}

COREAI_OPT_C_API int coreai_opt_eager_pop_frame(int64_t program, int64_t module) noexcept {
  return status_of(program, [module](auto& p) { p.pop_frame(module); });
}
