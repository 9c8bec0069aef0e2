// The one way the harness includes fmt: the system libfmt-dev, never the copy torch bundles.
//
// torch ships fmt headers of another major version inside its include dir (torch/include/fmt),
// and CMake passes torch's include dirs with -isystem, which the compiler searches before
// /usr/include. A file that saw both include paths would get torch's headers and link the
// system libfmt: a silent mismatch. So the files that format (cases.cpp, table.cpp, main.cpp)
// are built as the object library coreai_opt_bench_io, which has no torch include dir at all,
// and the torch side (runner.cpp) includes no fmt. The two checks below turn a slip in either
// direction into a compile error.
#pragma once

#if __has_include(<c10/macros/Macros.h>)
#error "torch's include dirs reach a file that uses fmt: its bundled fmt would shadow libfmt-dev"
#endif

#include <fmt/format.h>

#ifdef COREAI_BENCH_FMT_VERSION
static_assert(FMT_VERSION == COREAI_BENCH_FMT_VERSION,
              "the fmt headers found are not those of the libfmt CMake links");
#endif
