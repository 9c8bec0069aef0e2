// Reading benchmarks/cases/*.yaml with yaml-cpp into BenchCase values.
//
// Every error names the file, the 1-based line and column (yaml-cpp's Mark) and the key, and
// for an enum-like key the allowed values, so a typo in a case file is fixed from the message
// alone. Validation is complete before anything runs: a bad case in the last file must not
// surface after minutes of timing the first ones.
#include "bench/cases.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <map>
#include <utility>

#include "bench/fmt.h"
#include "formats/int_range.h"

namespace coreai_opt::bench {

namespace {

struct FormatSpec {
  const char* name;
  bool is_float;
  int bits;
  bool is_signed;
};

// The formats the ops take as a dtype (csrc/ops/checks.cpp quant_format_of), by torch name.
constexpr FormatSpec kFormats[] = {
    {"int8", false, 8, true},           {"uint8", false, 8, false},
    {"int4", false, 4, true},           {"uint4", false, 4, false},
    {"int2", false, 2, true},           {"uint2", false, 2, false},
    {"float8_e4m3fn", true, 8, true},   {"float8_e5m2", true, 8, true},
    {"float4_e2m1fn_x2", true, 4, true}};

const std::vector<std::string> kOps = {"fake_quantize_int", "fake_quantize_float",
                                       "fused_fake_quantize"};
const std::vector<std::string> kDtypes = {"float32", "bfloat16", "float16"};
const std::vector<std::string> kScaleDtypes = {"float32", "float8_e8m0fnu"};
const std::vector<std::string> kGranularities = {"per_tensor", "per_channel", "per_block"};
const std::vector<std::string> kDevices = {"cpu", "cuda"};
const std::vector<std::string> kCaseKeys = {
    "name", "op", "shape", "dtype", "format", "scale_dtype", "granularity", "device", "repeats"};
const std::vector<std::string> kRequiredKeys = {"op",          "shape",  "dtype",  "format",
                                                "granularity", "device", "repeats"};
const std::vector<std::string> kGranularityKeys = {"type", "axis", "block_size"};

std::vector<std::string> format_names(bool want_int, bool want_float) {
  std::vector<std::string> out;
  for (const auto& f : kFormats) {
    if ((f.is_float && want_float) || (!f.is_float && want_int)) out.emplace_back(f.name);
  }
  return out;
}

const FormatSpec& format_spec(const std::string& name) {
  for (const auto& f : kFormats) {
    if (name == f.name) return f;
  }
  throw std::logic_error("format_spec: " + name + " was validated but is not in the table");
}

// "file:line:col" of a node; a node without a position (yaml-cpp's null mark) falls back to
// the enclosing case's mark.
std::string where(const std::string& file, const YAML::Mark& mark, const YAML::Mark& fallback) {
  const YAML::Mark& m = mark.is_null() ? fallback : mark;
  if (m.is_null()) return file;
  return fmt::format("{}:{}:{}", file, m.line + 1, m.column + 1);
}

// One key of a mapping with the marks of the key and of its value.
struct Entry {
  std::string key;  // dotted for nested keys: "granularity.axis"
  YAML::Mark key_mark;
  YAML::Node value;
};

class Reader {
 public:
  Reader(std::string file, std::string case_label, YAML::Mark case_mark)
      : file_(std::move(file)), label_(std::move(case_label)), case_mark_(case_mark) {}

  [[noreturn]] void fail(const YAML::Mark& mark, const std::string& key,
                         const std::string& what) const {
    throw CaseError(
        fmt::format("{}: {}, key '{}': {}", where(file_, mark, case_mark_), label_, key, what));
  }

  // The entries of a mapping, refusing unknown and duplicate keys.
  std::map<std::string, Entry> entries(const YAML::Node& map, const std::string& prefix,
                                       const std::vector<std::string>& allowed) const {
    std::map<std::string, Entry> out;
    for (const auto& kv : map) {
      const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "<non-scalar key>";
      const std::string dotted = prefix + key;
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        fail(kv.first.Mark(), dotted,
             fmt::format("unknown key; allowed: {}", fmt::join(allowed, ", ")));
      }
      if (out.count(key) != 0) fail(kv.first.Mark(), dotted, "duplicate key");
      out.emplace(key, Entry{dotted, kv.first.Mark(), kv.second});
    }
    return out;
  }

  std::string scalar(const Entry& e) const {
    if (!e.value.IsScalar()) fail(value_mark(e), e.key, "expected a single value");
    return e.value.Scalar();
  }

  std::string choice(const Entry& e, const std::vector<std::string>& allowed) const {
    const std::string v = scalar(e);
    if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
      fail(value_mark(e), e.key,
           fmt::format("'{}' is not allowed; allowed: {}", v, fmt::join(allowed, ", ")));
    }
    return v;
  }

  int64_t integer(const Entry& e, const YAML::Node& node, int64_t lo, int64_t hi) const {
    const YAML::Mark mark = node.Mark().is_null() ? e.key_mark : node.Mark();
    if (!node.IsScalar()) fail(mark, e.key, "expected an integer");
    const std::string s = node.Scalar();
    int64_t v = 0;
    size_t used = 0;
    try {
      v = std::stoll(s, &used, 10);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != s.size()) {
      fail(mark, e.key, fmt::format("expected an integer, got '{}'", s));
    }
    if (v < lo || v > hi) {
      fail(mark, e.key, fmt::format("{} is out of range [{}, {}]", v, lo, hi));
    }
    return v;
  }

  int64_t integer(const Entry& e, int64_t lo, int64_t hi) const {
    return integer(e, e.value, lo, hi);
  }

  YAML::Mark value_mark(const Entry& e) const {
    return e.value.Mark().is_null() ? e.key_mark : e.value.Mark();
  }

  const YAML::Mark& case_mark() const { return case_mark_; }
  const std::string& label() const { return label_; }

 private:
  std::string file_;
  std::string label_;
  YAML::Mark case_mark_;
};

std::string granularity_label(const BenchCase& c) {
  switch (c.granularity) {
    case Granularity::PerTensor:
      return "per_tensor";
    case Granularity::PerChannel:
      return fmt::format("per_channel(axis={})", c.axis);
    case Granularity::PerBlock:
      return fmt::format("per_block({}, axis={})", c.block, c.axis);
  }
  return "?";
}

void read_granularity(const Reader& r, const Entry& e, BenchCase& c) {
  const auto rank = static_cast<int64_t>(c.shape.size());
  std::map<std::string, Entry> g;
  if (e.value.IsScalar()) {
    // `granularity: per_tensor` is short for `granularity: { type: per_tensor }`.
    g.emplace("type", Entry{e.key, e.key_mark, e.value});
  } else if (e.value.IsMap()) {
    g = r.entries(e.value, e.key + ".", kGranularityKeys);
  } else {
    r.fail(r.value_mark(e), e.key,
           fmt::format("expected one of {} or a mapping with keys {}",
                       fmt::join(kGranularities, ", "), fmt::join(kGranularityKeys, ", ")));
  }
  if (g.count("type") == 0) r.fail(r.value_mark(e), e.key + ".type", "missing key");
  const Entry& type = g.at("type");
  const std::string t = r.choice(type, kGranularities);
  c.granularity = t == "per_tensor"    ? Granularity::PerTensor
                  : t == "per_channel" ? Granularity::PerChannel
                                       : Granularity::PerBlock;
  if (c.granularity == Granularity::PerTensor) {
    for (const char* k : {"axis", "block_size"}) {
      if (g.count(k) != 0)
        r.fail(g.at(k).key_mark, g.at(k).key, "per_tensor takes no " + std::string(k));
    }
    return;
  }
  // The reference's defaults for a Linear weight: per-channel along the output channels (0),
  // per-block along the input channels (1).
  c.axis = c.granularity == Granularity::PerBlock && rank >= 2 ? 1 : 0;
  if (g.count("axis") != 0) {
    c.axis = r.integer(g.at("axis"), -rank, rank - 1);
    if (c.axis < 0) c.axis += rank;
  }
  if (c.granularity == Granularity::PerChannel) {
    if (g.count("block_size") != 0) {
      r.fail(g.at("block_size").key_mark, g.at("block_size").key,
             "per_channel takes no block_size");
    }
    return;
  }
  if (g.count("block_size") == 0) r.fail(r.value_mark(e), e.key + ".block_size", "missing key");
  const Entry& b = g.at("block_size");
  c.block = r.integer(b, 1, c.shape[c.axis]);
  if (c.shape[c.axis] % c.block != 0) {
    r.fail(r.value_mark(b), b.key,
           fmt::format("{} does not divide dimension {} of the shape ({})", c.block, c.axis,
                       c.shape[c.axis]));
  }
}

BenchCase read_case(const std::string& file, const YAML::Node& node, size_t index) {
  std::string label = fmt::format("case {}", index + 1);
  if (node.IsMap() && node["name"] && node["name"].IsScalar()) {
    label += fmt::format(" ('{}')", node["name"].Scalar());
  }
  if (!node.IsMap()) {
    throw CaseError(fmt::format("{}: {}: expected a mapping with keys {}",
                                where(file, node.Mark(), node.Mark()), label,
                                fmt::join(kCaseKeys, ", ")));
  }
  Reader r(file, label, node.Mark());
  const auto e = r.entries(node, "", kCaseKeys);
  for (const auto& k : kRequiredKeys) {
    if (e.count(k) == 0) {
      r.fail(node.Mark(), k,
             fmt::format("missing key (required: {})", fmt::join(kRequiredKeys, ", ")));
    }
  }

  BenchCase c;
  c.file = file;
  c.line = node.Mark().is_null() ? 0 : node.Mark().line + 1;
  c.op_name = r.choice(e.at("op"), kOps);
  c.op = c.op_name == "fake_quantize_int"     ? Op::FakeQuantizeInt
         : c.op_name == "fake_quantize_float" ? Op::FakeQuantizeFloat
                                              : Op::FusedFakeQuantize;

  const Entry& shape = e.at("shape");
  if (!shape.value.IsSequence() || shape.value.size() == 0) {
    r.fail(r.value_mark(shape), "shape", "expected a non-empty list of sizes, e.g. [4096, 4096]");
  }
  for (const auto& d : shape.value) c.shape.push_back(r.integer(shape, d, 1, int64_t{1} << 40));

  c.dtype = r.choice(e.at("dtype"), kDtypes);

  // The op decides which formats make sense; the message lists only those.
  const bool want_int = c.op != Op::FakeQuantizeFloat;
  const bool want_float = c.op != Op::FakeQuantizeInt;
  c.format = r.choice(e.at("format"), format_names(want_int, want_float));
  const FormatSpec& f = format_spec(c.format);
  c.is_float_format = f.is_float;
  if (!f.is_float) {
    const auto range = formats::int_range(f.bits, f.is_signed, /*narrow=*/false);
    c.quant_min = range.qmin;
    c.quant_max = range.qmax;
    c.symmetric = f.is_signed;
  }
  if (e.count("scale_dtype") != 0) {
    const Entry& s = e.at("scale_dtype");
    c.e8m0 = r.choice(s, kScaleDtypes) == "float8_e8m0fnu";
    if (c.e8m0 && !f.is_float) {
      r.fail(r.value_mark(s), s.key,
             fmt::format("float8_e8m0fnu scales go with float formats ({}), not {}",
                         fmt::join(format_names(false, true), ", "), c.format));
    }
  }

  read_granularity(r, e.at("granularity"), c);
  c.device = r.choice(e.at("device"), kDevices);
  c.repeats = r.integer(e.at("repeats"), 1, 100000);

  if (e.count("name") != 0) {
    c.name = r.scalar(e.at("name"));
  } else {
    c.name = fmt::format("{} {} {} {}{} {}", c.op_name, fmt::join(c.shape, "x"), c.dtype, c.format,
                         c.e8m0 ? " e8m0" : "", granularity_label(c));
  }
  if (c.device != "cpu") c.name += " " + c.device;
  return c;
}

}  // namespace

std::vector<int64_t> BenchCase::block_size() const {
  std::vector<int64_t> b = shape;
  switch (granularity) {
    case Granularity::PerTensor:
      break;
    case Granularity::PerChannel:
      b[axis] = 1;
      break;
    case Granularity::PerBlock:
      // One qparam per output channel (dim 0, or dim 1 when the blocks run along dim 0, as
      // for a transposed convolution's weight), blocks along axis, the other dims shared:
      // the reference's per-block scale shape (C_out, C_in / B, 1, ..., 1).
      if (b.size() >= 2) b[axis == 0 ? 1 : 0] = 1;
      b[axis] = block;
      break;
  }
  return b;
}

int64_t BenchCase::numel() const {
  int64_t n = 1;
  for (const auto d : shape) n *= d;
  return n;
}

std::string BenchCase::where() const { return fmt::format("{}:{}", file, line); }

int64_t element_size(const std::string& dtype) { return dtype == "float32" ? 4 : 2; }

std::vector<BenchCase> load_case_file(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw CaseError(fmt::format("{}: cannot open the case file", path));
  } catch (const YAML::ParserException& ex) {
    throw CaseError(
        fmt::format("{}: YAML syntax error: {}", where(path, ex.mark, ex.mark), ex.msg));
  }
  if (!root.IsMap() || !root["cases"]) {
    throw CaseError(
        fmt::format("{}: key 'cases': missing; a case file is a mapping with a "
                    "'cases' list (see csrc/bench/cases.h)",
                    where(path, root.Mark(), root.Mark())));
  }
  for (const auto& kv : root) {
    if (kv.first.Scalar() != "cases") {
      throw CaseError(fmt::format("{}: key '{}': unknown top-level key; allowed: cases",
                                  where(path, kv.first.Mark(), kv.first.Mark()),
                                  kv.first.Scalar()));
    }
  }
  const YAML::Node cases = root["cases"];
  if (!cases.IsSequence() || cases.size() == 0) {
    throw CaseError(fmt::format("{}: key 'cases': expected a non-empty list of cases",
                                where(path, cases.Mark(), root.Mark())));
  }
  std::vector<BenchCase> out;
  for (size_t i = 0; i < cases.size(); ++i) out.push_back(read_case(path, cases[i], i));
  return out;
}

}  // namespace coreai_opt::bench
