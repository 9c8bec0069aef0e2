// This ISA's kernel table, exported as kernel_table_<ISA>().
#include "cpu/kernels/kernels_isa.h"

#define COREAI_CONCAT_(a, b) a##b
#define COREAI_CONCAT(a, b) COREAI_CONCAT_(a, b)

namespace coreai_opt::cpu {

const KernelTable& COREAI_CONCAT(kernel_table_, CPU_CAPABILITY)() {
  static const KernelTable table = [] {
    KernelTable t{};
    register_fake_quantize(t);
    register_observe(t);
    register_lsq(t);
    register_transpose(t);
    register_channel(t);
    return t;
  }();
  return table;
}

}  // namespace coreai_opt::cpu
