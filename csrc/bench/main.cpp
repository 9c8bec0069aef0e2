// coreai_opt_bench: times the coreai_opt ops from C++ (through the dispatcher) beside the
// closest ATen ops and an in-process copy_, over the cases of benchmarks/cases/*.yaml.
//
//   coreai_opt_bench [--threads N] [--results FILE] [--commit TEXT] [--default-allocator]
//                    CASE_FILE...
//
// Every case file is read and checked before anything is timed; a bad file exits with status 2
// and a message naming the file, the line and the key. The table streams to stdout row by row;
// --results also appends it, with the machine and versions, to a Markdown file.
//
// This file formats with the system libfmt, so it includes no torch header (see fmt.h); the
// torch work is behind runner.h.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include "bench/cases.h"
#include "bench/fmt.h"
#include "bench/runner.h"
#include "bench/table.h"

namespace {

using namespace coreai_opt::bench;

// The same glibc setting as benchmarks/ops_cpu.py, for the same reason: every contender
// returns a fresh output, and glibc serves large blocks with mmap and unmaps them on free, so
// each call would page-fault its output in again and measure the kernel's page faults rather
// than the kernel. These tunables keep freed memory for reuse, for all contenders alike.
// glibc reads them at start-up only, hence the re-exec.
constexpr const char* kTunables =
    "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184";

struct Options {
  int threads = 2;
  std::string results;
  std::string commit = "commit unknown";
  bool default_allocator = false;
  std::vector<std::string> files;
};

[[noreturn]] void usage(const std::string& why) {
  fmt::print(stderr,
             "coreai_opt_bench: {}\n"
             "usage: coreai_opt_bench [--threads N] [--results FILE] [--commit TEXT] "
             "[--default-allocator] CASE_FILE...\n",
             why);
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--threads") {
      const std::string v = value();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < 1 || n > 1024) {
        usage("--threads takes a positive integer, got '" + v + "'");
      }
      o.threads = static_cast<int>(n);
    } else if (a == "--results") {
      o.results = value();
    } else if (a == "--commit") {
      o.commit = value();
    } else if (a == "--default-allocator") {
      o.default_allocator = true;
    } else if (a == "-h" || a == "--help") {
      usage("times the coreai_opt ops on benchmark case files");
    } else if (a.rfind("--", 0) == 0) {
      usage("unknown option " + a);
    } else {
      o.files.push_back(a);
    }
  }
  if (o.files.empty()) usage("no case file given");
  return o;
}

void reexec_with_tunables(char** argv) {
  const char* current = std::getenv("GLIBC_TUNABLES");
  if (current != nullptr && std::strcmp(current, kTunables) == 0) return;
  setenv("GLIBC_TUNABLES", kTunables, 1);
  execv("/proc/self/exe", argv);
  // Not fatal: the timings are still valid, only slower for large outputs; say so.
  fmt::print(stderr,
             "coreai_opt_bench: re-exec with GLIBC_TUNABLES failed ({}); measuring "
             "with the default allocator\n",
             std::strerror(errno));
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown CPU";
}

std::string today() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_args(argc, argv);
  if (!opt.default_allocator) reexec_with_tunables(argv);
  const bool tuned = !opt.default_allocator && std::getenv("GLIBC_TUNABLES") != nullptr &&
                     std::strcmp(std::getenv("GLIBC_TUNABLES"), kTunables) == 0;

  std::vector<BenchCase> cases;
  try {
    for (const auto& f : opt.files) {
      auto more = load_case_file(f);
      cases.insert(cases.end(), more.begin(), more.end());
    }
  } catch (const CaseError& e) {
    fmt::print(stderr, "coreai_opt_bench: {}\n", e.what());
    return 2;
  }

  Environment env;
  try {
    env = init_torch(opt.threads);
    for (const auto& c : cases) check_device(c);
  } catch (const CaseError& e) {
    fmt::print(stderr, "coreai_opt_bench: {}\n", e.what());
    return 2;
  }

  const std::string allocator =
      tuned ? fmt::format("GLIBC_TUNABLES={}", kTunables) : std::string("glibc default");
  const std::string intro = fmt::format(
      "{}, {} threads, torch {}, kernels {}, median and min of each case's `repeats` "
      "interleaved rounds (after up to 3 warm-up rounds), allocator: {}.\n"
      "Case files: {}.\n"
      "aten/ours: ATen's median over ours (> 1: ours is faster); ours/copy: our effective GB/s "
      "over that of an in-process copy_ of the input (bytes counted below).\n",
      cpu_model(), env.threads, env.torch_version, env.kernel_isa, allocator,
      fmt::join(opt.files, ", "));
  fmt::print("{}\n", intro);

  size_t width = 4;
  for (const auto& c : cases) width = std::max(width, c.name.size());
  const std::string header = table_header(width);
  fmt::print("{}", header);
  std::fflush(stdout);

  std::string rows;
  std::string notes;
  for (const auto& c : cases) {
    CaseResult r;
    try {
      r = run_case(c);
    } catch (const std::exception& e) {
      fmt::print(stderr, "coreai_opt_bench: {}: {}: failed: {}\n", c.where(), c.name, e.what());
      return 1;
    }
    const std::string row = table_row(c.name, width, r);
    fmt::print("{}", row);
    std::fflush(stdout);
    rows += row;
    notes += fmt::format("- {}: {:g} B/element ({}){}\n", c.name,
                         r.bytes / static_cast<double>(c.numel()), bytes_note(c),
                         r.aten ? "" : "; aten -: " + r.aten_note);
  }
  fmt::print("\nBytes counted per element:\n{}", notes);

  if (!opt.results.empty()) {
    std::ofstream out(opt.results, std::ios::app);
    out << fmt::format(
        "\n## C++ harness (coreai_opt_bench), CPU, {}, {}\n\n{}\n{}{}\n"
        "Bytes counted per element:\n{}",
        today(), opt.commit, intro, header, rows, notes);
    if (!out) {
      fmt::print(stderr, "coreai_opt_bench: cannot append to {}\n", opt.results);
      return 1;
    }
  }
  return 0;
}
