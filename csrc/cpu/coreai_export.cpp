// CPU kernels of the coreai_export family: the shared argument check, then one parallel loop
// per op. Their results must equal coreai-torch's ATen-op formulas bit for bit, in every
// dtype those formulas run in, so the arithmetic is spelled with c10's scalar types: a
// c10::Half / c10::BFloat16 operation computes in float32 and rounds back after every step,
// exactly as torch's CPU kernels do. Finalize calls these once per tensor, so the loops are
// plain (no per-ISA builds); an element's qparam index costs no division inside a row.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Float8_e4m3fn.h>
#include <c10/util/Float8_e5m2.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/pack_codes.h"
#include "cpu/qparam_buffer.h"
#include "formats/float_format.h"
#include "formats/int_range.h"
#include "ops/checks.h"
#include "ops/schemas.h"

namespace coreai_opt::cpu {

namespace {

constexpr int64_t kGrain = 32768;

// Calls fn(type_tag) with a value of the C++ type of a float dtype (the dtype was checked).
template <typename F>
void with_float_type(at::ScalarType st, const F& fn) {
  switch (st) {
    case at::kFloat:
      fn(float{});
      return;
    case at::kDouble:
      fn(double{});
      return;
    case at::kHalf:
      fn(c10::Half{});
      return;
    case at::kBFloat16:
      fn(c10::BFloat16{});
      return;
    default:
      TORCH_INTERNAL_ASSERT(false, "coreai_export: unchecked dtype ", st);
  }
}

// Calls fn(i, q) for every element i of a row-major tensor of the layout's shape, q being its
// qparam index, in parallel. Elements along the innermost canonical dimension share a qparam
// (or advance one per element), so only the start of each piece decomposes its index.
template <typename Fn>
void for_each_element(const formats::QParamLayout& layout, const Fn& fn) {
  const auto& dims = layout.dims;
  const int64_t inner = layout.inner_size();
  const bool inner_full = layout.inner_full();
  at::parallel_for(0, layout.numel, kGrain, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    while (i < end) {
      int64_t row = i / inner;
      const int64_t col = i % inner;
      int64_t base = 0;
      for (int64_t d = static_cast<int64_t>(dims.size()) - 2; d >= 0; --d) {
        base += (row % dims[d].size) * dims[d].qstride;
        row /= dims[d].size;
      }
      const int64_t len = std::min(inner - col, end - i);
      if (inner_full) {
        for (int64_t k = 0; k < len; ++k) fn(i + k, base + col + k);
      } else {
        for (int64_t k = 0; k < len; ++k) fn(i + k, base);
      }
      i += len;
    }
  });
}

// ---- quantize -----------------------------------------------------------------------------

// Float formats: v = clamp(float32(x) / float32(s), -max, max), rounded to nearest even.
// FP8 codes are stored as they are; FP4 codes are packed two a byte, even index low.
void quantize_float(const at::Tensor& xc, const at::Tensor& scale, const ops::QuantizeCheck& c,
                    const at::Tensor& out) {
  const auto& layout = *c.layout;
  const auto sbuf = QParamBuffer::of(scale);  // float32 values; E8M0 codes decoded
  const float* s = sbuf.data();
  const auto info = formats::float_format_info(c.format.float_format);
  const float mx = info.max_value;
  const bool fp4 = ops::is_fp4(c.format);
  auto* y = static_cast<uint8_t*>(out.mutable_data_ptr());
  std::vector<uint8_t> codes(fp4 ? static_cast<size_t>(layout.numel) : 0);
  uint8_t* dst = fp4 ? codes.data() : y;
  std::atomic<bool> nan{false};
  with_float_type(xc.scalar_type(), [&](auto tag) {
    using X = decltype(tag);
    const X* x = xc.const_data_ptr<X>();
    for_each_element(layout, [&](int64_t i, int64_t q) {
      // float32 first, also for float64 input: the quotient upstream computes.
      float t = static_cast<float>(x[i]) / s[q];
      t = t > mx ? mx : (t < -mx ? -mx : t);  // NaN passes (FP8 encodes it)
      if (fp4 && t != t) nan.store(true, std::memory_order_relaxed);
      dst[i] = static_cast<uint8_t>(formats::encode_float_format(t, info));
    });
  });
  if (!fp4) return;
  TORCH_CHECK_VALUE(!nan.load(), "coreai_opt.quantize: FP4 has no NaN code, and input / scale is ",
                    "NaN somewhere");
  // A second pass: the element walk may split a byte's two codes between threads.
  pack_codes(
      layout.numel / 2, 4, [&](int64_t j) { return codes[j]; }, y);
}

// Integer formats in the compute dtype C = promote_types(input, scale), input - minval in
// the input's dtype X: q = clamp(round(t) + offset, qmin, qmax). Adding the integer offset
// and clamping in double gives the same code as in C: with an offset inside the format's
// range, round(t) + offset is an integer exact in C (even bfloat16) unless it lies beyond
// +-256, where any rounding still clamps alike.
template <typename Out>
void quantize_int(const at::Tensor& xc, const at::Tensor& scale,
                  const std::optional<at::Tensor>& zero_point,
                  const std::optional<at::Tensor>& minval, const ops::QuantizeCheck& c,
                  const at::Tensor& out) {
  const auto& layout = *c.layout;
  const auto r = formats::int_range(c.format.bits, c.format.is_signed, false);
  const double qmin = r.qmin;
  const double qmax = r.qmax;
  const auto sc = scale.to(c.compute_dtype).contiguous();  // exact: C holds every scale value
  const auto zc = zero_point.has_value() ? zero_point->to(at::kLong).contiguous() : at::Tensor();
  const auto mc = minval.has_value() ? minval->contiguous() : at::Tensor();
  const int64_t* zp = zc.defined() ? zc.const_data_ptr<int64_t>() : nullptr;
  const double constant_offset = mc.defined() ? qmin : 0.0;
  Out* y = out.mutable_data_ptr<Out>();
  with_float_type(xc.scalar_type(), [&](auto x_tag) {
    using X = decltype(x_tag);
    with_float_type(c.compute_dtype, [&](auto c_tag) {
      using C = decltype(c_tag);
      const X* x = xc.const_data_ptr<X>();
      const X* m = mc.defined() ? mc.const_data_ptr<X>() : nullptr;
      const C* s = sc.const_data_ptr<C>();
      for_each_element(layout, [&](int64_t i, int64_t q) {
        X v = x[i];
        if (m != nullptr) v = static_cast<X>(v - m[q]);
        const C t = static_cast<C>(v) / s[q];
        double code = std::nearbyint(static_cast<double>(t)) +
                      (zp != nullptr ? static_cast<double>(zp[q]) : constant_offset);
        // NaN becomes code 0, as torch's float -> integer conversion gives.
        code = code != code ? 0.0 : std::min(std::max(code, qmin), qmax);
        y[i] = static_cast<Out>(static_cast<int32_t>(code));
      });
    });
  });
}

at::Tensor quantize(const at::Tensor& input, const at::Tensor& scale, c10::ScalarType output_dtype,
                    const std::optional<at::Tensor>& zero_point,
                    const std::optional<at::Tensor>& minval, c10::SymInt axis) {
  const auto c = ops::check_quantize(input, scale, output_dtype, zero_point, minval, axis);
  auto out =
      at::empty(c10::asIntArrayRefUnchecked(c.out_sizes), input.options().dtype(c.out_dtype));
  if (c.layout->numel == 0) return out;
  const auto xc = input.contiguous();
  if (c.format.is_float) {
    quantize_float(xc, scale, c, out);
  } else if (c.out_dtype == at::kChar) {
    quantize_int<int8_t>(xc, scale, zero_point, minval, c, out);
  } else {
    quantize_int<uint8_t>(xc, scale, zero_point, minval, c, out);
  }
  return out;
}

// ---- dequantize / blockwise_shift_scale ---------------------------------------------------

// Integer codes in the scale's dtype S, every operation rounded to S as upstream's ATen ops
// round: (q - zp) * s  |  (q - qmin) * s + minval  |  q * s (q - zp and q - qmin are exact
// small integers). Float codes: S(float32(q) * float32(s)). Then cast to the result dtype O.
// E8M0 scales: O(float32(q) * s).
at::Tensor run_dequantize(const at::Tensor& input, const at::Tensor& scale,
                          const std::optional<at::Tensor>& zero_point,
                          const std::optional<at::Tensor>& minval, const ops::DequantizeCheck& c) {
  auto out =
      at::empty(c10::asIntArrayRefUnchecked(c.out_sizes), input.options().dtype(c.out_dtype));
  const auto& layout = *c.layout;
  if (layout.numel == 0) return out;
  const auto& fmt = c.format;
  const auto codes = input.contiguous();
  const auto* bytes = static_cast<const uint8_t*>(codes.const_data_ptr());
  const bool fp4 = ops::is_fp4(fmt);
  // Code -> value. FP8 decodes through c10's own conversion, which equals
  // formats::decode_float_format on every finite code and also gives torch's NaN payloads,
  // which a bit-for-bit comparison with upstream sees.
  std::array<float, 256> lut{};
  if (fmt.is_float) {
    const auto info = formats::float_format_info(fmt.float_format);
    for (uint32_t k = 0; k < (1u << info.bits); ++k) {
      const auto b = static_cast<uint8_t>(k);
      switch (fmt.float_format) {
        case formats::FloatFormat::E4M3FN:
          lut[k] = static_cast<float>(c10::Float8_e4m3fn(b, c10::Float8_e4m3fn::from_bits()));
          break;
        case formats::FloatFormat::E5M2:
          lut[k] = static_cast<float>(c10::Float8_e5m2(b, c10::Float8_e5m2::from_bits()));
          break;
        default:
          lut[k] = formats::decode_float_format(k, info);
      }
    }
  }
  const auto float_code = [&](int64_t i) -> float {
    return fp4 ? lut[(bytes[i >> 1] >> ((i & 1) * 4)) & 0xF] : lut[bytes[i]];
  };
  const bool signed_codes = codes.scalar_type() == at::kChar;
  const auto int_code = [&](int64_t i) -> int32_t {
    return signed_codes ? static_cast<int32_t>(static_cast<int8_t>(bytes[i]))
                        : static_cast<int32_t>(bytes[i]);
  };

  if (c.e8m0) {
    const auto sbuf = QParamBuffer::of(scale);
    const float* s = sbuf.data();
    with_float_type(c.out_dtype, [&](auto o_tag) {
      using O = decltype(o_tag);
      O* y = out.mutable_data_ptr<O>();
      for_each_element(layout,
                       [&](int64_t i, int64_t q) { y[i] = static_cast<O>(float_code(i) * s[q]); });
    });
    return out;
  }

  const auto sc = scale.contiguous();
  const auto zc = zero_point.has_value() ? zero_point->to(at::kInt).contiguous() : at::Tensor();
  const auto mc = minval.has_value() ? minval->contiguous() : at::Tensor();
  const int32_t* zp = zc.defined() ? zc.const_data_ptr<int32_t>() : nullptr;
  const int32_t qmin = formats::int_range(fmt.bits, fmt.is_signed, false).qmin;
  with_float_type(scale.scalar_type(), [&](auto s_tag) {
    using S = decltype(s_tag);
    with_float_type(c.out_dtype, [&](auto o_tag) {
      using O = decltype(o_tag);
      const S* s = sc.const_data_ptr<S>();
      const S* m = mc.defined() ? mc.const_data_ptr<S>() : nullptr;
      O* y = out.mutable_data_ptr<O>();
      if (fmt.is_float) {
        // Float codes multiply in float32 whatever S is (float64 included), as upstream.
        for_each_element(layout, [&](int64_t i, int64_t q) {
          y[i] = static_cast<O>(static_cast<S>(float_code(i) * static_cast<float>(s[q])));
        });
      } else if (zp != nullptr) {
        for_each_element(layout, [&](int64_t i, int64_t q) {
          y[i] = static_cast<O>(static_cast<S>(static_cast<S>(int_code(i) - zp[q]) * s[q]));
        });
      } else if (m != nullptr) {
        for_each_element(layout, [&](int64_t i, int64_t q) {
          const S scaled = static_cast<S>(static_cast<S>(int_code(i) - qmin) * s[q]);
          y[i] = static_cast<O>(static_cast<S>(scaled + m[q]));
        });
      } else {
        for_each_element(layout, [&](int64_t i, int64_t q) {
          y[i] = static_cast<O>(static_cast<S>(static_cast<S>(int_code(i)) * s[q]));
        });
      }
    });
  });
  return out;
}

at::Tensor dequantize(const at::Tensor& input, const at::Tensor& scale,
                      const std::optional<at::Tensor>& zero_point,
                      const std::optional<at::Tensor>& minval, c10::SymInt axis,
                      std::optional<c10::ScalarType> input_dtype,
                      std::optional<c10::ScalarType> output_dtype) {
  const auto c =
      ops::check_dequantize(input, scale, zero_point, minval, axis, input_dtype, output_dtype);
  return run_dequantize(input, scale, zero_point, minval, c);
}

at::Tensor blockwise_shift_scale(const at::Tensor& input, const at::Tensor& scale,
                                 const std::optional<at::Tensor>& zero_point,
                                 const std::optional<at::Tensor>& minval,
                                 std::optional<c10::ScalarType> input_dtype,
                                 std::optional<c10::ScalarType> output_dtype) {
  const auto c =
      ops::check_blockwise_shift_scale(input, scale, zero_point, minval, input_dtype, output_dtype);
  return run_dequantize(input, scale, zero_point, minval, c);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, CPU, m) { COREAI_OPT_COREAI_EXPORT_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::cpu
