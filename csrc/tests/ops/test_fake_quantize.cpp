// CPU fake-quantize kernels, called through the dispatcher, against scalar references
// written here from the formulas of reference/behaviour.md §3 and the csrc/formats helpers.
// Outputs must be bit-exact: the kernels promise float32 arithmetic with no contraction, so
// any difference is a bug, not noise.
//
// Shapes are chosen so that inner runs are not multiples of the vector width (8 or 16
// floats), and a few inputs are larger than one parallel chunk (32768 elements) so that
// chunks start in the middle of a row.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Float8_e4m3fn.h>
#include <c10/util/Float8_e5m2.h>
#include <c10/util/Half.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "formats/float_format.h"
#include "formats/int_range.h"
#include "formats/rounding.h"
#include "tests/qparam_index.h"

namespace {

namespace fmt = coreai_opt::formats;
using coreai_opt::test::numel_of;
using coreai_opt::test::qindex;
using coreai_opt::test::Sizes;

using FqIntFn = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, int64_t, int64_t);
using FqIntBwFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                             int64_t, int64_t);
using FqFloatFn = at::Tensor(const at::Tensor&, const at::Tensor&, c10::ScalarType);

c10::TypedOperatorHandle<FqIntFn> fq_int_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("coreai_opt::fake_quantize_int", "")
                             .typed<FqIntFn>();
  return op;
}

c10::TypedOperatorHandle<FqIntBwFn> fq_int_bw_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("coreai_opt::fake_quantize_int_backward", "")
                             .typed<FqIntBwFn>();
  return op;
}

c10::TypedOperatorHandle<FqFloatFn> fq_float_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("coreai_opt::fake_quantize_float", "")
                             .typed<FqFloatFn>();
  return op;
}

// ---- tensors <-> vectors ---------------------------------------------------------------

at::Tensor tensor_of(const std::vector<float>& v, const Sizes& sizes, c10::ScalarType st) {
  return at::from_blob(const_cast<float*>(v.data()), sizes, at::kFloat).clone().to(st);
}

std::vector<float> floats_of(const at::Tensor& t) {
  const auto c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.const_data_ptr<float>(), c.const_data_ptr<float>() + c.numel());
}

// The float32 result of a formula stored in the kernel's output dtype, read back as float
// (the widening is exact, so comparing floats compares the stored values).
float as_dtype(float r, c10::ScalarType st) {
  switch (st) {
    case at::kBFloat16:
      return static_cast<float>(c10::BFloat16(r));
    case at::kHalf:
      return static_cast<float>(c10::Half(r));
    default:  // float32, and float64 which holds the float32 result exactly
      return r;
  }
}

uint32_t bits_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

// Bit-exact comparison (NaN matches any NaN). Returns "" or a description of the first
// mismatches with their inputs, so a failure names the exact values.
std::string compare(const std::vector<float>& got, const std::vector<float>& want,
                    const std::vector<float>& x) {
  REQUIRE(got.size() == want.size());
  std::ostringstream out;
  int n_bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool same = (std::isnan(got[i]) && std::isnan(want[i])) ||
                      (!std::isnan(got[i]) && bits_of(got[i]) == bits_of(want[i]));
    if (same) continue;
    if (++n_bad <= 4) {
      out.precision(9);
      out << "[" << i << "] x=" << x[i] << " (0x" << std::hex << bits_of(x[i]) << std::dec
          << ") got " << got[i] << " want " << want[i] << "; ";
    }
  }
  if (n_bad) out << n_bad << " of " << got.size() << " elements differ";
  return out.str();
}

// ---- granularities ---------------------------------------------------------------------

struct Gran {
  const char* name;
  Sizes x;
  Sizes q;             // qparam shape; empty means a 0-d (per-tensor) qparam
  bool large = false;  // skipped for the slow dtype sweeps
};

const std::vector<Gran>& granularities() {
  static const std::vector<Gran> g = {
      {"per-tensor 0-d", {5, 37}, {}},
      {"per-tensor [1,1]", {5, 37}, {1, 1}},
      {"per-tensor 1-d odd length", {67}, {1}},
      {"per-channel dim 0", {6, 67}, {6, 1}},
      {"per-channel last dim", {7, 45}, {1, 45}},
      {"per-channel middle dim", {3, 5, 19}, {1, 5, 1}},
      {"per-element", {50}, {50}},
      {"blocks of 32 along last dim", {4, 96}, {4, 3}},
      {"blocks of 16 along last dim", {3, 80}, {3, 5}},
      {"blocks of 7 along last dim", {5, 35}, {5, 5}},
      {"tuple blocks (4, 16)", {8, 48}, {2, 3}},
      {"blocks along dim 0", {12, 21}, {3, 1}},
      {"size-1 dims", {1, 6, 1, 33}, {1, 6, 1, 1}},
      {"large per-tensor", {70001}, {1}, true},
      {"large per-channel dim 0", {3, 20011}, {3, 1}, true},
      {"large per-channel last dim", {257, 131}, {1, 131}, true},
      {"large blocks of 32", {130, 512}, {130, 16}, true},
  };
  return g;
}

Sizes qsizes_full(const Gran& g) { return g.q.empty() ? Sizes(g.x.size(), 1) : g.q; }

// ---- random data -----------------------------------------------------------------------

// Half of the scales are powers of two, so that x = (k + 0.5) * s gives exact ties.
float random_scale(std::mt19937& rng) {
  std::uniform_int_distribution<int> p2(-8, 2);
  std::uniform_real_distribution<float> u(1e-3f, 2.0f);
  return (rng() % 2) ? std::ldexp(1.0f, p2(rng)) : u(rng);
}

// A value around the quantization grid [lo, hi] * s (plus an offset), with exact ties,
// out-of-range values and the occasional NaN / +-inf / +0.
float random_value(std::mt19937& rng, float s, float offset, float lo, float hi) {
  const int r = static_cast<int>(rng() % 64);
  if (r == 0) return std::numeric_limits<float>::quiet_NaN();
  if (r == 1) return std::numeric_limits<float>::infinity();
  if (r == 2) return -std::numeric_limits<float>::infinity();
  if (r == 3) return 0.0f;
  if (r < 20) {
    std::uniform_int_distribution<int> k(static_cast<int>(lo) - 3, static_cast<int>(hi) + 3);
    return offset + (static_cast<float>(k(rng)) + 0.5f) * s;
  }
  std::uniform_real_distribution<float> u(lo - 4.0f, hi + 4.0f);
  return offset + u(rng) * s;
}

// ---- integer reference -----------------------------------------------------------------

struct IntRef {
  // Generic form: q = clamp(round((x - f) / s) + o, qmin, qmax); y = (q - o) * s + f.
  // The zp form is f = 0, o = zp: x - 0 and + 0 change no value but -0, which never occurs
  // there since (q - o) is a difference of integers.
  static float pre(float x, float s, float o, float f) {
    return fmt::round_half_even((x - f) / s) + o;
  }
  static float fq(float x, float s, float o, float f, float qmin, float qmax) {
    float q = pre(x, s, o, f);
    if (!std::isnan(q)) q = q < qmin ? qmin : (q > qmax ? qmax : q);
    return (q - o) * s + f;
  }
};

enum class Form { ZeroPoint, MinVal, NoOffset };

const char* form_name(Form f) {
  return f == Form::ZeroPoint ? "zp" : (f == Form::MinVal ? "minval" : "no offset");
}

struct IntCase {
  const Gran& g;
  c10::ScalarType dtype;
  Form form;
  int32_t qmin, qmax;
};

// Runs fake_quantize_int (and its backward) on random data for one case and returns "" or
// the mismatches.
std::string run_int_case(const IntCase& c, std::mt19937& rng, bool backward) {
  const Sizes qs = qsizes_full(c.g);
  const int64_t n = numel_of(c.g.x), qn = numel_of(qs);
  std::vector<float> s(qn), o(qn), f(qn);
  std::vector<int32_t> zp(qn);
  for (int64_t i = 0; i < qn; ++i) {
    s[i] = random_scale(rng);
    zp[i] = std::uniform_int_distribution<int32_t>(c.qmin, c.qmax)(rng);
    // minval is <= 0; half of them on the scale grid so ties stay exact.
    const int steps = static_cast<int>(rng() % static_cast<unsigned>(c.qmax - c.qmin + 1));
    f[i] = (rng() % 2) ? -static_cast<float>(steps) * s[i]
                       : -std::uniform_real_distribution<float>(0.0f, 1.0f)(rng) *
                             static_cast<float>(c.qmax - c.qmin) * s[i];
  }
  const auto qi = qindex(c.g.x, qs);
  std::vector<float> xv(n);
  for (int64_t e = 0; e < n; ++e) {
    const int64_t q = qi[e];
    switch (c.form) {
      case Form::ZeroPoint:
        xv[e] = random_value(rng, s[q], 0.0f, static_cast<float>(c.qmin - zp[q]),
                             static_cast<float>(c.qmax - zp[q]));
        break;
      case Form::MinVal:
        xv[e] = random_value(rng, s[q], f[q], 0.0f, static_cast<float>(c.qmax - c.qmin));
        break;
      case Form::NoOffset:
        xv[e] =
            random_value(rng, s[q], 0.0f, static_cast<float>(c.qmin), static_cast<float>(c.qmax));
    }
  }
  const at::Tensor x = tensor_of(xv, c.g.x, c.dtype);
  const at::Tensor scale = tensor_of(s, c.g.q, at::kFloat);
  std::optional<at::Tensor> zp_t, mv_t;
  if (c.form == Form::ZeroPoint) {
    zp_t = at::from_blob(zp.data(), c.g.q, at::kInt).clone();
  } else if (c.form == Form::MinVal) {
    mv_t = tensor_of(f, c.g.q, at::kFloat);
  }

  // The values the kernel really sees (x rounded to its dtype), and the offsets per form.
  const std::vector<float> xs = floats_of(x);
  std::vector<float> want(n), grad_want(n);
  std::vector<float> gv(n);
  for (int64_t e = 0; e < n; ++e) gv[e] = std::uniform_real_distribution<float>(-2.f, 2.f)(rng);
  const at::Tensor grad = tensor_of(gv, c.g.x, c.dtype);
  const std::vector<float> gs = floats_of(grad);
  const float lo = static_cast<float>(c.qmin), hi = static_cast<float>(c.qmax);
  for (int64_t e = 0; e < n; ++e) {
    const int64_t q = qi[e];
    float oo = 0.0f, ff = 0.0f;
    if (c.form == Form::ZeroPoint) oo = static_cast<float>(zp[q]);
    if (c.form == Form::MinVal) {
      oo = lo;
      ff = f[q];
    }
    want[e] = as_dtype(IntRef::fq(xs[e], s[q], oo, ff, lo, hi), c.dtype);
    const float p = IntRef::pre(xs[e], s[q], oo, ff);
    grad_want[e] = as_dtype(gs[e] * ((p >= lo && p <= hi) ? 1.0f : 0.0f), c.dtype);
  }

  const at::Tensor y = fq_int_op().call(x, scale, zp_t, mv_t, c.qmin, c.qmax);
  if (y.scalar_type() != c.dtype) return "output dtype differs from the input's";
  if (y.sizes() != x.sizes()) return "output shape differs from the input's";
  std::string err = compare(floats_of(y), want, xs);
  if (!err.empty() || !backward) return err;
  const at::Tensor gx = fq_int_bw_op().call(grad, x, scale, zp_t, mv_t, c.qmin, c.qmax);
  err = compare(floats_of(gx), grad_want, xs);
  return err.empty() ? err : "backward: " + err;
}

// ---- float reference -------------------------------------------------------------------

// round_to_float_format with the sign of zero taken from the input: the reference
// (x / s).to(fp8) keeps -0, so the expectation does too.
float ref_round(float v, const fmt::FloatFormatInfo& info) {
  const float r = fmt::round_to_float_format(v, info);
  return std::isnan(v) ? r : std::copysign(r, v);
}

float ref_fq_float(float x, float s, const fmt::FloatFormatInfo& info) {
  float v = x / s;
  if (!std::isnan(v)) v = v < -info.max_value ? -info.max_value : std::min(v, info.max_value);
  return ref_round(v, info) * s;
}

struct FloatCase {
  const char* name;
  c10::ScalarType dtype;
  fmt::FloatFormat format;
};

const FloatCase kFloatFormats[] = {
    {"float8_e4m3fn", c10::ScalarType::Float8_e4m3fn, fmt::FloatFormat::E4M3FN},
    {"float8_e5m2", c10::ScalarType::Float8_e5m2, fmt::FloatFormat::E5M2},
    {"float4_e2m1fn_x2", c10::ScalarType::Float4_e2m1fn_x2, fmt::FloatFormat::E2M1},
};

// Values spread over the format's whole range at scale s: around the grid, log-uniform
// magnitudes down into the subnormals, beyond the maximum, and NaN / +-inf / +0.
float random_float_value(std::mt19937& rng, float s, const fmt::FloatFormatInfo& info) {
  const int r = static_cast<int>(rng() % 64);
  if (r == 0) return std::numeric_limits<float>::quiet_NaN();
  if (r == 1) return std::numeric_limits<float>::infinity();
  if (r == 2) return -std::numeric_limits<float>::infinity();
  if (r == 3) return 0.0f;
  const float sign = (rng() % 2) ? -1.0f : 1.0f;
  if (r < 32) {
    std::uniform_real_distribution<float> u(-1.3f * info.max_value, 1.3f * info.max_value);
    return u(rng) * s;
  }
  std::uniform_real_distribution<float> lg(static_cast<float>(-info.bias - info.mantissa_bits - 2),
                                           static_cast<float>(info.max_pow2 + 1));
  return sign * std::exp2(lg(rng)) * s;
}

std::string run_float_case(const Gran& g, c10::ScalarType dtype, const FloatCase& fc,
                           bool e8m0_scale, std::mt19937& rng) {
  const auto info = fmt::float_format_info(fc.format);
  const Sizes qs = qsizes_full(g);
  const int64_t n = numel_of(g.x), qn = numel_of(qs);
  std::vector<float> s(qn);
  for (auto& v : s)
    v = e8m0_scale ? std::ldexp(1.0f, static_cast<int>(rng() % 21) - 10) : random_scale(rng);
  const auto qi = qindex(g.x, qs);
  std::vector<float> xv(n);
  for (int64_t e = 0; e < n; ++e) xv[e] = random_float_value(rng, s[qi[e]], info);
  const at::Tensor x = tensor_of(xv, g.x, dtype);
  const at::Tensor scale =
      tensor_of(s, g.q, e8m0_scale ? c10::ScalarType::Float8_e8m0fnu : at::kFloat);
  if (e8m0_scale) REQUIRE(floats_of(scale) == s);  // powers of two survive E8M0 exactly
  const std::vector<float> xs = floats_of(x);
  std::vector<float> want(n);
  for (int64_t e = 0; e < n; ++e) want[e] = as_dtype(ref_fq_float(xs[e], s[qi[e]], info), dtype);
  const at::Tensor y = fq_float_op().call(x, scale, fc.dtype);
  if (y.scalar_type() != dtype) return "output dtype differs from the input's";
  return compare(floats_of(y), want, xs);
}

const c10::ScalarType kInputDtypes[] = {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble};

}  // namespace

TEST_CASE("fake_quantize_int matches the scalar reference bit for bit", "[ops][fq_int]") {
  struct Range {
    const char* name;
    int32_t qmin, qmax;
  };
  const Range ranges[] = {{"int8", -128, 127},    {"uint8", 0, 255}, {"int4", -8, 7},
                          {"int4 narrow", -7, 7}, {"uint4", 0, 15},  {"int2", -2, 1}};
  std::mt19937 rng(1234);
  for (const Gran& g : granularities()) {
    for (c10::ScalarType dt : kInputDtypes) {
      if (g.large && dt == at::kDouble) continue;
      for (Form form : {Form::ZeroPoint, Form::MinVal, Form::NoOffset}) {
        for (const Range& r : ranges) {
          // The large shapes exercise chunking, which does not depend on the range.
          if (g.large && r.qmin != -128) continue;
          const std::string err = run_int_case(IntCase{g, dt, form, r.qmin, r.qmax}, rng, true);
          INFO(g.name << ", x " << c10::toString(dt) << ", " << form_name(form) << " form, "
                      << r.name);
          CHECK(err == "");
        }
      }
    }
  }
}

TEST_CASE("fake_quantize_int: zero_point dtypes and float16 scales are read as float32",
          "[ops][fq_int]") {
  // QParamBuffer converts any real qparam dtype; values exact in float16 round-trip.
  const std::vector<float> xv = {-3.3f, -1.0f, 0.26f, 0.74f, 1.5f, 2.5f, 99.0f, -99.0f};
  const at::Tensor x = tensor_of(xv, {2, 4}, at::kFloat);
  const at::Tensor s32 = tensor_of({0.5f, 0.25f}, {2, 1}, at::kFloat);
  const at::Tensor zp32 = at::tensor({3, -2}, at::kInt).reshape({2, 1});
  const at::Tensor want = fq_int_op().call(x, s32, zp32, std::nullopt, -8, 7);
  for (auto sdt : {at::kHalf, at::kBFloat16, at::kDouble}) {
    for (auto zdt : {at::kLong, at::kChar, at::kFloat}) {
      INFO("scale " << c10::toString(sdt) << ", zero_point " << c10::toString(zdt));
      const at::Tensor got = fq_int_op().call(x, s32.to(sdt), zp32.to(zdt), std::nullopt, -8, 7);
      CHECK(compare(floats_of(got), floats_of(want), xv) == "");
    }
  }
  // Spot values, computed by hand from the zp formula as a readable cross-check:
  // row 0: s 0.5, zp 3 -> q = clamp(round(x / 0.5) + 3, -8, 7); y = (q - 3) * 0.5
  //   -3.3 -> round(-6.6) = -7 -> -4 -> -3.5;  -1.0 -> -2 + 3 = 1 -> -1.0
  //   0.26 -> round(0.52) = 1 -> 0.5;          0.74 -> round(1.48) = 1 -> 0.5
  const std::vector<float> w = floats_of(want);
  CHECK(w[0] == -3.5f);
  CHECK(w[1] == -1.0f);
  CHECK(w[2] == 0.5f);
  CHECK(w[3] == 0.5f);
  // row 1: s 0.25, zp -2 -> 1.5 -> 6 - 2 = 4 -> 1.5; 2.5 -> 10 - 2 = 8 -> 7 -> 2.25 (clipped)
  CHECK(w[4] == 1.5f);
  CHECK(w[5] == 2.25f);
  CHECK(w[6] == 2.25f);
  CHECK(w[7] == -1.5f);  // -99 -> clamp at -8 -> (-8 + 2) * 0.25
}

TEST_CASE("fake_quantize_int handles non-contiguous inputs", "[ops][fq_int]") {
  std::mt19937 rng(99);
  std::vector<float> xv(37 * 9);
  for (auto& v : xv) v = std::uniform_real_distribution<float>(-3.f, 3.f)(rng);
  // A transposed view: the op makes it contiguous; results follow the logical layout.
  const at::Tensor x = tensor_of(xv, {37, 9}, at::kFloat).t();  // [9, 37], per-channel dim 0
  REQUIRE_FALSE(x.is_contiguous());
  const at::Tensor scale = at::full({9, 1}, 0.125f);
  const at::Tensor y = fq_int_op().call(x, scale, std::nullopt, std::nullopt, -8, 7);
  const at::Tensor y2 = fq_int_op().call(x.contiguous(), scale, std::nullopt, std::nullopt, -8, 7);
  CHECK(at::equal(y, y2));
}

TEST_CASE("fake_quantize_int rejects bad arguments", "[ops][fq_int]") {
  using Catch::Matchers::Contains;
  const at::Tensor x = at::zeros({4, 6});
  const at::Tensor s = at::ones({4, 1});
  auto call = [&](const at::Tensor& scale, const std::optional<at::Tensor>& zp,
                  const std::optional<at::Tensor>& mv, int64_t lo,
                  int64_t hi) { return fq_int_op().call(x, scale, zp, mv, lo, hi); };
  CHECK_THROWS_WITH(call(at::ones({3, 1}), std::nullopt, std::nullopt, -128, 127),
                    Contains("fits no granularity"));
  CHECK_THROWS_WITH(call(at::ones({4, 6, 1}), std::nullopt, std::nullopt, -128, 127),
                    Contains("it has 3 dimensions but the input has 2"));
  CHECK_THROWS_WITH(call(s, at::zeros({4, 1}, at::kInt), at::zeros({4, 1}), -128, 127),
                    Contains("not both"));
  CHECK_THROWS_WITH(call(s, at::zeros({1, 6}, at::kInt), std::nullopt, -128, 127),
                    Contains("zero_point has shape [1, 6] but scale has shape [4, 1]"));
  CHECK_THROWS_WITH(call(s, std::nullopt, std::nullopt, 7, -8),
                    Contains("must be smaller than quant_max"));
  CHECK_THROWS_WITH(call(s, std::nullopt, std::nullopt, -129, 127),
                    Contains("int8 or uint8 container"));
  CHECK_THROWS_WITH(call(s * 0.0, std::nullopt, std::nullopt, -128, 127),
                    Contains("every scale must be positive"));
  CHECK_THROWS_WITH(
      call(s * std::numeric_limits<float>::quiet_NaN(), std::nullopt, std::nullopt, -128, 127),
      Contains("every scale must be positive"));
  CHECK_THROWS_WITH(
      fq_int_op().call(at::zeros({4, 6}, at::kInt), s, std::nullopt, std::nullopt, -128, 127),
      Contains("x has dtype torch.int32"));
  // An empty input is fine and gives an empty output.
  const at::Tensor e =
      fq_int_op().call(at::zeros({0, 6}), at::ones({}), std::nullopt, std::nullopt, -128, 127);
  CHECK(e.numel() == 0);
}

TEST_CASE("fake_quantize_float matches the scalar reference bit for bit", "[ops][fq_float]") {
  std::mt19937 rng(4321);
  for (const FloatCase& fc : kFloatFormats) {
    for (const Gran& g : granularities()) {
      for (c10::ScalarType dt : kInputDtypes) {
        if (g.large && dt == at::kDouble) continue;
        for (bool e8m0 : {false, true}) {
          INFO(fc.name << ", " << g.name << ", x " << c10::toString(dt)
                       << (e8m0 ? ", E8M0 scale" : ", float32 scale"));
          CHECK(run_float_case(g, dt, fc, e8m0, rng) == "");
        }
      }
    }
  }
}

TEST_CASE("fake_quantize_float keeps the sign of -0 in every lane", "[ops][fq_float]") {
  // -0 at every position of a 37-element row: positions 0..31 go through the vector loop
  // (two AVX2 steps of 16), 32..36 through the scalar tail. The reference,
  // (x / s).to(fp8).to(fp32) * s, gives -0 everywhere.
  for (const FloatCase& fc : kFloatFormats) {
    for (c10::ScalarType dt : kInputDtypes) {
      const at::Tensor x = at::full({37}, -0.0, at::TensorOptions().dtype(dt));
      const std::vector<float> y = floats_of(fq_float_op().call(x, at::ones({1}), fc.dtype));
      std::ostringstream lost;
      for (size_t i = 0; i < y.size(); ++i) {
        if (!std::signbit(y[i])) lost << i << " ";
      }
      INFO(fc.name << ", x " << c10::toString(dt)
                   << ": positions that came back +0: " << lost.str());
      CHECK(lost.str().empty());
    }
  }
}

TEST_CASE("round_to_float_format agrees with torch's float8 casts on clamped values",
          "[ops][fq_float]") {
  // An independent implementation of the same rounding: c10's Float8 conversions (round
  // to nearest even; they do not saturate, hence the clamp first, as the reference does).
  std::mt19937 rng(77);
  for (const FloatCase& fc : kFloatFormats) {
    if (fc.format == fmt::FloatFormat::E2M1) continue;  // no scalar fp4 type in c10
    const auto info = fmt::float_format_info(fc.format);
    int bad = 0;
    for (int i = 0; i < 200000; ++i) {
      float v = random_float_value(rng, 1.0f, info);
      if (std::isinf(v)) continue;
      v = std::isnan(v) ? v : std::max(-info.max_value, std::min(v, info.max_value));
      const float ours = ref_round(v, info);
      const float theirs = fc.format == fmt::FloatFormat::E4M3FN
                               ? static_cast<float>(c10::Float8_e4m3fn(v))
                               : static_cast<float>(c10::Float8_e5m2(v));
      const bool same =
          (std::isnan(ours) && std::isnan(theirs)) || bits_of(ours) == bits_of(theirs);
      if (!same && ++bad <= 3)
        FAIL_CHECK(fc.name << ": v " << v << " ours " << ours << " c10 " << theirs);
    }
    INFO(fc.name);
    CHECK(bad == 0);
  }
}

TEST_CASE("fake_quantize_float rejects bad arguments", "[ops][fq_float]") {
  using Catch::Matchers::Contains;
  const at::Tensor x = at::zeros({4, 6});
  CHECK_THROWS_WITH(fq_float_op().call(x, at::ones({1, 1}), at::kChar),
                    Contains("allowed: torch.float8_e4m3fn"));
  CHECK_THROWS_WITH(fq_float_op().call(x, at::ones({1, 4}), c10::ScalarType::Float8_e4m3fn),
                    Contains("fits no granularity"));
  CHECK_THROWS_WITH(
      fq_float_op().call(x, at::ones({1, 1}, at::kInt), c10::ScalarType::Float8_e4m3fn),
      Contains("scale has dtype torch.int32"));
  CHECK_THROWS_WITH(fq_float_op().call(x, -at::ones({1, 1}), c10::ScalarType::Float8_e5m2),
                    Contains("every scale must be positive"));
}
