// E8M0 shared scales (formats/e8m0.h) against a reference built on std::frexp / std::ldexp
// instead of float bit fields: e_s = clamp(floor(log2(max_abs)) - emax, -127, 128),
// scale = max(2^e_s, 2^-126).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "formats/bits.h"
#include "formats/e8m0.h"

namespace {

using coreai_opt::formats::bits_to_float;
using coreai_opt::formats::e8m0_decode;
using coreai_opt::formats::e8m0_exponent;
using coreai_opt::formats::e8m0_scale;

// floor(log2(a)) for finite a > 0, from frexp (a = m * 2^k with m in [0.5, 1)). Zero has no
// exponent: -1000 stands for -inf and clamps like it. +inf has the all-ones exponent field,
// i.e. 2^128, which is what the OCP rule reads from the bits (reference/behaviour.md §3).
int floor_log2(float a) {
  if (a == 0.0f) return -1000;
  if (std::isinf(a)) return 128;
  int k = 0;
  std::frexp(static_cast<double>(a), &k);
  return k - 1;
}

int ref_exponent(float max_abs, int emax) {
  const int e = floor_log2(max_abs) - emax;
  return e < -127 ? -127 : (e > 128 ? 128 : e);
}

double ref_scale(float max_abs, int emax) {
  const double s = std::ldexp(1.0, ref_exponent(max_abs, emax));
  const double smallest = std::ldexp(1.0, -126);
  return s < smallest ? smallest : s;
}

std::vector<float> edge_values() {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v = {0.0f,
                          std::numeric_limits<float>::denorm_min(),
                          bits_to_float(0x007FFFFFu),  // largest denormal
                          std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::max(),
                          inf,
                          1.0f,
                          0.75f,
                          6.0f,
                          448.0f,
                          57344.0f,
                          1e-30f,
                          1e30f,
                          3.0e38f};
  // Powers of two over the whole float range, and their neighbours either side: just
  // below a power of two the exponent is one smaller.
  for (int k = -149; k <= 127; ++k) {
    const float p = std::ldexp(1.0f, k);
    v.push_back(p);
    v.push_back(std::nextafter(p, 0.0f));
    v.push_back(std::nextafter(p, inf));
  }
  return v;
}

}  // namespace

TEST_CASE("e8m0 scale matches the frexp reference on edge values", "[formats][e8m0]") {
  for (int emax : {2, 8, 15}) {
    for (float a : edge_values()) {
      INFO("emax " << emax << " max_abs " << a << " (bits 0x" << std::hex
                   << coreai_opt::formats::float_to_bits(a) << ")");
      CHECK(e8m0_exponent(a, emax) == ref_exponent(a, emax));
      CHECK(static_cast<double>(e8m0_scale(a, emax)) == ref_scale(a, emax));
    }
  }
}

TEST_CASE("e8m0 scale matches the frexp reference on random values", "[formats][e8m0]") {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits(0, 0x7F7FFFFFu);  // every finite non-negative
  std::uniform_real_distribution<float> unit(0.0f, 1000.0f);
  for (int emax : {2, 8, 15}) {
    for (int i = 0; i < 20000; ++i) {
      const float a = (i % 2) ? bits_to_float(bits(rng)) : unit(rng);
      INFO("emax " << emax << " max_abs " << a);
      REQUIRE(e8m0_exponent(a, emax) == ref_exponent(a, emax));
      REQUIRE(static_cast<double>(e8m0_scale(a, emax)) == ref_scale(a, emax));
    }
  }
}

TEST_CASE("e8m0 scale brings max_abs into the element format's top binade", "[formats][e8m0]") {
  // The point of the rule: max_abs / scale lies in [2^emax, 2^(emax+1)) unless clamped.
  for (int emax : {2, 8, 15}) {
    for (float a : {1.0f, 3.0f, 100.0f, 448.0f, 1e-20f, 1e20f}) {
      INFO("emax " << emax << " max_abs " << a);
      const double r = a / static_cast<double>(e8m0_scale(a, emax));
      CHECK(r >= std::ldexp(1.0, emax));
      CHECK(r < std::ldexp(1.0, emax + 1));
    }
  }
  // A scale is always a power of two and never below the smallest normal float.
  CHECK(e8m0_scale(0.0f, 2) == std::ldexp(1.0f, -126));
  CHECK(e8m0_exponent(0.0f, 2) == -127);
}

TEST_CASE("e8m0_decode gives 2^(code - 127) for every code and NaN for 0xFF", "[formats][e8m0]") {
  for (int code = 0; code < 255; ++code) {
    INFO("code " << code);
    REQUIRE(static_cast<double>(e8m0_decode(static_cast<uint8_t>(code))) ==
            std::ldexp(1.0, code - 127));
  }
  CHECK(std::isnan(e8m0_decode(0xFF)));
}
