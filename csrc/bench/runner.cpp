// The torch side of coreai_opt_bench: each case's tensors, our op through the dispatcher, the
// closest ATen op called from C++, and an in-process copy_ of the input, timed in interleaved
// rounds.
//
// Our ops are reached only through c10::Dispatcher (findSchemaOrThrow + typed call), as any
// C++ user of the library would call them: the timings include the dispatcher and the Autograd
// key, like the Python benchmark's. Qparams are computed once, before timing, with our own
// minmax / choose_qparams ops, so both contenders quantize with the same scales.
//
// This file includes no fmt (see fmt.h): torch's include dirs carry their own fmt.
#include "bench/runner.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#ifdef FMT_VERSION
#error "runner.cpp sees torch's include dirs, so it must not use fmt (see bench/fmt.h)"
#endif

namespace coreai_opt::bench {

namespace {

using MinMaxFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, c10::SymIntArrayRef);
using QParamsIntFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&,
                                                                    const at::Tensor&, int64_t,
                                                                    int64_t, bool,
                                                                    std::optional<double>,
                                                                    std::optional<double>);
using QParamsFloatFn = at::Tensor(const at::Tensor&, const at::Tensor&, c10::ScalarType, bool,
                                  std::optional<double>, std::optional<double>);
using FqIntFn = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, int64_t, int64_t);
using FqFloatFn = at::Tensor(const at::Tensor&, const at::Tensor&, c10::ScalarType);
// The state arguments are Tensor(a!) in the schema but const at::Tensor& here: the typed call
// must spell the signature the kernels were registered with (csrc/cpu/fused.cpp).
using FusedFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef,
                           c10::ScalarType, int64_t, int64_t, bool, bool, bool, c10::string_view,
                           double, std::optional<double>, std::optional<double>);
using IsaFn = std::string();

template <typename Fn>
c10::TypedOperatorHandle<Fn> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

c10::ScalarType input_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  throw std::logic_error("input_dtype: unvalidated dtype " + name);
}

// Case-file format names are torch's dtype names (cases.cpp validates them).
c10::ScalarType format_dtype(const std::string& name) {
  using ST = c10::ScalarType;
  if (name == "int8") return ST::Char;
  if (name == "uint8") return ST::Byte;
  if (name == "int4") return ST::Int4;
  if (name == "uint4") return ST::UInt4;
  if (name == "int2") return ST::Int2;
  if (name == "uint2") return ST::UInt2;
  if (name == "float8_e4m3fn") return ST::Float8_e4m3fn;
  if (name == "float8_e5m2") return ST::Float8_e5m2;
  if (name == "float4_e2m1fn_x2") return ST::Float4_e2m1fn_x2;
  throw std::logic_error("format_dtype: unvalidated format " + name);
}

// The first line of a c10::Error (the rest is a C++ stack or a source location).
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// Median and minimum per call of each function over `repeats` rounds, after warm-up rounds.
// Each round calls every contender once, in an order rotated from round to round, so a slow
// stretch of a shared machine lands on all of them alike (as benchmarks/ops_cpu.py does).
std::vector<Timing> time_interleaved(const std::vector<std::function<void()>>& fns, int64_t repeats,
                                     const std::function<void()>& sync) {
  const int64_t warmup = std::min<int64_t>(3, repeats);
  for (int64_t r = 0; r < warmup; ++r) {
    for (const auto& fn : fns) fn();
  }
  sync();
  const size_t n = fns.size();
  std::vector<std::vector<double>> samples(n);
  for (int64_t r = 0; r < repeats; ++r) {
    for (size_t k = 0; k < n; ++k) {
      const size_t i = (k + static_cast<size_t>(r)) % n;
      const auto t0 = std::chrono::steady_clock::now();
      fns[i]();
      sync();
      const auto t1 = std::chrono::steady_clock::now();
      samples[i].push_back(std::chrono::duration<double>(t1 - t0).count());
    }
  }
  std::vector<Timing> out;
  for (auto& s : samples) {
    std::sort(s.begin(), s.end());
    const size_t m = s.size();
    const double median = m % 2 == 1 ? s[m / 2] : 0.5 * (s[m / 2 - 1] + s[m / 2]);
    out.push_back(Timing{median, s.front()});
  }
  return out;
}

// The contenders of one case: ours always, ATen where it has a counterpart.
struct Contenders {
  std::function<void()> ours;
  std::function<void()> aten;  // empty: no counterpart (aten_note says why)
  std::string aten_note;
};

Contenders fake_quantize_int(const BenchCase& c, const at::Tensor& x, const at::Tensor& lo,
                             const at::Tensor& hi) {
  static const auto qparams = find_op<QParamsIntFn>("coreai_opt::choose_qparams_int");
  static const auto fq = find_op<FqIntFn>("coreai_opt::fake_quantize_int");
  auto [s, zp, minval] =
      qparams.call(lo, hi, c.quant_min, c.quant_max, c.symmetric, std::nullopt, std::nullopt);
  // Float32 scales, as FakeQuantize stores them and as ATen requires.
  s = s.to(at::kFloat);
  const int64_t qmin = c.quant_min;
  const int64_t qmax = c.quant_max;
  Contenders out;
  out.ours = [x, s, zp, qmin, qmax] { fq.call(x, s, zp, std::nullopt, qmin, qmax); };
  if (c.granularity == Granularity::PerTensor) {
    const double sd = s.item<double>();
    const int64_t zd = zp.item<int64_t>();
    out.aten = [x, sd, zd, qmin, qmax] {
      at::fake_quantize_per_tensor_affine(x, sd, zd, qmin, qmax);
    };
  } else if (c.granularity == Granularity::PerChannel) {
    const at::Tensor s1 = s.flatten();
    const at::Tensor z1 = zp.flatten();
    const int64_t axis = c.axis;
    out.aten = [x, s1, z1, axis, qmin, qmax] {
      at::fake_quantize_per_channel_affine(x, s1, z1, axis, qmin, qmax);
    };
  } else {
    out.aten_note = "ATen has no per-block fake-quantize";
  }
  return out;
}

Contenders fake_quantize_float(const BenchCase& c, const at::Tensor& x, const at::Tensor& lo,
                               const at::Tensor& hi) {
  static const auto qparams = find_op<QParamsFloatFn>("coreai_opt::choose_qparams_float");
  static const auto fq = find_op<FqFloatFn>("coreai_opt::fake_quantize_float");
  const auto fmt = format_dtype(c.format);
  at::Tensor s = qparams.call(lo, hi, fmt, c.e8m0, std::nullopt, std::nullopt);
  // E8M0 scales are passed as float8_e8m0fnu, the MX storage the kernels decode from bits.
  s = s.to(c.e8m0 ? at::kFloat8_e8m0fnu : at::kFloat);
  Contenders out;
  out.ours = [x, s, fmt] { fq.call(x, s, fmt); };
  out.aten_note = "ATen has no " + c.format + " fake-quantize";
  return out;
}

Contenders fused(const BenchCase& c, const at::Tensor& x) {
  static const auto op = find_op<FusedFn>("coreai_opt::fused_fake_quantize");
  const auto block = c.block_size();
  std::vector<int64_t> qshape;
  for (size_t d = 0; d < block.size(); ++d) qshape.push_back(c.shape[d] / block[d]);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(x.device());
  const double inf = std::numeric_limits<double>::infinity();
  // The running state persists across calls, as in training: after the first call every call
  // takes the moving-average path.
  at::Tensor rmin = at::full(qshape, inf, f32);
  at::Tensor rmax = at::full(qshape, -inf, f32);
  at::Tensor scale = at::ones(qshape, f32);
  at::Tensor zp = at::zeros(qshape, f32.dtype(at::kInt));
  at::Tensor minval = at::zeros(qshape, f32);
  const at::Tensor on = at::ones({1}, f32.dtype(at::kByte));
  const auto fmt = format_dtype(c.format);
  const int64_t qmin = c.quant_min;
  const int64_t qmax = c.quant_max;
  const bool symmetric = c.symmetric;
  const bool e8m0 = c.e8m0;
  Contenders out;
  out.ours = [=]() mutable {
    op.call(x, on, on, rmin, rmax, scale, zp, minval, c10::fromIntArrayRefSlow(block), fmt, qmin,
            qmax, symmetric, /*use_minval=*/false, e8m0, "moving_average", 0.01, std::nullopt,
            std::nullopt);
  };
  if (c.is_float_format) {
    out.aten_note = "ATen has no " + c.format + " fake-quantize";
    return out;
  }
  if (c.granularity == Granularity::PerBlock) {
    out.aten_note = "ATen has no per-block fake-quantize";
    return out;
  }
  // ATen keeps per-tensor state as 0-d ranges and one-element qparams, per-channel state as
  // vectors of the channel count.
  const bool per_row = c.granularity == Granularity::PerChannel;
  const std::vector<int64_t> ashape =
      per_row ? std::vector<int64_t>{c.shape[c.axis]} : std::vector<int64_t>{};
  const std::vector<int64_t> qpshape = per_row ? ashape : std::vector<int64_t>{1};
  at::Tensor a_rmin = at::full(ashape, inf, f32);
  at::Tensor a_rmax = at::full(ashape, -inf, f32);
  at::Tensor a_scale = at::ones(qpshape, f32);
  at::Tensor a_zp = at::zeros(qpshape, f32.dtype(at::kInt));
  const int64_t axis = per_row ? c.axis : 0;
  out.aten = [=]() mutable {
    at::fused_moving_avg_obs_fake_quant(x, on, on, a_rmin, a_rmax, a_scale, a_zp, 0.01, qmin, qmax,
                                        axis, per_row, symmetric);
  };
  return out;
}

CaseResult run_case_unchecked(const BenchCase& c) {
  const at::Device device(c.device);
  const auto opts = at::TensorOptions().dtype(input_dtype(c.dtype)).device(device);
  // A fixed seed: every run quantizes the same data, so the case is the same work each time.
  at::manual_seed(0);
  const at::Tensor x = at::randn(c.shape, opts);
  const at::Tensor dst = at::empty_like(x);

  static const auto minmax = find_op<MinMaxFn>("coreai_opt::minmax");
  const auto block = c.block_size();
  auto [lo, hi] = minmax.call(x, c10::fromIntArrayRefSlow(block));
  lo = lo.to(at::kFloat);
  hi = hi.to(at::kFloat);

  Contenders k;
  switch (c.op) {
    case Op::FakeQuantizeInt:
      k = fake_quantize_int(c, x, lo, hi);
      break;
    case Op::FakeQuantizeFloat:
      k = fake_quantize_float(c, x, lo, hi);
      break;
    case Op::FusedFakeQuantize:
      k = fused(c, x);
      break;
  }

  CaseResult res;
  // ATen may refuse a dtype it does not implement (it reports so with a c10::Error): the case
  // still times ours and reports why aten is "-".
  if (k.aten) {
    try {
      k.aten();
    } catch (const c10::Error& e) {
      k.aten = nullptr;
      res.aten_note = "ATen refused: " + first_line(e.what_without_backtrace());
    }
  } else {
    res.aten_note = k.aten_note;
  }

  std::vector<std::function<void()>> fns = {k.ours, [x, dst]() mutable { dst.copy_(x); }};
  if (k.aten) fns.push_back(k.aten);
  std::function<void()> sync = [] {};
  if (device.is_cuda()) {
    // Through the device-guard interface, so this file needs no CUDA headers.
    sync = [device] {
      c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)
          ->synchronizeDevice(device.has_index() ? device.index() : 0);
    };
  }
  const auto t = time_interleaved(fns, c.repeats, sync);

  const double bytes_x = static_cast<double>(c.numel() * element_size(c.dtype));
  res.bytes = (c.op == Op::FusedFakeQuantize ? 3.0 : 2.0) * bytes_x;
  res.copy_bytes = 2.0 * bytes_x;
  res.ours = t[0];
  res.copy = t[1];
  if (k.aten) res.aten = t[2];
  return res;
}

}  // namespace

Environment init_torch(int threads) {
  at::init_num_threads();
  at::set_num_threads(threads);
  Environment env;
  // The torch the library was built against (setup.py passes torch.__version__ to CMake).
  env.torch_version = COREAI_BENCH_TORCH_VERSION;
  env.kernel_isa = find_op<IsaFn>("coreai_opt::cpu_kernel_isa").call();
  env.threads = at::get_num_threads();
  return env;
}

void check_device(const BenchCase& c) {
  if (c.device == "cuda" && !at::hasCUDA()) {
    throw CaseError(c.where() + ": case '" + c.name + "'" +
                    ", key 'device': cuda is not available (torch " COREAI_BENCH_TORCH_VERSION
                    " has no CUDA device here); run the case on a CUDA machine or set device: "
                    "cpu");
  }
}

std::string bytes_note(const BenchCase& c) {
  return c.op == Op::FusedFakeQuantize ? "read x twice (observe, quantize), write y"
                                       : "read x, write y";
}

CaseResult run_case(const BenchCase& c) {
  try {
    return run_case_unchecked(c);
  } catch (const c10::Error& e) {
    // Without the C++ backtrace: the message is what the reader needs.
    throw std::runtime_error(e.what_without_backtrace());
  }
}

}  // namespace coreai_opt::bench
