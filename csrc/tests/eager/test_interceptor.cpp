// The eager interceptor without Python: scope bookkeeping, module frames and one
// intercepted op whose output goes through a native fake-quantizer slot.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "eager/frames.h"
#include "eager/frames_c_api.h"
#include "eager/interceptor.h"
#include "eager/key.h"
#include "eager/program.h"
#include "eager/scope.h"

namespace {

namespace eager = coreai_opt::eager;
using eager::kInterceptKey;

bool included() { return c10::impl::tls_is_dispatch_key_included(kInterceptKey); }
bool excluded() { return c10::impl::tls_is_dispatch_key_excluded(kInterceptKey); }

// Base ids the Python registry would assign; any small distinct numbers do here.
constexpr int64_t kMulId = 1;
constexpr int64_t kMatmulId = 2;

// A per-tensor int8 symmetric slot with a fixed range [-1, 1] (scale 1/127.5).
int64_t add_fixed_int8_slot(eager::EagerProgram& program) {
  const auto f = at::TensorOptions().dtype(at::kFloat);
  const auto u8 = at::TensorOptions().dtype(at::kByte);
  std::vector<at::Tensor> state = {
      at::ones({1}, u8),                                       // observer_on
      at::zeros({1}, u8),                                      // observer_off
      at::ones({1}, u8),                                       // fake_quant_on
      at::zeros({1, 1}, f),                                    // running_min
      at::zeros({1, 1}, f),                                    // running_max
      at::ones({1, 1}, f),                                     // scale
      at::zeros({1, 1}, at::TensorOptions().dtype(at::kInt)),  // zero_point
      at::zeros({1, 1}, f)};                                   // minval
  const double nan = std::numeric_limits<double>::quiet_NaN();
  return program.add_native_slot(state, {-1, -1}, at::kChar, -128, 127, /*symmetric=*/true,
                                 /*use_minval=*/false, /*e8m0=*/false, /*export_mode=*/false,
                                 "static", 0.01, {-1.0, 1.0, nan, nan, nan, nan},
                                 /*python_id=*/-1);
}

at::Tensor expected_int8(const at::Tensor& y) {
  // Symmetric int8: scale = max(-min, max) / ((qmax - qmin) / 2) = 1 / 127.5.
  const double scale = 1.0 / 127.5;
  return (at::clamp(at::round(y / scale), -128, 127) * scale).to(at::kFloat);
}

}  // namespace

TEST_CASE("the intercept key is off by default and the scope restores it exactly", "[eager]") {
  REQUIRE_FALSE(included());
  REQUIRE(excluded());  // autocast keys sit in the default exclude set
  eager::open_scope();
  CHECK(included());
  CHECK_FALSE(excluded());
  eager::open_scope();
  CHECK(eager::scope_depth() == 2);
  eager::close_scope();
  CHECK(included());
  eager::close_scope();
  CHECK(eager::scope_depth() == 0);
  CHECK_FALSE(included());
  CHECK(excluded());
  CHECK_THROWS(eager::close_scope());
}

TEST_CASE("module frames pop in order and open the scope", "[eager]") {
  eager::EagerProgram program;
  program.push_frame(0);
  program.push_frame(3);
  CHECK(eager::frame_depth() == 2);
  CHECK(eager::scope_depth() == 2);
  CHECK_THROWS(program.pop_frame(0));  // 3 is innermost
  program.pop_frame(3);
  program.pop_frame(0);
  CHECK(eager::frame_depth() == 0);
  CHECK_FALSE(included());
  CHECK(&eager::EagerProgram::from_handle(program.handle()) == &program);
  CHECK_THROWS(eager::EagerProgram::from_handle(-5));
}

TEST_CASE("the C frame calls return 1 on a failed check and change nothing", "[eager]") {
  eager::EagerProgram program;
  const int64_t h = program.handle();
  CHECK(coreai_opt_eager_push_frame(-5, 0) == 1);  // no such program
  CHECK(eager::frame_depth() == 0);
  CHECK(eager::scope_depth() == 0);
  CHECK(coreai_opt_eager_pop_frame(h, 0) == 1);  // empty stack
  REQUIRE(coreai_opt_eager_push_frame(h, 0) == 0);
  REQUIRE(coreai_opt_eager_push_frame(h, 3) == 0);
  CHECK(included());
  CHECK(coreai_opt_eager_pop_frame(h, 0) == 1);  // 3 is innermost
  CHECK(eager::frame_depth() == 2);
  CHECK(eager::scope_depth() == 2);
  CHECK(coreai_opt_eager_pop_frame(h, 3) == 0);
  CHECK(coreai_opt_eager_pop_frame(h, 0) == 0);
  CHECK(eager::frame_depth() == 0);
  CHECK_FALSE(included());
}

TEST_CASE("an intercepted op's output goes through its slot, counted per module call", "[eager]") {
  eager::register_op("aten::mul", "Tensor", kMulId, /*pass_through=*/false);
  eager::register_op("aten::matmul", "", kMatmulId, false);
  eager::register_op("aten::scaled_dot_product_attention", "", 0, /*pass_through=*/true);
  eager::EagerProgram program;
  const int64_t slot = add_fixed_int8_slot(program);
  // Module 0: the second mul (call index 1) and the first matmul get an output slot.
  program.set_op_policy(0, kMulId, 1, {}, {}, {}, {0}, {slot});
  program.set_op_policy(0, kMatmulId, 0, {}, {}, {}, {0}, {slot});

  const auto a = at::linspace(-2.0, 2.0, 12).reshape({3, 4});
  const auto b = at::full({3, 4}, 0.3);
  const auto plain = a * b;
  program.push_frame(0);
  const auto first = a * b;   // mul, call 0: no policy
  const auto second = a * b;  // mul, call 1: output fake-quantized
  // The attention container's insides (matmul, softmax, ...) are not counted, so the next
  // matmul is still call 0 of this frame.
  const auto q = at::randn({1, 2, 4, 8});
  at::scaled_dot_product_attention(q, q, q);
  const auto m = at::matmul(a, b.t());
  program.pop_frame(0);

  CHECK(at::equal(first, plain));
  CHECK(at::equal(second, expected_int8(plain)));
  CHECK(at::equal(m, expected_int8(at::matmul(a, b.t()))));
  // Outside every frame the op runs untouched.
  CHECK(at::equal(a * b, plain));
  CHECK_FALSE(included());
}

TEST_CASE("an in-place op keeps writing into its first argument", "[eager]") {
  eager::register_op("aten::mul_", "Tensor", kMulId + 10, false);
  eager::EagerProgram program;
  const int64_t slot = add_fixed_int8_slot(program);
  program.set_op_policy(0, kMulId + 10, 0, {}, {}, {}, {0}, {slot});
  auto x = at::linspace(-2.0, 2.0, 8).reshape({2, 4});
  const auto expected = expected_int8(x * 0.3);
  program.push_frame(0);
  auto& returned = x.mul_(at::full({2, 4}, 0.3));
  program.pop_frame(0);
  CHECK(returned.is_same(x));
  CHECK(at::equal(x, expected));
}
