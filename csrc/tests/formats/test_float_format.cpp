// Minifloat formats (formats/float_format.h) against brute-force references written here:
// a decoder built from the sign / exponent / mantissa definition with std::ldexp, and a
// rounder that searches every code for the nearest grid point. Neither shares code with the
// header, so an error in its quantum / bit arithmetic cannot cancel out.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "formats/bits.h"
#include "formats/float_format.h"
#include "formats/rounding.h"

namespace {

using coreai_opt::formats::bits_to_float;
using coreai_opt::formats::decode_float_format;
using coreai_opt::formats::encode_float_format;
using coreai_opt::formats::float_format_info;
using coreai_opt::formats::float_to_bits;
using coreai_opt::formats::FloatFormat;
using coreai_opt::formats::FloatFormatInfo;
using coreai_opt::formats::round_to_float_format;

// Independent description of each format, from the OCP FP8 / MX specifications.
struct Spec {
  FloatFormat fmt;
  const char* name;
  int e_bits;
  int m_bits;
  int bias;
  double max_value;
  int emax;  // floor(log2(max_value))
  bool has_inf;
  bool has_nan;
};

const Spec kSpecs[] = {
    {FloatFormat::E2M1, "e2m1", 2, 1, 1, 6.0, 2, false, false},
    {FloatFormat::E4M3FN, "e4m3fn", 4, 3, 7, 448.0, 8, false, true},
    {FloatFormat::E5M2, "e5m2", 5, 2, 15, 57344.0, 15, true, true},
};

int total_bits(const Spec& s) { return 1 + s.e_bits + s.m_bits; }
uint32_t n_codes(const Spec& s) { return 1u << total_bits(s); }

enum class Kind { Finite, Inf, NaN };

Kind kind_of(const Spec& s, uint32_t code) {
  const uint32_t e = (code >> s.m_bits) & ((1u << s.e_bits) - 1u);
  const uint32_t m = code & ((1u << s.m_bits) - 1u);
  const uint32_t e_top = (1u << s.e_bits) - 1u;
  const uint32_t m_top = (1u << s.m_bits) - 1u;
  if (s.has_inf && e == e_top) return m == 0 ? Kind::Inf : Kind::NaN;
  // E4M3FN: only S.1111.111 is NaN, the rest of the top binade is finite.
  if (!s.has_inf && s.has_nan && e == e_top && m == m_top) return Kind::NaN;
  return Kind::Finite;
}

// value = (-1)^s * 2^(1 - bias) * (m / 2^M)             exponent field 0 (subnormal)
//         (-1)^s * 2^(e - bias) * (1 + m / 2^M)         otherwise
double brute_decode(const Spec& s, uint32_t code) {
  const bool neg = (code >> (s.e_bits + s.m_bits)) & 1u;
  const uint32_t e = (code >> s.m_bits) & ((1u << s.e_bits) - 1u);
  const uint32_t m = code & ((1u << s.m_bits) - 1u);
  double a;
  switch (kind_of(s, code)) {
    case Kind::NaN:
      return std::numeric_limits<double>::quiet_NaN();
    case Kind::Inf:
      a = std::numeric_limits<double>::infinity();
      break;
    default:
      if (e == 0) {
        a = std::ldexp(static_cast<double>(m), 1 - s.bias - s.m_bits);
      } else {
        a = std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -s.m_bits),
                       static_cast<int>(e) - s.bias);
      }
  }
  return neg ? -a : a;
}

// Nearest grid point by exhaustive search over the non-negative finite codes; an exact tie
// goes to the code whose lowest mantissa bit is 0 (the even code). Magnitudes beyond the
// largest finite value (inf included) saturate, and the result carries v's sign, zero too.
float brute_round(const Spec& s, float v) {
  if (std::isnan(v)) return v;
  const double a = std::fabs(static_cast<double>(v));
  double best = 0.0;
  if (a >= s.max_value) {
    best = s.max_value;
  } else {
    double best_dist = std::numeric_limits<double>::infinity();
    uint32_t best_code = 0;
    for (uint32_t c = 0; c < n_codes(s) / 2; ++c) {
      if (kind_of(s, c) != Kind::Finite) continue;
      const double g = brute_decode(s, c);
      const double d = std::fabs(a - g);
      if (d < best_dist || (d == best_dist && (c & 1u) == 0 && (best_code & 1u) == 1)) {
        best_dist = d;
        best_code = c;
        best = g;
      }
    }
  }
  return std::signbit(v) ? -static_cast<float>(best) : static_cast<float>(best);
}

// Equal as bit patterns (so +0 and -0 differ), or both NaN.
bool same_float(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return float_to_bits(a) == float_to_bits(b);
}

// The largest finite magnitude of a format, from the brute-force decoder.
double brute_max(const Spec& s) {
  double mx = 0.0;
  for (uint32_t c = 0; c < n_codes(s); ++c) {
    const double v = brute_decode(s, c);
    if (std::isfinite(v) && v > mx) mx = v;
  }
  return mx;
}

// Sorted non-negative finite grid of a format.
std::vector<double> positive_grid(const Spec& s) {
  std::vector<double> g;
  for (uint32_t c = 0; c < n_codes(s) / 2; ++c) {
    if (kind_of(s, c) == Kind::Finite) g.push_back(brute_decode(s, c));
  }
  return g;  // codes are monotone in value, so already sorted
}

}  // namespace

TEST_CASE("float_format_info matches the OCP format definitions", "[formats][float]") {
  for (const Spec& s : kSpecs) {
    INFO(s.name);
    const FloatFormatInfo f = float_format_info(s.fmt);
    CHECK(f.exponent_bits == s.e_bits);
    CHECK(f.mantissa_bits == s.m_bits);
    CHECK(f.bias == s.bias);
    CHECK(f.bits == total_bits(s));
    CHECK(f.has_inf == s.has_inf);
    CHECK(f.has_nan == s.has_nan);
    CHECK(f.max_pow2 == s.emax);
    // max_value is both the documented constant and what the code table really holds.
    CHECK(static_cast<double>(f.max_value) == s.max_value);
    CHECK(brute_max(s) == s.max_value);
    CHECK(std::floor(std::log2(s.max_value)) == s.emax);
  }
  // The documented maxima, spelled out once as a cross-check of the table above.
  CHECK(float_format_info(FloatFormat::E2M1).max_value == 6.0f);
  CHECK(float_format_info(FloatFormat::E4M3FN).max_value == 448.0f);
  CHECK(float_format_info(FloatFormat::E5M2).max_value == 57344.0f);
}

TEST_CASE("the fp4 grid is the known E2M1 table", "[formats][float]") {
  const Spec& s = kSpecs[0];
  const double known[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
  const FloatFormatInfo f = float_format_info(FloatFormat::E2M1);
  for (uint32_t c = 0; c < 16; ++c) {
    INFO("code " << c);
    const double expected = (c & 8u) ? -known[c & 7u] : known[c & 7u];
    CHECK(brute_decode(s, c) == expected);
    CHECK(static_cast<double>(decode_float_format(c, f)) == expected);
  }
}

TEST_CASE("decode matches the brute-force formula on every code", "[formats][float]") {
  for (const Spec& s : kSpecs) {
    const FloatFormatInfo f = float_format_info(s.fmt);
    for (uint32_t c = 0; c < n_codes(s); ++c) {
      INFO(s.name << " code " << c);
      const double expected = brute_decode(s, c);
      const float got = decode_float_format(c, f);
      if (std::isnan(expected)) {
        CHECK(std::isnan(got));
      } else {
        CHECK(static_cast<double>(got) == expected);
        // The sign bit survives even for zero (code 0x80 / 0x8 is -0).
        CHECK(std::signbit(got) == static_cast<bool>((c >> (total_bits(s) - 1)) & 1u));
      }
    }
  }
}

TEST_CASE("encode(decode(code)) gives the code back", "[formats][float]") {
  for (const Spec& s : kSpecs) {
    const FloatFormatInfo f = float_format_info(s.fmt);
    int n_nan = 0, n_inf = 0;
    for (uint32_t c = 0; c < n_codes(s); ++c) {
      INFO(s.name << " code " << c);
      const float v = decode_float_format(c, f);
      const uint32_t back = encode_float_format(v, f);
      switch (kind_of(s, c)) {
        case Kind::Finite:
          CHECK(back == c);
          break;
        case Kind::NaN:
          // A NaN code decodes to NaN and NaN encodes to some NaN code of the format.
          ++n_nan;
          CHECK(std::isnan(v));
          CHECK(kind_of(s, back) == Kind::NaN);
          CHECK(back < n_codes(s));
          break;
        case Kind::Inf: {
          // Encoding saturates (the reference clamps before casting), so +-inf comes back
          // as the largest finite code of that sign rather than as the inf code.
          ++n_inf;
          CHECK(std::isinf(v));
          CHECK(back == c - 1u);  // the code just below inf, same sign
          CHECK(std::fabs(brute_decode(s, back)) == s.max_value);
          break;
        }
      }
    }
    CHECK(n_nan == (s.fmt == FloatFormat::E5M2 ? 6 : (s.has_nan ? 2 : 0)));
    CHECK(n_inf == (s.has_inf ? 2 : 0));
  }
}

TEST_CASE("encode of NaN gives a NaN code of either sign", "[formats][float]") {
  for (const Spec& s : kSpecs) {
    if (!s.has_nan) continue;
    INFO(s.name);
    const FloatFormatInfo f = float_format_info(s.fmt);
    const float qnan = std::numeric_limits<float>::quiet_NaN();
    const uint32_t pos = encode_float_format(qnan, f);
    const uint32_t neg = encode_float_format(-qnan, f);
    CHECK(kind_of(s, pos) == Kind::NaN);
    CHECK(kind_of(s, neg) == Kind::NaN);
    CHECK(std::isnan(decode_float_format(pos, f)));
    CHECK(std::isnan(decode_float_format(neg, f)));
  }
}

TEST_CASE("round_to_float_format: ties go to the even code", "[formats][float]") {
  const FloatFormatInfo fp4 = float_format_info(FloatFormat::E2M1);
  // The documented fp4 ties, as a readable cross-check of the generic sweep below.
  const float ties[][2] = {{0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f}, {1.75f, 2.0f},
                           {2.5f, 2.0f},  {3.5f, 4.0f},  {5.0f, 4.0f}};
  for (const auto& t : ties) {
    INFO("fp4 tie " << t[0]);
    CHECK(round_to_float_format(t[0], fp4) == t[1]);
    CHECK(round_to_float_format(-t[0], fp4) == -t[1]);
  }

  // Every midpoint between adjacent grid points of every format, both signs: the result
  // is the neighbour with the even code; one ulp either side goes to the nearer one.
  for (const Spec& s : kSpecs) {
    const FloatFormatInfo f = float_format_info(s.fmt);
    const std::vector<double> g = positive_grid(s);
    for (size_t i = 0; i + 1 < g.size(); ++i) {
      const float mid = static_cast<float>((g[i] + g[i + 1]) / 2.0);
      REQUIRE(static_cast<double>(mid) == (g[i] + g[i + 1]) / 2.0);  // exact in float
      // Codes are consecutive integers here, so code i is even exactly when i is.
      const float even = static_cast<float>(i % 2 == 0 ? g[i] : g[i + 1]);
      INFO(s.name << " midpoint " << mid);
      CHECK(round_to_float_format(mid, f) == even);
      CHECK(round_to_float_format(-mid, f) == -even);
      CHECK(round_to_float_format(std::nextafter(mid, 0.0f), f) == static_cast<float>(g[i]));
      CHECK(round_to_float_format(std::nextafter(mid, 1e30f), f) == static_cast<float>(g[i + 1]));
      CHECK(same_float(round_to_float_format(mid, f), brute_round(s, mid)));
    }
  }
}

TEST_CASE("round_to_float_format: saturation, NaN, signed zero, subnormals", "[formats][float]") {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const Spec& s : kSpecs) {
    INFO(s.name);
    const FloatFormatInfo f = float_format_info(s.fmt);
    const float mx = static_cast<float>(s.max_value);
    // Above the largest value (also where a non-saturating cast would round to inf or NaN).
    for (float v : {mx, std::nextafter(mx, inf), mx * 1.0625f, mx * 1.5f, mx * 2.0f, mx * 1e6f,
                    std::numeric_limits<float>::max(), inf}) {
      INFO("v = " << v);
      CHECK(round_to_float_format(v, f) == mx);
      CHECK(round_to_float_format(-v, f) == -mx);
    }
    CHECK(std::isnan(round_to_float_format(nan, f)));
    CHECK(std::isnan(round_to_float_format(-nan, f)));

    // Zero keeps its sign, and so do magnitudes that round to zero. -0.0f itself is the
    // case to watch: negating a rounded -0 magnitude would turn it into +0.
    const double min_sub = std::ldexp(1.0, 1 - s.bias - s.m_bits);
    for (float v : {0.0f, 1e-30f, std::numeric_limits<float>::denorm_min(),
                    static_cast<float>(min_sub / 2.0)}) {
      INFO("inputs +" << v << " and -" << v);
      const float p = round_to_float_format(v, f);
      const float n = round_to_float_format(-v, f);
      CHECK(p == 0.0f);
      CHECK_FALSE(std::signbit(p));
      CHECK(n == 0.0f);
      CHECK(std::signbit(n));
    }

    // Subnormals of the format: every multiple of the smallest subnormal below the smallest
    // normal is on the grid, and slightly more than half of it rounds up to it.
    const double min_normal = std::ldexp(1.0, 1 - s.bias);
    for (int k = 1; k < (1 << s.m_bits); ++k) {
      const float v = static_cast<float>(k * min_sub);
      INFO("subnormal k = " << k);
      REQUIRE(v < min_normal);
      CHECK(round_to_float_format(v, f) == v);
      CHECK(round_to_float_format(-v, f) == -v);
    }
    CHECK(round_to_float_format(std::nextafter(static_cast<float>(min_sub / 2.0), 1.0f), f) ==
          static_cast<float>(min_sub));
  }
}

TEST_CASE("round_to_float_format and encode agree with a brute-force search on random floats",
          "[formats][float]") {
  std::mt19937 rng(20240611);
  for (const Spec& s : kSpecs) {
    const FloatFormatInfo f = float_format_info(s.fmt);
    const float mx = static_cast<float>(s.max_value);
    std::uniform_real_distribution<float> in_range(-1.25f * mx, 1.25f * mx);
    std::uniform_int_distribution<uint32_t> any_bits;
    // Log-uniform magnitudes across the whole normal + subnormal span of the format.
    std::uniform_real_distribution<float> log_mag(static_cast<float>(-s.bias - s.m_bits - 3),
                                                  static_cast<float>(s.emax + 2));
    std::uniform_int_distribution<int> coin(0, 1);
    int mismatches = 0;
    for (int i = 0; i < 30000; ++i) {
      float v;
      switch (i % 3) {
        case 0:
          v = in_range(rng);
          break;
        case 1:
          v = std::exp2(log_mag(rng)) * (coin(rng) ? -1.0f : 1.0f);
          break;
        default:
          v = bits_to_float(any_bits(rng));  // any float: NaN, inf, denormals included
      }
      const float expected = brute_round(s, v);
      const float got = round_to_float_format(v, f);
      if (!same_float(got, expected)) {
        // Report the first few with their exact bits; the count tells the rest.
        if (++mismatches <= 5) {
          FAIL_CHECK(s.name << ": round(" << v << " bits 0x" << std::hex << float_to_bits(v)
                            << ") = " << got << ", brute force " << expected);
        }
        continue;
      }
      // encode then decode is the rounded value (for NaN: some NaN).
      const float back = decode_float_format(encode_float_format(v, f), f);
      if (std::isnan(v) && !s.has_nan) continue;  // FP4 has no NaN code
      if (!same_float(back, expected) && ++mismatches <= 5) {
        FAIL_CHECK(s.name << ": decode(encode(" << v << ")) = " << back << ", expected "
                          << expected);
      }
    }
    INFO(s.name);
    CHECK(mismatches == 0);
  }
}
