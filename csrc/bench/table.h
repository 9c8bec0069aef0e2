// The result table of coreai_opt_bench: a Markdown table whose columns line up in a terminal,
// so the same text is printed and appended to benchmarks/RESULTS.md (implemented in table.cpp).
#pragma once

#include <cstddef>
#include <string>

#include "bench/runner.h"

namespace coreai_opt::bench {

// The header and separator lines; `name_width` is the widest case name (rows stream out as
// cases finish, so widths are fixed before the first one runs).
std::string table_header(size_t name_width);

// One row. Ratios: aten/ours is ATen's median over ours (> 1: ours is faster); ours/copy is our
// effective GB/s over copy_'s (1: ours moves its bytes as fast as copying the input does).
std::string table_row(const std::string& name, size_t name_width, const CaseResult& r);

}  // namespace coreai_opt::bench
