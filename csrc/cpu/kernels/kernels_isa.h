// Internal to one ISA build: each kernel file fills its part of that ISA's table.
#pragma once

#include "cpu/kernels/kernels.h"

namespace coreai_opt::cpu {
inline namespace CPU_CAPABILITY {

void register_fake_quantize(KernelTable& t);
void register_observe(KernelTable& t);
void register_lsq(KernelTable& t);
void register_transpose(KernelTable& t);
void register_channel(KernelTable& t);

}  // namespace CPU_CAPABILITY
}  // namespace coreai_opt::cpu
