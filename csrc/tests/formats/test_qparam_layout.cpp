// Canonical qparam layouts (formats/qparam_layout.h): the documented shapes of each
// granularity, and for random shapes that walking the canonical dimensions visits the same
// qparam per element as the direct formula q_d = i_d / (x_d / q_d).
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "formats/qparam_layout.h"
#include "tests/qparam_index.h"

namespace {

using Catch::Matchers::Contains;
using coreai_opt::formats::CanonicalDim;
using coreai_opt::formats::make_qparam_layout;
using coreai_opt::formats::qparam_shape_error;
using coreai_opt::formats::qparam_sizes_from_blocks;
using coreai_opt::formats::QParamLayout;
using coreai_opt::test::numel_of;
using coreai_opt::test::Sizes;

struct Dim {
  int64_t size;
  bool full;
  int64_t qstride;
};

void check_dims(const QParamLayout& l, const std::vector<Dim>& want) {
  REQUIRE(l.dims.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("canonical dim " << i);
    CHECK(l.dims[i].size == want[i].size);
    CHECK(l.dims[i].full == want[i].full);
    CHECK(l.dims[i].qstride == want[i].qstride);
  }
}

// Flat qparam index of every element, by walking the canonical dimensions.
std::vector<int64_t> layout_qindex(const QParamLayout& l) {
  std::vector<int64_t> out(l.numel);
  std::vector<int64_t> idx(l.dims.size(), 0);
  for (int64_t e = 0; e < l.numel; ++e) {
    int64_t qi = 0;
    for (size_t d = 0; d < l.dims.size(); ++d) qi += idx[d] * l.dims[d].qstride;
    out[e] = qi;
    for (int64_t d = static_cast<int64_t>(l.dims.size()) - 1; d >= 0; --d) {
      if (++idx[d] < l.dims[d].size) break;
      idx[d] = 0;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("make_qparam_layout: one layout per granularity", "[formats][layout]") {
  const Sizes x = {4, 5, 6};
  SECTION("per tensor") {
    const auto l = make_qparam_layout(x, {1, 1, 1});
    check_dims(l, {{120, false, 0}});
    CHECK(l.numel == 120);
    CHECK(l.qnumel == 1);
    CHECK(l.per_tensor());
    CHECK_FALSE(l.inner_full());
    CHECK(l.inner_size() == 120);
  }
  SECTION("per channel, dim 0") {
    const auto l = make_qparam_layout(x, {4, 1, 1});
    check_dims(l, {{4, true, 1}, {30, false, 0}});
    CHECK(l.qnumel == 4);
    CHECK_FALSE(l.per_tensor());
    CHECK_FALSE(l.inner_full());
  }
  SECTION("per channel, last dim") {
    const auto l = make_qparam_layout(x, {1, 1, 6});
    check_dims(l, {{20, false, 0}, {6, true, 1}});
    CHECK(l.qnumel == 6);
    CHECK(l.inner_full());
    CHECK(l.inner_size() == 6);
  }
  SECTION("per channel, middle dim") {
    const auto l = make_qparam_layout(x, {1, 5, 1});
    check_dims(l, {{4, false, 0}, {5, true, 1}, {6, false, 0}});
    CHECK(l.qnumel == 5);
  }
  SECTION("per channel on two dims merges them") {
    const auto l = make_qparam_layout(x, {4, 5, 1});
    check_dims(l, {{20, true, 1}, {6, false, 0}});
    CHECK(l.qnumel == 20);
  }
  SECTION("every element its own qparam") {
    const auto l = make_qparam_layout(x, x);
    check_dims(l, {{120, true, 1}});
    CHECK(l.qnumel == 120);
    CHECK(l.inner_full());
  }
  SECTION("blocks along the last dim") {
    // [4, 64] in blocks of 32 along dim 1: the channel dim and the block index merge.
    const auto l = make_qparam_layout({4, 64}, {4, 2});
    check_dims(l, {{8, true, 1}, {32, false, 0}});
    CHECK(l.numel == 256);
    CHECK(l.qnumel == 8);
  }
  SECTION("blocks along dim 0 only") {
    const auto l = make_qparam_layout({8, 16}, {2, 1});
    check_dims(l, {{2, true, 1}, {64, false, 0}});
  }
  SECTION("tuple blocks") {
    // [8, 64] with blocks (4, 16): qparams [2, 4].
    const auto l = make_qparam_layout({8, 64}, {2, 4});
    check_dims(l, {{2, true, 4}, {4, false, 0}, {4, true, 1}, {16, false, 0}});
    CHECK(l.qnumel == 8);
  }
  SECTION("size-1 dims vanish") {
    const auto l = make_qparam_layout({1, 5, 1, 6}, {1, 5, 1, 1});
    check_dims(l, {{5, true, 1}, {6, false, 0}});
    CHECK(l.numel == 30);
    CHECK(l.qnumel == 5);
  }
  SECTION("all size-1 dims and 0-d inputs keep one Broadcast dim") {
    const auto l = make_qparam_layout({1, 1}, {1, 1});
    check_dims(l, {{1, false, 0}});
    CHECK(l.numel == 1);
    CHECK(l.per_tensor());
    const auto scalar = make_qparam_layout({}, {});
    check_dims(scalar, {{1, false, 0}});
    CHECK(scalar.numel == 1);
    CHECK(scalar.qnumel == 1);
  }
}

TEST_CASE("make_qparam_layout visits the same qparam as the direct formula", "[formats][layout]") {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> rank_d(1, 4);
  std::uniform_int_distribution<int> pick(0, 3);
  const int64_t sizes[] = {1, 2, 3, 4, 6, 8, 12};
  std::uniform_int_distribution<size_t> size_d(0, std::size(sizes) - 1);
  for (int t = 0; t < 400; ++t) {
    const int rank = rank_d(rng);
    Sizes x(rank), q(rank);
    for (int d = 0; d < rank; ++d) {
      x[d] = sizes[size_d(rng)];
      // 1 (shared), x (per index) or a proper divisor (blocks).
      std::vector<int64_t> divisors;
      for (int64_t v = 1; v <= x[d]; ++v) {
        if (x[d] % v == 0) divisors.push_back(v);
      }
      const int p = pick(rng);
      q[d] = p == 0 ? 1 : (p == 1 ? x[d] : divisors[rng() % divisors.size()]);
    }
    REQUIRE(qparam_shape_error(x, q).empty());
    const auto l = make_qparam_layout(x, q);
    INFO("trial " << t);
    REQUIRE(l.numel == numel_of(x));
    REQUIRE(l.qnumel == numel_of(q));
    REQUIRE_FALSE(l.dims.empty());
    int64_t canon = 1;
    for (size_t i = 0; i < l.dims.size(); ++i) {
      canon *= l.dims[i].size;
      // Neighbours of the same kind are merged, and Broadcast dims have no stride.
      if (i > 0) REQUIRE(l.dims[i].full != l.dims[i - 1].full);
      if (!l.dims[i].full) REQUIRE(l.dims[i].qstride == 0);
    }
    REQUIRE(canon == l.numel);
    REQUIRE(layout_qindex(l) == coreai_opt::test::qindex(x, q));
  }
}

TEST_CASE("qparam_shape_error names the offending dimension", "[formats][layout]") {
  CHECK(qparam_shape_error({4, 6}, {1, 1}).empty());
  CHECK(qparam_shape_error({4, 6}, {4, 3}).empty());
  CHECK(qparam_shape_error({4, 6}, {2, 6}).empty());
  CHECK(qparam_shape_error({0, 6}, {0, 1}).empty());
  CHECK(qparam_shape_error({}, {}).empty());

  CHECK(qparam_shape_error({4, 6, 2}, {4, 6}) == "it has 2 dimensions but the input has 3");
  CHECK(qparam_shape_error({4, 6}, {1, 4}) ==
        "dimension 1 has 4 entries, which is neither 1, the input's size 6, nor a divisor of it");
  CHECK_THAT(qparam_shape_error({4, 6}, {3, 1}), Contains("dimension 0 has 3 entries"));
  // Zero or negative entries are never valid for a non-empty dimension.
  CHECK_THAT(qparam_shape_error({4, 6}, {4, 0}), Contains("dimension 1 has 0 entries"));
  CHECK_THAT(qparam_shape_error({4, 6}, {-2, 6}), Contains("dimension 0 has -2 entries"));
  // More qparams than elements along a dimension.
  CHECK_THAT(qparam_shape_error({4, 6}, {8, 6}), Contains("dimension 0 has 8 entries"));
}

TEST_CASE("qparam_sizes_from_blocks", "[formats][layout]") {
  Sizes q;
  CHECK(qparam_sizes_from_blocks({8, 64}, {4, 16}, q).empty());
  CHECK(q == Sizes{2, 4});
  CHECK(qparam_sizes_from_blocks({8, 64}, {8, 64}, q).empty());  // reduce everything
  CHECK(q == Sizes{1, 1});
  CHECK(qparam_sizes_from_blocks({8, 64}, {1, 1}, q).empty());  // keep everything
  CHECK(q == Sizes{8, 64});
  CHECK(qparam_sizes_from_blocks({8, 64}, {1, 32}, q).empty());
  CHECK(q == Sizes{8, 2});
  CHECK(qparam_sizes_from_blocks({0, 64}, {1, 64}, q).empty());  // empty dims stay empty
  CHECK(q == Sizes{0, 1});
  // The result is a valid qparam shape for the input.
  CHECK(qparam_sizes_from_blocks({6, 10, 4}, {3, 10, 2}, q).empty());
  CHECK(qparam_shape_error({6, 10, 4}, q).empty());

  CHECK(qparam_sizes_from_blocks({8, 64}, {4}, q) ==
        "block_size has 1 entries but the input has 2 dimensions");
  CHECK(qparam_sizes_from_blocks({8, 64}, {4, 0}, q) ==
        "block_size[1] is 0; block sizes must be positive");
  CHECK(qparam_sizes_from_blocks({8, 64}, {-1, 64}, q) ==
        "block_size[0] is -1; block sizes must be positive");
  CHECK(qparam_sizes_from_blocks({8, 64}, {3, 64}, q) ==
        "block_size[0] = 3 does not divide the input's dimension 0 of size 8");
  CHECK(qparam_sizes_from_blocks({8, 64}, {8, 128}, q) ==
        "block_size[1] = 128 does not divide the input's dimension 1 of size 64");
}
