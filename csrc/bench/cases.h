// Benchmark cases of coreai_opt_bench, as read from benchmarks/cases/*.yaml.
//
// libtorch-free and fmt-free on purpose: this header is shared by the torch side of the harness
// (runner.cpp) and the side that parses YAML and formats text with the system libfmt
// (cases.cpp, table.cpp, main.cpp), which must never see torch's include dirs (see fmt.h).
//
// A case file:
//   cases:
//     - name: weight int8 per-channel      # optional; built from the fields when absent
//       op: fake_quantize_int              # fake_quantize_int | fake_quantize_float |
//                                          # fused_fake_quantize
//       shape: [4096, 4096]
//       dtype: float32                     # float32 | bfloat16 | float16
//       format: int8                       # int8 uint8 int4 uint4 int2 uint2 float8_e4m3fn
//                                          # float8_e5m2 float4_e2m1fn_x2
//       scale_dtype: float32               # optional: float32 | float8_e8m0fnu (MX scales)
//       granularity: { type: per_channel, axis: 0 }   # or per_tensor, or
//                                          # { type: per_block, block_size: 32, axis: 1 }
//       device: cpu                        # cpu | cuda
//       repeats: 20                        # timed rounds
// The vocabulary (format names, granularity type / axis / block_size) is that of the
// reference's QuantizationSpec YAML (reference/config_guide.md).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace coreai_opt::bench {

enum class Op { FakeQuantizeInt, FakeQuantizeFloat, FusedFakeQuantize };
enum class Granularity { PerTensor, PerChannel, PerBlock };

struct BenchCase {
  std::string file;  // the case file, as named on the command line
  int line = 0;      // 1-based line of the case's mapping, for messages about the case
  std::string name;
  Op op = Op::FakeQuantizeInt;
  std::string op_name;
  std::vector<int64_t> shape;
  std::string dtype;   // input dtype, a torch name: float32 / bfloat16 / float16
  std::string format;  // quantization format, a torch dtype name
  bool is_float_format = false;
  bool e8m0 = false;  // scale_dtype float8_e8m0fnu
  // Integer formats: the full range of the format (not narrow), symmetric for signed formats
  // and affine for unsigned ones.
  int64_t quant_min = 0;
  int64_t quant_max = 0;
  bool symmetric = true;
  Granularity granularity = Granularity::PerTensor;
  int64_t axis = 0;   // per_channel / per_block
  int64_t block = 0;  // per_block
  std::string device;
  int64_t repeats = 0;

  // The ops' block_size argument: one entry per dimension of shape, x.size(d) / block_size[d]
  // qparams along d.
  std::vector<int64_t> block_size() const;
  int64_t numel() const;
  // "file:line" of the case, for messages that concern the whole case.
  std::string where() const;
};

// A case file that cannot be used. what() names the file, the line and the key.
class CaseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads and validates every case of one file; throws CaseError on the first problem.
std::vector<BenchCase> load_case_file(const std::string& path);

// Bytes of one element of a dtype named as in a case file (float32 -> 4).
int64_t element_size(const std::string& dtype);

}  // namespace coreai_opt::bench
