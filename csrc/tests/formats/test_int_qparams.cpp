// Integer ranges (formats/int_range.h), rounding (formats/rounding.h) and scalar qparams
// (formats/qparams.h) against the formulas of reference/behaviour.md §3, written out here.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "formats/bits.h"
#include "formats/int_range.h"
#include "formats/qparams.h"
#include "formats/rounding.h"

namespace {

using coreai_opt::formats::int_qparams;
using coreai_opt::formats::int_range;
using coreai_opt::formats::IntQParams;
using coreai_opt::formats::IntRange;
using coreai_opt::formats::kFloat32Eps;
using coreai_opt::formats::round_half_even;

// Round half to even from floor alone (no rounding-mode dependence).
float ref_round_half_even(float v) {
  if (!std::isfinite(v)) return v;
  const double f = std::floor(static_cast<double>(v));
  const double d = static_cast<double>(v) - f;
  double r;
  if (d < 0.5) {
    r = f;
  } else if (d > 0.5) {
    r = f + 1.0;
  } else {
    r = std::fmod(f, 2.0) == 0.0 ? f : f + 1.0;
  }
  return std::copysign(static_cast<float>(r), v);  // -0.4 rounds to -0, as torch.round
}

struct Case {
  int bits;
  bool is_signed;
  bool narrow;
};

const Case kCases[] = {{2, true, false}, {2, true, true},   {2, false, false}, {2, false, true},
                       {4, true, false}, {4, true, true},   {4, false, false}, {4, false, true},
                       {8, true, false}, {8, true, true},   {8, false, false}, {8, false, true},
                       {3, true, false}, {5, false, false}, {7, true, true}};

IntQParams ref_qparams(float lo, float hi, int32_t qmin, int32_t qmax, bool symmetric) {
  IntQParams p{};
  if (symmetric) {
    const float max_abs = std::max(-lo, hi);
    p.scale = std::max(max_abs / (static_cast<float>(qmax - qmin) / 2.0f), kFloat32Eps);
    p.zero_point = static_cast<int32_t>(std::trunc((qmax + qmin + 1) / 2.0));  // Python int()
    p.minval = -max_abs;
  } else {
    p.scale = std::max((hi - lo) / static_cast<float>(qmax - qmin), kFloat32Eps);
    const float zp = static_cast<float>(qmin) - ref_round_half_even(lo / p.scale);
    p.zero_point = static_cast<int32_t>(std::min(std::max(zp, float(qmin)), float(qmax)));
    p.minval = lo;
  }
  return p;
}

}  // namespace

TEST_CASE("int_range follows the signed / unsigned / narrow formulas", "[formats][int]") {
  for (int bits = 1; bits <= 8; ++bits) {
    CHECK(coreai_opt::formats::is_supported_int_bits(bits));
    const int64_t half = int64_t{1} << (bits - 1);
    for (bool narrow : {false, true}) {
      INFO("bits " << bits << " narrow " << narrow);
      const IntRange s = int_range(bits, true, narrow);
      CHECK(s.qmin == (narrow ? -(half - 1) : -half));
      CHECK(s.qmax == half - 1);
      // Narrowing applies to signed ranges only.
      const IntRange u = int_range(bits, false, narrow);
      CHECK(u.qmin == 0);
      CHECK(u.qmax == (int64_t{1} << bits) - 1);
    }
  }
  CHECK_FALSE(coreai_opt::formats::is_supported_int_bits(0));
  CHECK_FALSE(coreai_opt::formats::is_supported_int_bits(9));

  // The documented table, as a readable cross-check.
  const int expected[][5] = {// bits, signed, narrow, qmin, qmax
                             {8, 1, 0, -128, 127}, {8, 1, 1, -127, 127}, {8, 0, 0, 0, 255},
                             {4, 1, 0, -8, 7},     {4, 1, 1, -7, 7},     {4, 0, 0, 0, 15},
                             {2, 1, 0, -2, 1},     {2, 1, 1, -1, 1},     {2, 0, 0, 0, 3},
                             {2, 0, 1, 0, 3}};
  for (const auto& e : expected) {
    INFO("bits " << e[0] << " signed " << e[1] << " narrow " << e[2]);
    const IntRange r = int_range(e[0], e[1] != 0, e[2] != 0);
    CHECK(r.qmin == e[3]);
    CHECK(r.qmax == e[4]);
    CHECK(r.qmin >= coreai_opt::formats::kIntContainerMin);
    CHECK(r.qmax <= coreai_opt::formats::kIntContainerMax);
  }
  // constexpr: usable in static tables.
  static_assert(int_range(8, true, false).qmin == -128, "int8 qmin");
}

TEST_CASE("round_half_even rounds ties to even", "[formats][rounding]") {
  const float ties[][2] = {{0.5f, 0.0f},   {1.5f, 2.0f},   {2.5f, 2.0f},  {3.5f, 4.0f},
                           {-0.5f, -0.0f}, {-1.5f, -2.0f}, {-2.5f, -2.0f}};
  for (const auto& t : ties) {
    INFO(t[0]);
    CHECK(round_half_even(t[0]) == t[1]);
    CHECK(std::signbit(round_half_even(t[0])) == std::signbit(t[1]));
  }
  CHECK(std::isnan(round_half_even(std::numeric_limits<float>::quiet_NaN())));
  CHECK(round_half_even(std::numeric_limits<float>::infinity()) ==
        std::numeric_limits<float>::infinity());

  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-300.0f, 300.0f);
  std::uniform_int_distribution<int> k(-1000, 1000);
  for (int i = 0; i < 20000; ++i) {
    // Half of the inputs are exact halves, where the tie rule matters.
    const float v = (i % 2) ? d(rng) : static_cast<float>(k(rng)) + 0.5f;
    INFO(v);
    REQUIRE(coreai_opt::formats::float_to_bits(round_half_even(v)) ==
            coreai_opt::formats::float_to_bits(ref_round_half_even(v)));
  }
}

TEST_CASE("int_qparams: documented values", "[formats][qparams]") {
  // reference/behaviour.md §3: int8 sym max_abs/127.5 zp 0; sym_clip max_abs/127; uint8 zp 128;
  // int4 /7.5, int4 clip /7, uint4 zp 8.
  const float m = 3.0f;
  auto sym = [&](int bits, bool is_signed, bool narrow) {
    const IntRange r = int_range(bits, is_signed, narrow);
    return int_qparams(-m, 1.0f, r.qmin, r.qmax, true);
  };
  CHECK(sym(8, true, false).scale == m / 127.5f);
  CHECK(sym(8, true, false).zero_point == 0);
  CHECK(sym(8, true, true).scale == m / 127.0f);
  CHECK(sym(8, true, true).zero_point == 0);
  CHECK(sym(8, false, false).scale == m / 127.5f);
  CHECK(sym(8, false, false).zero_point == 128);
  CHECK(sym(4, true, false).scale == m / 7.5f);
  CHECK(sym(4, true, true).scale == m / 7.0f);
  CHECK(sym(4, false, false).zero_point == 8);
  CHECK(sym(8, true, false).minval == -m);

  // An all-zero range falls back to eps; asymmetric zp is then qmin.
  const IntQParams z = int_qparams(0.0f, 0.0f, -128, 127, false);
  CHECK(z.scale == kFloat32Eps);
  CHECK(z.zero_point == -128);
  CHECK(z.minval == 0.0f);
  CHECK(int_qparams(0.0f, 0.0f, -128, 127, true).scale == kFloat32Eps);
  CHECK(kFloat32Eps == std::numeric_limits<float>::epsilon());

  // A NaN range gives a NaN scale (the tensor formulas' clamp keeps NaN).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isnan(int_qparams(nan, 1.0f, -128, 127, true).scale));
  CHECK(std::isnan(int_qparams(-1.0f, nan, -128, 127, false).scale));
}

TEST_CASE("int_qparams matches the formulas on random ranges", "[formats][qparams]") {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> log_mag(-12.0f, 12.0f);
  std::uniform_int_distribution<int> pick(0, 9);
  auto end_value = [&]() {
    switch (pick(rng)) {
      case 0:
        return 0.0f;
      case 1:
        return 1e-9f;  // below eps * range: scale clamps to eps
      default:
        return std::exp2(log_mag(rng));
    }
  };
  for (const Case& c : kCases) {
    const IntRange r = int_range(c.bits, c.is_signed, c.narrow);
    for (bool symmetric : {true, false}) {
      for (int i = 0; i < 3000; ++i) {
        const float lo = -end_value();
        const float hi = end_value();
        INFO("bits " << c.bits << " signed " << c.is_signed << " narrow " << c.narrow
                     << " symmetric " << symmetric << " lo " << lo << " hi " << hi);
        const IntQParams got = int_qparams(lo, hi, r.qmin, r.qmax, symmetric);
        const IntQParams want = ref_qparams(lo, hi, r.qmin, r.qmax, symmetric);
        REQUIRE(got.scale == want.scale);
        REQUIRE(got.zero_point == want.zero_point);
        REQUIRE(got.minval == want.minval);
        REQUIRE(got.zero_point >= r.qmin);
        REQUIRE(got.zero_point <= r.qmax);
      }
    }
  }
}

TEST_CASE("widen_lo / widen_hi include zero and keep NaN", "[formats][qparams]") {
  using coreai_opt::formats::widen_hi;
  using coreai_opt::formats::widen_lo;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK(widen_lo(-2.0f) == -2.0f);
  CHECK(widen_lo(3.0f) == 0.0f);
  CHECK(widen_hi(3.0f) == 3.0f);
  CHECK(widen_hi(-2.0f) == 0.0f);
  CHECK(std::isnan(widen_lo(nan)));
  CHECK(std::isnan(widen_hi(nan)));
  CHECK(coreai_opt::formats::max_abs_of(-5.0f, 2.0f) == 5.0f);
  CHECK(coreai_opt::formats::max_abs_of(-1.0f, 2.0f) == 2.0f);
  CHECK(std::isnan(coreai_opt::formats::max_abs_of(nan, 2.0f)));
}
