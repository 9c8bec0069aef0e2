// CPU range observation, qparam calculation and sub-byte packing, called through the
// dispatcher, against scalar references written here (group-by-block min / max, the
// csrc/formats qparam helpers, bit-level packing of the documented layout).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/kernels/kernels.h"
#include "formats/e8m0.h"
#include "formats/float_format.h"
#include "formats/int_range.h"
#include "formats/qparams.h"
#include "tests/qparam_index.h"

namespace {

namespace fmt = coreai_opt::formats;
using Catch::Matchers::Contains;
using coreai_opt::test::numel_of;
using coreai_opt::test::Sizes;

using MinMaxFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, c10::SymIntArrayRef);
using UpdateRangeFn = void(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           c10::SymIntArrayRef, c10::string_view, double);
using QParamsIntFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&,
                                                                    const at::Tensor&, int64_t,
                                                                    int64_t, bool,
                                                                    std::optional<double>,
                                                                    std::optional<double>);
using QParamsFloatFn = at::Tensor(const at::Tensor&, const at::Tensor&, c10::ScalarType, bool,
                                  std::optional<double>, std::optional<double>);
using PackFn = at::Tensor(const at::Tensor&, c10::ScalarType);

template <typename Fn>
c10::TypedOperatorHandle<Fn> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

std::tuple<at::Tensor, at::Tensor> call_minmax(const at::Tensor& x, const Sizes& block) {
  static const auto op = find_op<MinMaxFn>("coreai_opt::minmax");
  return op.call(x, c10::fromIntArrayRefSlow(block));
}

void call_update_range(const at::Tensor& x, const at::Tensor& rmin, const at::Tensor& rmax,
                       const Sizes& block, const char* method, double c) {
  static const auto op = find_op<UpdateRangeFn>("coreai_opt::update_range");
  op.call(x, rmin, rmax, c10::fromIntArrayRefSlow(block), method, c);
}

const c10::TypedOperatorHandle<QParamsIntFn>& qparams_int_op() {
  static const auto op = find_op<QParamsIntFn>("coreai_opt::choose_qparams_int");
  return op;
}

const c10::TypedOperatorHandle<QParamsFloatFn>& qparams_float_op() {
  static const auto op = find_op<QParamsFloatFn>("coreai_opt::choose_qparams_float");
  return op;
}

at::Tensor call_pack(const at::Tensor& q, c10::ScalarType dt) {
  static const auto op = find_op<PackFn>("coreai_opt::pack");
  return op.call(q, dt);
}

at::Tensor call_unpack(const at::Tensor& p, c10::ScalarType dt) {
  static const auto op = find_op<PackFn>("coreai_opt::unpack");
  return op.call(p, dt);
}

at::Tensor tensor_of(const std::vector<float>& v, const Sizes& sizes, c10::ScalarType st) {
  return at::from_blob(const_cast<float*>(v.data()), sizes, at::kFloat).clone().to(st);
}

std::vector<float> floats_of(const at::Tensor& t) {
  const auto c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.const_data_ptr<float>(), c.const_data_ptr<float>() + c.numel());
}

// v stored in dtype st and read back as float.
float in_dtype(float v, c10::ScalarType st) { return floats_of(tensor_of({v}, {1}, st))[0]; }

bool same_float(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

// Reference min / max per block, NaN propagating (torch.amin semantics).
void ref_minmax(const std::vector<float>& x, const Sizes& xs, const Sizes& block,
                std::vector<float>& lo, std::vector<float>& hi) {
  Sizes qs(xs.size());
  for (size_t d = 0; d < xs.size(); ++d) qs[d] = xs[d] / block[d];
  lo.assign(numel_of(qs), std::numeric_limits<float>::infinity());
  hi.assign(numel_of(qs), -std::numeric_limits<float>::infinity());
  std::vector<int64_t> idx(xs.size(), 0);
  for (size_t e = 0; e < x.size(); ++e) {
    int64_t q = 0;
    for (size_t d = 0; d < xs.size(); ++d) q = q * qs[d] + idx[d] / block[d];
    const float v = x[e];
    if (std::isnan(v) || std::isnan(lo[q])) {
      lo[q] = hi[q] = std::numeric_limits<float>::quiet_NaN();
    } else {
      lo[q] = std::min(lo[q], v);
      hi[q] = std::max(hi[q], v);
    }
    for (int64_t d = static_cast<int64_t>(xs.size()) - 1; d >= 0; --d) {
      if (++idx[d] < xs[d]) break;
      idx[d] = 0;
    }
  }
}

struct BlockCase {
  const char* name;
  Sizes x;
  Sizes block;
};

const BlockCase kBlockCases[] = {
    {"per-tensor", {6, 37}, {6, 37}},
    {"per-channel dim 0", {6, 67}, {1, 67}},
    {"per-channel last dim", {7, 45}, {7, 1}},
    {"per-channel middle dim", {3, 5, 19}, {3, 1, 19}},
    {"blocks of 32 along last dim", {4, 96}, {1, 32}},
    {"blocks of 7 along last dim", {5, 35}, {1, 7}},
    {"tuple blocks (4, 16)", {8, 48}, {4, 16}},
    {"per element", {3, 11}, {1, 1}},
    {"large per-tensor", {70001}, {70001}},
    {"large per-channel dim 0", {3, 20011}, {1, 20011}},
    {"large per-channel last dim", {257, 131}, {257, 1}},
    {"large blocks of 32", {130, 512}, {1, 32}},
};

}  // namespace

TEST_CASE("minmax matches the per-block reference", "[ops][observe]") {
  std::mt19937 rng(8);
  for (const BlockCase& bc : kBlockCases) {
    for (c10::ScalarType dt : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
      for (bool with_nan : {false, true}) {
        const int64_t n = numel_of(bc.x);
        std::vector<float> xv(n);
        for (auto& v : xv) v = std::uniform_real_distribution<float>(-50.f, 50.f)(rng);
        if (with_nan) {
          for (int k = 0; k < 3; ++k) xv[rng() % n] = std::numeric_limits<float>::quiet_NaN();
          xv[rng() % n] = std::numeric_limits<float>::infinity();
        }
        const at::Tensor x = tensor_of(xv, bc.x, dt);
        std::vector<float> lo, hi;
        ref_minmax(floats_of(x), bc.x, bc.block, lo, hi);
        const auto [tlo, thi] = call_minmax(x, bc.block);
        INFO(bc.name << ", x " << c10::toString(dt) << (with_nan ? ", with NaN" : ""));
        CHECK(tlo.scalar_type() == dt);
        CHECK(thi.scalar_type() == dt);
        Sizes qs(bc.x.size());
        for (size_t d = 0; d < qs.size(); ++d) qs[d] = bc.x[d] / bc.block[d];
        CHECK(tlo.sizes() == at::IntArrayRef(qs));
        const auto glo = floats_of(tlo), ghi = floats_of(thi);
        int bad = 0;
        for (size_t i = 0; i < lo.size(); ++i) {
          if (!same_float(glo[i], lo[i]) || !same_float(ghi[i], hi[i])) {
            if (++bad <= 3) {
              FAIL_CHECK("qparam " << i << ": got [" << glo[i] << ", " << ghi[i] << "] want ["
                                   << lo[i] << ", " << hi[i] << "]");
            }
          }
        }
        CHECK(bad == 0);
      }
    }
  }
}

TEST_CASE("minmax rejects block sizes that do not divide", "[ops][observe]") {
  CHECK_THROWS_WITH(call_minmax(at::zeros({8, 64}), {3, 64}),
                    Contains("block_size[0] = 3 does not divide the input's dimension 0"));
  CHECK_THROWS_WITH(call_minmax(at::zeros({8, 64}), {8}), Contains("block_size has 1 entries"));
}

TEST_CASE("update_range folds batches by method", "[ops][observe]") {
  const float inf = std::numeric_limits<float>::infinity();
  const Sizes xs = {4, 33}, block = {1, 33};  // per-channel dim 0
  std::mt19937 rng(21);
  for (const char* method : {"static", "moving_average", "global_minmax"}) {
    auto rmin = at::full({4, 1}, inf);
    auto rmax = at::full({4, 1}, -inf);
    std::vector<float> want_lo(4, inf), want_hi(4, -inf);
    const double c = 0.25;
    for (int step = 0; step < 4; ++step) {
      std::vector<float> xv(numel_of(xs));
      for (auto& v : xv) v = std::uniform_real_distribution<float>(-10.f, 10.f)(rng) * (step + 1);
      std::vector<float> lo, hi;
      ref_minmax(xv, xs, block, lo, hi);
      for (int i = 0; i < 4; ++i) {
        const std::string m = method;
        if (m == "static") {
          want_lo[i] = lo[i];
          want_hi[i] = hi[i];
        } else if (m == "moving_average") {
          // Uninitialised (+-inf) takes the batch; then c * batch + (1 - c) * running.
          const float cf = static_cast<float>(c);
          want_lo[i] = want_lo[i] == inf ? lo[i] : cf * lo[i] + (1.0f - cf) * want_lo[i];
          want_hi[i] = want_hi[i] == -inf ? hi[i] : cf * hi[i] + (1.0f - cf) * want_hi[i];
        } else {
          want_lo[i] = std::min(want_lo[i], lo[i]);
          want_hi[i] = std::max(want_hi[i], hi[i]);
        }
      }
      call_update_range(tensor_of(xv, xs, at::kFloat), rmin, rmax, block, method, c);
      INFO(method << ", step " << step);
      CHECK(floats_of(rmin) == want_lo);
      CHECK(floats_of(rmax) == want_hi);
    }
  }
  auto rmin = at::full({4, 1}, inf), rmax = at::full({4, 1}, -inf);
  CHECK_THROWS_WITH(call_update_range(at::zeros(xs), rmin, rmax, block, "ema", 0.1),
                    Contains("allowed: 'static', 'moving_average', 'global_minmax'"));
  CHECK_THROWS_WITH(
      call_update_range(at::zeros(xs), at::full({1, 4}, inf), rmax, block, "static", 0.1),
      Contains("running_min has shape"));
}

TEST_CASE("choose_qparams_int matches the formats formulas", "[ops][qparams]") {
  struct Range {
    int32_t qmin, qmax;
  };
  const Range ranges[] = {{-128, 127}, {-127, 127}, {0, 255}, {-8, 7}, {-7, 7}, {0, 15}, {-2, 1}};
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> u(-20.f, 20.f);
  const std::optional<double> none;
  // float_range: none, both ends, one end each.
  const std::pair<std::optional<double>, std::optional<double>> fixed[] = {
      {none, none}, {-3.0, 5.0}, {-2.5, none}, {none, 0.75}};
  for (const Range& r : ranges) {
    for (bool symmetric : {true, false}) {
      for (const auto& fr : fixed) {
        for (c10::ScalarType dt : {at::kFloat, at::kBFloat16}) {
          std::vector<float> mins(15), maxs(15);
          for (int i = 0; i < 15; ++i) {
            float a = u(rng), b = u(rng);
            if (i == 0) a = b = 0.0f;  // all-zero range: scale clamps to eps
            if (i == 1) {              // positive range: min widens to 0
              a = 1.0f;
              b = 4.0f;
            }
            if (i == 2) {  // negative range: max widens to 0
              a = -4.0f;
              b = -1.0f;
            }
            mins[i] = std::min(a, b);
            maxs[i] = std::max(a, b);
          }
          const at::Tensor tmin = tensor_of(mins, {3, 5}, dt), tmax = tensor_of(maxs, {3, 5}, dt);
          const auto lo = floats_of(tmin), hi = floats_of(tmax);
          const auto [s, zp, mv] =
              qparams_int_op().call(tmin, tmax, r.qmin, r.qmax, symmetric, fr.first, fr.second);
          INFO("range [" << r.qmin << ", " << r.qmax << "] symmetric " << symmetric << " range_min "
                         << fr.first.value_or(NAN) << " range_max " << fr.second.value_or(NAN)
                         << " dtype " << c10::toString(dt));
          REQUIRE(s.scalar_type() == dt);
          REQUIRE(mv.scalar_type() == dt);
          REQUIRE(zp.scalar_type() == at::kInt);
          REQUIRE(s.sizes() == tmin.sizes());
          const auto gs = floats_of(s), gm = floats_of(mv);
          const auto zc = zp.contiguous();
          for (int i = 0; i < 15; ++i) {
            const float l = fr.first ? static_cast<float>(*fr.first) : fmt::widen_lo(lo[i]);
            const float h = fr.second ? static_cast<float>(*fr.second) : fmt::widen_hi(hi[i]);
            const auto p = fmt::int_qparams(l, h, r.qmin, r.qmax, symmetric);
            INFO("qparam " << i << ": min " << lo[i] << " max " << hi[i]);
            // Computed in float32, returned in the input's dtype.
            CHECK(same_float(gs[i], in_dtype(p.scale, dt)));
            CHECK(same_float(gm[i], in_dtype(p.minval, dt)));
            CHECK(zc.const_data_ptr<int32_t>()[i] == p.zero_point);
          }
        }
      }
    }
  }
  CHECK_THROWS_WITH(qparams_int_op().call(at::zeros({2}), at::ones({2}), -8, 7, true, 1.0, none),
                    Contains("range_min is 1"));
  CHECK_THROWS_WITH(qparams_int_op().call(at::zeros({2}), at::ones({3}), -8, 7, true, none, none),
                    Contains("max has shape [3] but min has shape [2]"));
}

TEST_CASE("choose_qparams_float: max_abs / max or the E8M0 rule", "[ops][qparams]") {
  struct F {
    c10::ScalarType dt;
    fmt::FloatFormat f;
  };
  const F formats_[] = {{c10::ScalarType::Float8_e4m3fn, fmt::FloatFormat::E4M3FN},
                        {c10::ScalarType::Float8_e5m2, fmt::FloatFormat::E5M2},
                        {c10::ScalarType::Float4_e2m1fn_x2, fmt::FloatFormat::E2M1}};
  std::mt19937 rng(41);
  std::uniform_real_distribution<float> lg(-30.f, 30.f);
  std::vector<float> mins(40), maxs(40);
  for (int i = 0; i < 40; ++i) {
    mins[i] = -std::exp2(lg(rng));
    maxs[i] = std::exp2(lg(rng));
  }
  mins[0] = maxs[0] = 0.0f;
  const at::Tensor tmin = tensor_of(mins, {40}, at::kFloat),
                   tmax = tensor_of(maxs, {40}, at::kFloat);
  for (const F& f : formats_) {
    const auto info = fmt::float_format_info(f.f);
    for (bool e8m0 : {false, true}) {
      const auto s =
          floats_of(qparams_float_op().call(tmin, tmax, f.dt, e8m0, std::nullopt, std::nullopt));
      for (int i = 0; i < 40; ++i) {
        const float max_abs = std::max(-mins[i], maxs[i]);
        const float want = e8m0 ? fmt::e8m0_scale(max_abs, info.max_pow2)
                                : std::max(max_abs / info.max_value, fmt::kFloat32Eps);
        INFO("format " << c10::toString(f.dt) << " e8m0 " << e8m0 << " max_abs " << max_abs);
        CHECK(same_float(s[i], want));
      }
    }
  }
}

TEST_CASE("pack / unpack integer formats: layout and round trip", "[ops][pack]") {
  struct P {
    c10::ScalarType dt;
    int bits;
    bool is_signed;
  };
  const P cases[] = {{c10::ScalarType::Int4, 4, true},
                     {c10::ScalarType::UInt4, 4, false},
                     {c10::ScalarType::Int2, 2, true},
                     {c10::ScalarType::UInt2, 2, false}};
  std::mt19937 rng(51);
  for (const P& p : cases) {
    const auto r = fmt::int_range(p.bits, p.is_signed, false);
    const int per_byte = 8 / p.bits;
    const Sizes shape = {3, 5, 4 * 7};  // last dim a multiple of 4 (and of 2)
    const int64_t n = numel_of(shape);
    std::vector<int64_t> codes(n);
    for (auto& v : codes) v = std::uniform_int_distribution<int>(r.qmin, r.qmax)(rng);
    codes[0] = r.qmin;
    codes[1] = r.qmax;
    for (c10::ScalarType in_dt : {at::kChar, at::kByte, at::kInt, at::kLong}) {
      if (in_dt == at::kByte && p.is_signed) continue;  // negative codes do not fit uint8
      const at::Tensor q = at::tensor(codes, at::kLong).reshape(shape).to(in_dt);
      const at::Tensor packed = call_pack(q, p.dt);
      INFO(c10::toString(p.dt) << " from " << c10::toString(in_dt));
      REQUIRE(packed.scalar_type() == at::kByte);
      REQUIRE(packed.sizes() == at::IntArrayRef({3, 5, 28 / per_byte}));
      // The element with the lower index sits in the lower bits.
      const auto pc = packed.contiguous();
      const uint8_t* b = pc.const_data_ptr<uint8_t>();
      const uint32_t mask = (1u << p.bits) - 1u;
      for (int64_t i = 0; i < pc.numel(); ++i) {
        uint32_t want = 0;
        for (int k = 0; k < per_byte; ++k) {
          want |= (static_cast<uint32_t>(codes[i * per_byte + k]) & mask) << (k * p.bits);
        }
        REQUIRE(b[i] == want);
      }
      const at::Tensor back = call_unpack(packed, p.dt);
      CHECK(back.scalar_type() == (p.is_signed ? at::kChar : at::kByte));
      CHECK(at::equal(back.to(at::kLong), at::tensor(codes, at::kLong).reshape(shape)));
    }
  }
  // A hand-checked byte: int4 [-1, 2] -> 0xF | 0x2 << 4 = 0x2F; uint2 [1, 2, 3, 0] -> 0x39.
  CHECK(call_pack(at::tensor({-1, 2}, at::kChar), c10::ScalarType::Int4).item<uint8_t>() == 0x2F);
  CHECK(call_pack(at::tensor({1, 2, 3, 0}, at::kByte), c10::ScalarType::UInt2).item<uint8_t>() ==
        0x39);

  CHECK_THROWS_WITH(call_pack(at::tensor({8, 0}, at::kChar), c10::ScalarType::Int4),
                    Contains("value 8 at flat index 0 does not fit"));
  CHECK_THROWS_WITH(call_pack(at::tensor({0, -1, 0, 0}, at::kChar), c10::ScalarType::UInt2),
                    Contains("value -1 at flat index 1 does not fit"));
  CHECK_THROWS_WITH(call_pack(at::zeros({3, 6}, at::kChar), c10::ScalarType::Int2),
                    Contains("must be a multiple of 4"));
  CHECK_THROWS_WITH(call_pack(at::zeros({2}, at::kFloat), c10::ScalarType::Int4),
                    Contains("integer formats take an integer tensor"));
  CHECK_THROWS_WITH(call_pack(at::zeros({2}, at::kChar), at::kChar),
                    Contains("allowed: torch.int4"));
  CHECK_THROWS_WITH(call_unpack(at::zeros({2}, at::kChar), c10::ScalarType::Int4),
                    Contains("packed must be torch.uint8"));
}

TEST_CASE("pack / unpack fp4: saturating round to nearest even, round trip", "[ops][pack]") {
  const auto info = fmt::float_format_info(fmt::FloatFormat::E2M1);
  const auto fp4 = c10::ScalarType::Float4_e2m1fn_x2;
  std::mt19937 rng(61);
  std::vector<float> xv(6 * 34);
  for (size_t i = 0; i < xv.size(); ++i) {
    xv[i] = (i % 4 == 0) ? 0.25f * static_cast<float>(static_cast<int>(rng() % 60) - 30)  // ties
                         : std::uniform_real_distribution<float>(-8.f, 8.f)(rng);
  }
  xv[0] = std::numeric_limits<float>::infinity();
  xv[1] = -std::numeric_limits<float>::infinity();
  for (c10::ScalarType dt : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
    const at::Tensor x = tensor_of(xv, {6, 34}, dt);
    const auto xs = floats_of(x);
    const at::Tensor packed = call_pack(x, fp4);
    REQUIRE(packed.sizes() == at::IntArrayRef({6, 17}));
    const auto pc = packed.contiguous();
    const uint8_t* b = pc.const_data_ptr<uint8_t>();
    const at::Tensor back = call_unpack(packed, fp4);
    REQUIRE(back.scalar_type() == at::kFloat);
    const auto bv = floats_of(back);
    INFO("x " << c10::toString(dt));
    for (size_t i = 0; i < xs.size(); ++i) {
      INFO("element " << i << " = " << xs[i]);
      const uint32_t code = (b[i / 2] >> (4 * (i % 2))) & 0xFu;
      REQUIRE(code == fmt::encode_float_format(xs[i], info));
      // Unpacked value = the saturating round-to-nearest-even of x, sign included.
      const float r = fmt::round_to_float_format(xs[i], info);
      REQUIRE(bv[i] == r);
      REQUIRE(std::signbit(bv[i]) == std::signbit(xs[i]));
    }
  }
  // Hand-checked: [0.5, -6] -> codes 0x1, 0xF -> byte 0xF1; 5.0 is a tie -> 4.0 (code 0x6).
  CHECK(call_pack(at::tensor({0.5f, -6.0f}), fp4).item<uint8_t>() == 0xF1);
  CHECK(call_pack(at::tensor({5.0f, 0.0f}), fp4).item<uint8_t>() == 0x06);
  CHECK(floats_of(call_unpack(at::tensor({0xF1}, at::kByte), fp4)) ==
        std::vector<float>{0.5f, -6.0f});
  // All 256 bytes unpack to the decoded codes and pack back to themselves.
  const at::Tensor all = at::arange(256, at::kInt).to(at::kByte);
  CHECK(at::equal(call_pack(call_unpack(all, fp4), fp4), all));

  CHECK_THROWS_WITH(call_pack(at::tensor({0.0f, NAN}), fp4),
                    Contains("FP4 has no NaN code; found NaN at flat index 1"));
  CHECK_THROWS_WITH(call_pack(at::tensor({1, 2}, at::kInt), fp4),
                    Contains("FP4 values must be a floating-point tensor"));
}

TEST_CASE("the kernel table follows ATEN_CPU_CAPABILITY", "[ops][isa]") {
  // Running this binary with ATEN_CPU_CAPABILITY=default checks the scalar (DEFAULT) kernels
  // against the same references; the name tells which table the other tests exercised.
  const std::string isa = coreai_opt::cpu::kernel_isa();
  INFO("kernel table: " << isa);
  CHECK((isa == "DEFAULT" || isa == "AVX2" || isa == "AVX512"));
  const char* env = std::getenv("ATEN_CPU_CAPABILITY");
  if (env != nullptr && std::string(env) == "default") CHECK(isa == "DEFAULT");
}
