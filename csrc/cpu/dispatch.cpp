// Picks the kernel table for this machine once. Compiled for DEFAULT only.
#include <ATen/Version.h>

#include <string>

#include "cpu/kernels/kernels.h"

namespace coreai_opt::cpu {

namespace {

struct Choice {
  const KernelTable* table;
  const char* name;
};

Choice choose() {
  // The capability ATen itself runs with ("AVX512", "AVX2", "DEFAULT", ...): it already
  // honours the ATEN_CPU_CAPABILITY override and what this processor supports.
  const std::string cap = at::get_cpu_capability();
  (void)cap;
#if defined(COREAI_HAVE_AVX512)
  if (cap == "AVX512") return {&kernel_table_AVX512(), "AVX512"};
#endif
#if defined(COREAI_HAVE_AVX2)
  if (cap == "AVX2" || cap == "AVX512") return {&kernel_table_AVX2(), "AVX2"};
#endif
  return {&kernel_table_DEFAULT(), "DEFAULT"};
}

const Choice& choice() {
  static const Choice c = choose();
  return c;
}

}  // namespace

const KernelTable& kernels() { return *choice().table; }
const char* kernel_isa() { return choice().name; }

}  // namespace coreai_opt::cpu
