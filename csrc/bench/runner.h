// The torch side of coreai_opt_bench: builds a case's tensors and times our op, its closest
// ATen op and an in-process copy_ of the input (implemented in runner.cpp).
//
// Plain standard-library types only, so the fmt side (main.cpp, table.cpp) can include it
// without torch's include dirs (see fmt.h).
#pragma once

#include <optional>
#include <string>

#include "bench/cases.h"

namespace coreai_opt::bench {

struct Timing {
  double median_s = 0;
  double min_s = 0;
};

struct CaseResult {
  double bytes = 0;       // bytes our op must move per call (see bytes_note)
  double copy_bytes = 0;  // bytes copy_ moves: read and write the input once
  Timing ours;
  std::optional<Timing> aten;  // none: no ATen counterpart, or ATen refused the case
  std::string aten_note;       // why aten is "-"
  Timing copy;
};

// What the table's header says about the build and the machine.
struct Environment {
  std::string torch_version;
  std::string kernel_isa;  // torch.ops.coreai_opt.cpu_kernel_isa()
  int threads = 0;
};

// Sets the intra-op thread count and reads the versions.
Environment init_torch(int threads);

// Throws CaseError naming the case's file and line when its device is unavailable, so every
// case is checked before any is timed.
void check_device(const BenchCase& c);

// What the bytes column counts for this case's op.
std::string bytes_note(const BenchCase& c);

CaseResult run_case(const BenchCase& c);

}  // namespace coreai_opt::bench
