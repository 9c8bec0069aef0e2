// Formatting the result table with the system libfmt (see fmt.h for why not torch's copy).
#include "bench/table.h"

#include <algorithm>
#include <array>
#include <string_view>

#include "bench/fmt.h"

namespace coreai_opt::bench {

namespace {

constexpr std::array<std::string_view, 8> kNumberColumns = {
    "ours median", "ours min",    "ours GB/s", "aten median",
    "aten/ours",   "copy median", "copy GB/s", "ours/copy"};
constexpr size_t kNumberWidth = 11;

std::string time_str(double s) {
  return s < 1e-3 ? fmt::format("{:.1f} us", s * 1e6) : fmt::format("{:.2f} ms", s * 1e3);
}

double gbps(double bytes, double s) { return bytes / s / 1e9; }

}  // namespace

std::string table_header(size_t name_width) {
  std::string head = fmt::format("| {:<{}} |", "case", name_width);
  std::string rule = fmt::format("|{:-<{}}|", "", name_width + 2);
  for (const auto col : kNumberColumns) {
    head += fmt::format(" {:>{}} |", col, kNumberWidth);
    rule += fmt::format("{:-<{}}:|", "", kNumberWidth + 1);
  }
  return head + "\n" + rule + "\n";
}

std::string table_row(const std::string& name, size_t name_width, const CaseResult& r) {
  const double ours_gbps = gbps(r.bytes, r.ours.median_s);
  const double copy_gbps = gbps(r.copy_bytes, r.copy.median_s);
  const std::array<std::string, 8> cells = {
      time_str(r.ours.median_s),
      time_str(r.ours.min_s),
      fmt::format("{:.1f}", ours_gbps),
      r.aten ? time_str(r.aten->median_s) : "-",
      r.aten ? fmt::format("{:.2f}x", r.aten->median_s / r.ours.median_s) : "-",
      time_str(r.copy.median_s),
      fmt::format("{:.1f}", copy_gbps),
      fmt::format("{:.2f}", ours_gbps / copy_gbps)};
  std::string row = fmt::format("| {:<{}} |", name, name_width);
  for (const auto& cell : cells) row += fmt::format(" {:>{}} |", cell, kNumberWidth);
  return row + "\n";
}

}  // namespace coreai_opt::bench
