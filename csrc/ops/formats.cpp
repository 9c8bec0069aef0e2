// Format table lookups, so Python reads ranges from the same table as the kernels.
#include "cpu/kernels/kernels.h"
#include "formats/float_format.h"
#include "formats/int_range.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::ops {

namespace {

std::vector<double> format_range(c10::ScalarType dtype, bool narrow) {
  const auto fmt = quant_format_of(dtype, "format_range");
  if (fmt.is_float) {
    const double mx = formats::float_format_info(fmt.float_format).max_value;
    return {-mx, mx};
  }
  const auto r = formats::int_range(fmt.bits, fmt.is_signed, narrow);
  return {static_cast<double>(r.qmin), static_cast<double>(r.qmax)};
}

}  // namespace

void define_formats(torch::Library& m) {
  // format_range(dtype, narrow) -> [min, max]
  //   Integer dtypes: the quantization range ([-qmax, qmax] for signed when narrow, the
  //   symmetric_with_clipping range). Float formats: [-max, max] (narrow has no effect).
  m.def("format_range(ScalarType dtype, bool narrow=False) -> float[]", &format_range,
        {at::Tag::pt2_compliant_tag});
  // cpu_kernel_isa() -> "DEFAULT" | "AVX2" | "AVX512": the CPU kernel table in use.
  m.def("cpu_kernel_isa() -> str", [] { return std::string(cpu::kernel_isa()); },
        {at::Tag::pt2_compliant_tag});
}

}  // namespace coreai_opt::ops
