// C entry points of the module-frame stack (frames_c_api.cpp), for ctypes.
#pragma once

#include <cstdint>

#define COREAI_OPT_C_API extern "C" __attribute__((visibility("default")))

// Push the frame of module `module` of the EagerProgram with handle `program` (opens the
// scope). 0 on success; 1 when a check failed, with nothing changed.
COREAI_OPT_C_API int coreai_opt_eager_push_frame(int64_t program, int64_t module) noexcept;

// Pop that frame (closes the scope). 0 on success; 1 when a check failed (unknown handle,
// empty stack, not the innermost frame), with nothing changed.
COREAI_OPT_C_API int coreai_opt_eager_pop_frame(int64_t program, int64_t module) noexcept;
