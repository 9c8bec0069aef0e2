// Meta kernels: shapes, dtypes and the shape/dtype checks of every op, without data.
// SymInt-safe: shape checks run only when all sizes are concrete; with symbolic sizes the
// real kernel repeats them at run time.
#include <ATen/ops/empty.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <optional>

#include "ops/checks.h"
#include "ops/pack_shape.h"
#include "ops/schemas.h"

namespace coreai_opt::meta {

namespace {

using ops::check_float_input;
using ops::check_int_range;

bool concrete(const at::Tensor& t) { return c10::asIntArrayRefSlowOpt(t.sym_sizes()).has_value(); }

at::Tensor like(const at::Tensor& x) { return at::empty_symint(x.sym_sizes(), x.options()); }

void check_qparams(const at::Tensor& x, const at::Tensor& scale, const char* op) {
  if (concrete(x) && concrete(scale)) ops::check_qparam_shape(x, scale, op, "scale");
}

void check_offsets(const at::Tensor& scale, const std::optional<at::Tensor>& zero_point,
                   const std::optional<at::Tensor>& minval, const char* op) {
  TORCH_CHECK_VALUE(!(zero_point.has_value() && minval.has_value()), "coreai_opt.", op,
                    ": pass zero_point (zp formulation) or minval (minval formulation), "
                    "not both");
  for (const auto* t : {&zero_point, &minval}) {
    if (t->has_value() && concrete(scale) && concrete(**t)) {
      ops::check_same_shape(scale, **t, op, "scale", t == &minval ? "minval" : "zero_point");
    }
  }
}

at::Tensor fake_quantize_int(const at::Tensor& x, const at::Tensor& scale,
                             const std::optional<at::Tensor>& zero_point,
                             const std::optional<at::Tensor>& minval, int64_t quant_min,
                             int64_t quant_max) {
  const char* op = "fake_quantize_int";
  check_float_input(x, op);
  check_float_input(scale, op, "scale");
  check_int_range(quant_min, quant_max, op);
  check_qparams(x, scale, op);
  check_offsets(scale, zero_point, minval, op);
  return like(x);
}

at::Tensor fake_quantize_int_backward(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& scale,
                                      const std::optional<at::Tensor>& zero_point,
                                      const std::optional<at::Tensor>& minval, int64_t quant_min,
                                      int64_t quant_max) {
  fake_quantize_int(x, scale, zero_point, minval, quant_min, quant_max);
  return like(x);
}

at::Tensor fake_quantize_float(const at::Tensor& x, const at::Tensor& scale,
                               c10::ScalarType dtype) {
  const char* op = "fake_quantize_float";
  check_float_input(x, op);
  ops::float_format_of(dtype, op);
  check_qparams(x, scale, op);
  return like(x);
}

at::Tensor fake_quantize_float_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& scale, c10::ScalarType dtype) {
  fake_quantize_float(x, scale, dtype);
  return like(x);
}

at::Tensor fake_quantize_lsq(const at::Tensor& x, const at::Tensor& scale,
                             const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max,
                             double /*grad_factor*/) {
  const char* op = "fake_quantize_lsq";
  check_float_input(x, op);
  check_float_input(scale, op, "scale");
  check_float_input(zero_point, op, "zero_point");
  check_int_range(quant_min, quant_max, op);
  check_qparams(x, scale, op);
  return like(x);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quantize_lsq_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t quant_min, int64_t quant_max, double grad_factor) {
  fake_quantize_lsq(x, scale, zero_point, quant_min, quant_max, grad_factor);
  return {like(x), like(scale), like(zero_point)};
}

// Reduced sizes x.size(d) / block_size[d].
std::vector<c10::SymInt> reduced_sizes(const at::Tensor& x, c10::SymIntArrayRef block_size,
                                       const char* op) {
  const auto xs = x.sym_sizes();
  TORCH_CHECK_VALUE(block_size.size() == xs.size(), "coreai_opt.", op, ": block_size has ",
                    block_size.size(), " entries but the input has ", xs.size(), " dimensions");
  const auto concrete_blocks = c10::asIntArrayRefSlowOpt(block_size);
  if (concrete(x) && concrete_blocks.has_value()) ops::check_block_size(x, *concrete_blocks, op);
  std::vector<c10::SymInt> out;
  out.reserve(xs.size());
  for (size_t d = 0; d < xs.size(); ++d) out.push_back(xs[d] / block_size[d]);
  return out;
}

std::tuple<at::Tensor, at::Tensor> minmax(const at::Tensor& x, c10::SymIntArrayRef block_size) {
  check_float_input(x, "minmax");
  const auto q = reduced_sizes(x, block_size, "minmax");
  return {at::empty_symint(q, x.options()), at::empty_symint(q, x.options())};
}

void update_range(const at::Tensor& x, const at::Tensor& running_min, const at::Tensor& running_max,
                  c10::SymIntArrayRef block_size, c10::string_view method,
                  double /*averaging_constant*/) {
  check_float_input(x, "update_range");
  ops::range_method_of(method, "update_range");
  reduced_sizes(x, block_size, "update_range");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> choose_qparams_int(
    const at::Tensor& min, const at::Tensor& max, int64_t quant_min, int64_t quant_max,
    bool /*symmetric*/, std::optional<double> range_min, std::optional<double> range_max) {
  const char* op = "choose_qparams_int";
  check_float_input(min, op, "min");
  check_float_input(max, op, "max");
  check_int_range(quant_min, quant_max, op);
  ops::check_float_range(range_min, range_max, op);
  return {like(min), at::empty_symint(min.sym_sizes(), min.options().dtype(at::kInt)), like(min)};
}

at::Tensor choose_qparams_float(const at::Tensor& min, const at::Tensor& max, c10::ScalarType dtype,
                                bool e8m0, std::optional<double> range_min,
                                std::optional<double> range_max) {
  const char* op = "choose_qparams_float";
  check_float_input(min, op, "min");
  check_float_input(max, op, "max");
  ops::float_format_of(dtype, op);
  ops::check_float_range(range_min, range_max, op);
  return at::empty_symint(min.sym_sizes(),
                          min.options().dtype(e8m0 ? at::kFloat : min.scalar_type()));
}

at::Tensor fused_fake_quantize(const at::Tensor& x, const at::Tensor& observer_on,
                               const at::Tensor& fake_quant_on, const at::Tensor& running_min,
                               const at::Tensor& running_max, const at::Tensor& scale,
                               const at::Tensor& zero_point, const at::Tensor& minval,
                               c10::SymIntArrayRef block_size, c10::ScalarType dtype,
                               int64_t quant_min, int64_t quant_max, bool /*symmetric*/,
                               bool /*use_minval*/, bool /*e8m0*/, c10::string_view method,
                               double /*averaging_constant*/, std::optional<double> range_min,
                               std::optional<double> range_max) {
  const char* op = "fused_fake_quantize";
  ops::check_fused_args(x, dtype, quant_min, quant_max, range_min, range_max, method, op);
  reduced_sizes(x, block_size, op);
  return like(x);
}

at::Tensor fused_fake_quantize_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& fake_quant_on, const at::Tensor& scale,
                                        const at::Tensor& zero_point, const at::Tensor& minval,
                                        c10::ScalarType dtype, int64_t quant_min, int64_t quant_max,
                                        bool /*use_minval*/) {
  ops::quant_format_of(dtype, "fused_fake_quantize_backward");
  return like(x);
}

at::Tensor pack(const at::Tensor& q, c10::ScalarType dtype) {
  const auto fmt = ops::packable_format_of(dtype, "pack");
  return at::empty_symint(ops::packed_sizes(q.sym_sizes(), fmt, "pack"),
                          q.options().dtype(at::kByte));
}

at::Tensor unpack(const at::Tensor& packed, c10::ScalarType dtype) {
  const auto fmt = ops::packable_format_of(dtype, "unpack");
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kByte,
                   "coreai_opt.unpack: packed must be torch.uint8; got ",
                   ops::dtype_name(packed.scalar_type()));
  const auto out_dtype = fmt.is_float ? at::kFloat : (fmt.is_signed ? at::kChar : at::kByte);
  return at::empty_symint(ops::unpacked_sizes(packed.sym_sizes(), fmt),
                          packed.options().dtype(out_dtype));
}

}  // namespace

TORCH_LIBRARY_IMPL(coreai_opt, Meta, m) { COREAI_OPT_TENSOR_OPS(COREAI_OPT_IMPL) }

}  // namespace coreai_opt::meta
