// CPU channel_scale_shift and its backward, called through the dispatcher, against scalar
// loops written here: the forward bit for bit (product rounded before the sum), the per-channel
// sums within float rounding, in the planes form (NCHW), the rows form (channels_last) and
// with no shift.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

namespace {

using ForwardFn = at::Tensor(const at::Tensor&, const at::Tensor&,
                             const std::optional<at::Tensor>&);
using BackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&,
                                                                  const at::Tensor&,
                                                                  const at::Tensor&);

at::Tensor call_forward(const at::Tensor& x, const at::Tensor& scale,
                        const std::optional<at::Tensor>& shift) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("coreai_opt::channel_scale_shift", "")
                             .typed<ForwardFn>();
  return op.call(x, scale, shift);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_backward(const at::Tensor& g,
                                                             const at::Tensor& x,
                                                             const at::Tensor& scale) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("coreai_opt::channel_scale_shift_backward", "")
                             .typed<BackwardFn>();
  return op.call(g, x, scale);
}

// Element (n, c, h, w) of a 4-D float tensor, whatever its strides.
float at4(const at::Tensor& t, int64_t n, int64_t c, int64_t h, int64_t w) {
  return t.const_data_ptr<float>()[n * t.stride(0) + c * t.stride(1) + h * t.stride(2) +
                                   w * t.stride(3)];
}

void check_case(const at::Tensor& x, bool with_shift) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const at::Tensor scale = at::rand({C}) + 0.25;
  const at::Tensor shift = at::randn({C});
  const at::Tensor g = at::randn(x.sizes());
  const at::Tensor y =
      call_forward(x, scale, with_shift ? std::optional<at::Tensor>(shift) : std::nullopt);
  REQUIRE(y.strides() == x.strides());
  auto [gx, gscale, gshift] = call_backward(g, x, scale);
  const float* s = scale.const_data_ptr<float>();
  const float* b = shift.const_data_ptr<float>();
  std::vector<double> want_gs(C, 0.0), want_gb(C, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t w = 0; w < W; ++w) {
          const float xv = at4(x, n, c, h, w), gv = at4(g, n, c, h, w);
          const float prod = xv * s[c];
          REQUIRE(at4(y, n, c, h, w) == (with_shift ? prod + b[c] : prod));
          REQUIRE(at4(gx, n, c, h, w) == gv * s[c]);
          want_gs[c] += static_cast<double>(gv) * xv;
          want_gb[c] += gv;
        }
      }
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    REQUIRE(gscale.const_data_ptr<float>()[c] == Approx(want_gs[c]).epsilon(1e-5).margin(1e-4));
    REQUIRE(gshift.const_data_ptr<float>()[c] == Approx(want_gb[c]).epsilon(1e-5).margin(1e-4));
  }
}

}  // namespace

TEST_CASE("channel_scale_shift: NCHW planes with vector tails", "[channel]") {
  at::manual_seed(3);
  check_case(at::randn({3, 5, 7, 9}), true);
  check_case(at::randn({3, 5, 7, 9}), false);
}

TEST_CASE("channel_scale_shift: planes longer than one flush, split over threads", "[channel]") {
  at::manual_seed(4);
  check_case(at::randn({4, 6, 64, 64}), true);
}

TEST_CASE("channel_scale_shift: channels_last rows", "[channel]") {
  at::manual_seed(5);
  check_case(at::randn({4, 37, 3, 5}).contiguous(at::MemoryFormat::ChannelsLast), true);
  check_case(at::randn({2, 16, 20, 20}).contiguous(at::MemoryFormat::ChannelsLast), false);
}
