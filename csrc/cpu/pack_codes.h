// Packing of sub-byte codes, shared by the pack op and the FP4 quantize of the coreai_export
// family: 8 / bits codes to a byte, the lower index in the lower bits.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>

namespace coreai_opt::cpu {

// dst[i] = the codes code_at(i * per_byte + k), k = 0 .. per_byte - 1, each masked to its
// low `bits` bits and shifted to bit k * bits; for every i in [0, n_bytes), in parallel.
template <typename CodeAt>
void pack_codes(int64_t n_bytes, int bits, const CodeAt& code_at, uint8_t* dst) {
  const int per_byte = 8 / bits;
  const uint32_t mask = (1u << bits) - 1u;
  at::parallel_for(0, n_bytes, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      uint32_t byte = 0;
      for (int k = 0; k < per_byte; ++k) {
        byte |= (static_cast<uint32_t>(code_at(i * per_byte + k)) & mask) << (k * bits);
      }
      dst[i] = static_cast<uint8_t>(byte);
    }
  });
}

}  // namespace coreai_opt::cpu
