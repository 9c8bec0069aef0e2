"""The finalize core: weight storage layout, activation qparams, refusals, op choice.

Every weight format is checked bit for bit against the fake-quantizer that produced it:
the stored codes, dequantized as the Core AI ops do, give exactly the FQ's output for a
float32 weight (both compute ``(q - zp) * s``, ``(q - qmin) * s + minval`` or ``q * s`` in
float32 from the same codes).
"""

from __future__ import annotations

import pytest
import torch
from finalize_helpers import WEIGHT_FORMATS, activation_fq, weight_fq

from coreai_opt import CoreMLExportError, ExportBackend
from coreai_opt.quantization.finalize import (
    _export_ops,
    export_activation_qparams,
    export_weight,
    select_export_ops,
)
from coreai_opt.quantization.finalize._activations import ActivationExport
from coreai_opt.quantization.finalize._checks import (
    check_coreml_activation,
    check_coreml_weight,
    refuse_dynamic,
)
from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerChannelGranularity,
    QuantizationSpec,
)
from coreai_opt.quantization.spec._dtype_table import format_info, quant_range

E8M0 = torch.float8_e8m0fnu
FP4 = torch.float4_e2m1fn_x2

# id -> (quantized dtype, input_dtype, zero_point dtype, has minval, scale dtype, output_dtype)
EXPECTED = {
    "int8": (torch.int8, torch.int8, torch.int8, False, torch.float32, None),
    "uint8_asym": (torch.uint8, torch.uint8, torch.uint8, False, torch.float32, None),
    "int4_block_minval": (torch.int8, torch.int4, None, True, torch.float32, None),
    "uint4_asym": (torch.uint8, torch.uint4, torch.uint8, False, torch.float32, None),
    "int4_symclip": (torch.int8, torch.int4, torch.int8, False, torch.float32, None),
    "fp8_e4m3": (torch.float8_e4m3fn, None, None, False, torch.float32, None),
    "fp8_e4m3_e8m0": (torch.float8_e4m3fn, None, None, False, E8M0, torch.float32),
    "mxfp4": (torch.uint8, None, None, False, E8M0, torch.float32),
}


@pytest.mark.parametrize(("fmt", "spec"), WEIGHT_FORMATS, ids=[f for f, _ in WEIGHT_FORMATS])
def test_weight_storage_layout_and_bit_exact_dequantize(fmt: str, spec: QuantizationSpec) -> None:
    torch.manual_seed(1)
    w = torch.randn(16, 64) * 0.1
    fq = weight_fq(spec, w)
    export = export_weight(fq, w, "w")
    q_dtype, input_dtype, zp_dtype, has_minval, scale_dtype, output_dtype = EXPECTED[fmt]
    assert export.quantized.dtype == q_dtype
    packed = spec.dtype == FP4
    assert tuple(export.quantized.shape) == ((16, 32) if packed else (16, 64))
    assert export.logical_shape == (16, 64)
    assert export.input_dtype == input_dtype
    assert (export.zero_point is None) == (zp_dtype is None)
    if zp_dtype is not None:
        assert export.zero_point.dtype == zp_dtype
        assert export.zero_point.shape == export.scale.shape
    assert (export.minval is not None) == has_minval
    assert export.scale.dtype == scale_dtype
    assert export.scale.dim() == 2  # the weight's rank, one entry per block
    assert export.output_dtype == output_dtype
    if not fq.is_float:
        codes = export.quantized.int()
        assert int(codes.min()) >= fq.quant_min and int(codes.max()) <= fq.quant_max
    assert torch.equal(export.dequantize(), fq(w))


def test_fp4_codes_pack_two_a_byte_even_index_in_the_low_nibble() -> None:
    # Blocks whose largest magnitude is 6 get the scale 2^0 (OCP MX), so the codes are the
    # E2M1 encodings of the values themselves: 0.5 -> 0b0001, 6 -> 0b0111, -0.5 -> 0b1001.
    w = torch.zeros(2, 32)
    w[:, 0], w[:, 1], w[:, 2], w[:, 3] = 6.0, 0.5, -0.5, 1.0
    spec = dict(WEIGHT_FORMATS)["mxfp4"]
    export = export_weight(weight_fq(spec, w), w, "w")
    assert float(export.scale.float()[0, 0]) == 1.0
    assert int(export.quantized[0, 0]) == 0x7 | (0x1 << 4)
    assert int(export.quantized[0, 1]) == 0x9 | (0x2 << 4)
    assert torch.equal(export.dequantize(), w)


def test_fp4_accepts_nd_weights_blocked_by_32_along_the_last_dim() -> None:
    torch.manual_seed(2)
    w = torch.randn(4, 2, 3, 64)
    spec = QuantizationSpec(dtype=FP4, granularity=PerBlockGranularity(block_size=(1, 1, 1, 32)))
    fq = weight_fq(spec, w)
    export = export_weight(fq, w, "conv.weight")
    assert tuple(export.quantized.shape) == (4, 2, 3, 32)
    assert tuple(export.scale.shape) == (4, 2, 3, 2)
    assert torch.equal(export.dequantize(), fq(w))


@pytest.mark.parametrize(
    ("granularity", "match"),
    [
        (PerChannelGranularity(axis=0), r"requires PerBlockGranularity.*PerChannelGranularity"),
        (PerBlockGranularity(axis=1, block_size=16), r"\(1, 32\).*got \(1, 16\)"),
        (PerBlockGranularity(block_size=(2, 32)), r"\(1, 32\).*got \(2, 32\)"),
    ],
)
def test_fp4_weights_other_than_blocks_of_32_along_the_last_dim_are_refused(
    granularity: object, match: str
) -> None:
    w = torch.randn(4, 64)
    fq = weight_fq(QuantizationSpec(dtype=FP4, granularity=granularity), w)
    with pytest.raises(ValueError, match=match):
        export_weight(fq, w, "w")


def test_symmetric_with_clipping_minval_matches_the_fq_up_to_rounding() -> None:
    """The ops offset MINVAL codes by -128, the FQ by its quant_min -127: minval is shifted
    by one scale so that the exported weight still equals the FQ's (the reference keeps
    minval and is off by one step)."""
    torch.manual_seed(3)
    w = torch.randn(8, 32)
    spec = QuantizationSpec(
        dtype=torch.int8,
        qscheme="symmetric_with_clipping",
        qformulation="minval",
        granularity=PerChannelGranularity(axis=0),
    )
    fq = weight_fq(spec, w)
    export = export_weight(fq, w, "w")
    scale, _, minval = fq.calculate_qparams()
    assert torch.allclose(export.minval, minval - scale)
    assert int(export.quantized.min()) >= -127
    torch.testing.assert_close(export.dequantize(), fq(w), rtol=0, atol=1e-6)


def test_bfloat16_weight_scales_are_cast_to_the_compute_dtype_first() -> None:
    torch.manual_seed(4)
    w = torch.randn(8, 32).to(torch.bfloat16)
    fq = weight_fq(dict(WEIGHT_FORMATS)["int8"], w)
    export = export_weight(fq, w, "w")
    assert export.scale.dtype == torch.bfloat16 and export.compute_dtype == torch.bfloat16
    out = export.dequantize()
    assert out.dtype == torch.bfloat16
    # Codes from the bfloat16 scale may differ from the FQ's by one step; both results are
    # then rounded to bfloat16 (half an ulp each).
    ref = fq(w).float()
    tol = float(export.scale.float().max()) + 2**-8 * float(ref.abs().max())
    assert float((out.float() - ref).abs().max()) <= tol


def test_integer_weight_must_be_float() -> None:
    fq = weight_fq(dict(WEIGHT_FORMATS)["int8"], torch.randn(4, 8))
    with pytest.raises(TypeError, match="only float weights"):
        export_weight(fq, torch.ones(4, 8, dtype=torch.int32), "w")


# -- activations ---------------------------------------------------------------------


def test_per_tensor_activation_qparams_are_0d_with_the_keywords_that_exist() -> None:
    x = torch.randn(4, 16)
    fq = activation_fq(QuantizationSpec(dtype=torch.uint8, qscheme="asymmetric"), x)
    export = export_activation_qparams(fq, torch.float32, 2, "act")
    assert export.scale.shape == () and export.scale.dtype == torch.float32
    assert export.zero_point.shape == () and export.zero_point.dtype == torch.uint8
    assert export.minval is None and export.axis is None
    assert export.dtype == torch.uint8 and export.input_dtype == torch.uint8
    nodes = {"zero_point": "ZP", "minval": "MIN"}
    assert export.quantize_kwargs(nodes) == {"zero_point": "ZP"}
    assert export.dequantize_kwargs(nodes) == {
        "output_dtype": torch.float32,
        "zero_point": "ZP",
        "input_dtype": torch.uint8,
    }


def test_per_channel_activation_qparams_are_1d_with_a_resolved_axis() -> None:
    x = torch.randn(2, 3, 8)
    spec = QuantizationSpec(
        dtype=torch.int8,
        qscheme="asymmetric",
        qformulation="minval",
        granularity=PerChannelGranularity(axis=-1),
    )
    fq = activation_fq(spec, x)
    export = export_activation_qparams(fq, torch.float32, 3, "act")
    assert export.axis == 2
    assert export.scale.shape == (8,) and export.minval.shape == (8,)
    assert export.zero_point is None
    assert export.quantize_kwargs({"minval": "M"}) == {"minval": "M", "axis": 2}
    # quantize_tensor gives the FQ's codes: dequantized they are the FQ's output
    codes = export.quantize_tensor(x).float()
    values = (codes + 128) * export.scale.reshape(1, 1, 8) + export.minval.reshape(1, 1, 8)
    assert torch.equal(values, fq(x))


def _closed_form_codes(export: ActivationExport, x: torch.Tensor) -> torch.Tensor:
    """The codes quantize_tensor must give, written out in float32 torch ops."""
    info = format_info(export.dtype)
    shape = [1] * x.dim()
    if export.axis is not None:
        shape[export.axis] = -1
    xf, scale = x.float(), export.scale.float().reshape(shape)
    if info.is_float:
        return (xf / scale).clamp(-info.max_abs, info.max_abs).to(export.storage_dtype)
    lo, hi = quant_range(export.dtype, narrow=False)
    if export.minval is not None:
        codes = torch.round((xf - export.minval.float().reshape(shape)) / scale) + lo
    elif export.zero_point is not None:
        codes = torch.round(xf / scale) + export.zero_point.float().reshape(shape)
    else:
        codes = torch.round(xf / scale)
    return codes.clamp(lo, hi).to(export.storage_dtype)


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize(
    ("dtype", "form"),
    [
        (torch.int8, "zp"),
        (torch.uint8, "zp"),
        (torch.int8, "minval"),
        (torch.uint8, "minval"),
        (torch.int4, "zp"),
        (torch.int4, "minval"),
        (torch.int8, "none"),
        (torch.float8_e4m3fn, "none"),
        (torch.float8_e5m2, "none"),
    ],
)
def test_quantize_tensor_equals_the_closed_form(
    dtype: torch.dtype, form: str, axis: int | None, compute_dtype: torch.dtype
) -> None:
    """quantize_tensor (the quantize op in float32) gives the closed-form codes bit for bit,
    half-way ties and out-of-range values included."""
    gen = torch.Generator().manual_seed(0)
    channels = 6
    scale = (torch.rand(channels, generator=gen) * 0.1 + 0.01).to(compute_dtype)
    if axis is None:
        scale = scale[:1].reshape(())
    container = torch.uint8 if dtype == torch.uint8 else torch.int8
    zero_point = torch.randint(0, 3, scale.shape, generator=gen).to(container)
    minval = (-torch.rand(scale.shape, generator=gen)).to(compute_dtype)
    export = ActivationExport(
        scale=scale,
        zero_point=zero_point if form == "zp" else None,
        minval=minval if form == "minval" else None,
        axis=axis,
        dtype=dtype,
        input_dtype=None if dtype.is_floating_point else dtype,
        compute_dtype=compute_dtype,
    )
    x = torch.randn(4, channels, 5, generator=gen) * 3
    steps = scale.float().reshape(-1, 1) if axis is not None else scale.float()
    x[0] = (torch.randint(-300, 300, (channels, 5), generator=gen) + 0.5) * steps
    x = x.to(compute_dtype)
    codes = export.quantize_tensor(x)
    expected = _closed_form_codes(export, x)
    assert codes.dtype == expected.dtype == export.storage_dtype
    assert torch.equal(codes.view(torch.uint8), expected.view(torch.uint8))


def test_float_activation_qparams_have_no_offsets_and_e8m0_needs_output_dtype() -> None:
    x = torch.randn(4, 16)
    fp8 = activation_fq(QuantizationSpec(dtype=torch.float8_e4m3fn), x)
    export = export_activation_qparams(fp8, torch.float32, 2, "act")
    assert export.zero_point is None and export.minval is None and export.input_dtype is None
    assert export.dequantize_kwargs({}) == {"output_dtype": torch.float32}
    mx = activation_fq(QuantizationSpec(dtype=torch.float8_e4m3fn, scale_dtype="float8_e8m0fnu"), x)
    export = export_activation_qparams(mx, torch.float16, 2, "act")
    assert export.scale.dtype == E8M0
    assert export.dequantize_kwargs({}) == {"output_dtype": torch.float16}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            QuantizationSpec(
                dtype=torch.int8, granularity=PerBlockGranularity(axis=1, block_size=8)
            ),
            r"PerBlockGranularity on activations.*"
            r"\['PerTensorGranularity', 'PerChannelGranularity'\]",
        ),
        (
            QuantizationSpec(dtype=FP4, granularity=PerBlockGranularity(axis=1, block_size=32)),
            r"FP4.*\['PerTensorGranularity', 'PerChannelGranularity'\].*export handler",
        ),
    ],
    ids=["per_block", "fp4"],
)
def test_activation_formats_without_0d_or_1d_qparams_are_refused(
    spec: QuantizationSpec, match: str
) -> None:
    fq = activation_fq(spec, torch.randn(4, 32))
    with pytest.raises(ValueError, match=match):
        export_activation_qparams(fq, torch.float32, 2, "act")


def test_dynamic_activation_qparams_are_refused() -> None:
    fq = activation_fq(
        QuantizationSpec(dtype=torch.int8, qparam_calculator_cls="dynamic"), torch.randn(4, 8)
    )
    with pytest.raises(NotImplementedError, match=r"recomputed on every forward.*\['act'\]"):
        export_activation_qparams(fq, torch.float32, 2, "act")
    with pytest.raises(NotImplementedError, match=r"\['act_b'\]"):
        refuse_dynamic({"act_b": fq}, ExportBackend.CoreML)
    refuse_dynamic({"act_b": fq}, ExportBackend.CoreAI, covered=lambda _: True)


# -- Core ML gates -------------------------------------------------------------------


def test_coreml_gates() -> None:
    w = torch.randn(4, 32)
    fp8 = weight_fq(QuantizationSpec(dtype=torch.float8_e4m3fn), w)
    with pytest.raises(CoreMLExportError, match=r"float8_e4m3fn.*weight quantizer 'w_fq'") as err:
        check_coreml_weight(fp8, "w_fq")
    assert str(err.value).endswith("ExportBackend.CoreAI instead.")
    minval = weight_fq(
        QuantizationSpec(dtype=torch.int4, qscheme="asymmetric", qformulation="minval"), w
    )
    with pytest.raises(ValueError, match=r"qformulation='minval'.*allowed: 'zp'"):
        check_coreml_weight(minval, "w_fq")
    check_coreml_weight(weight_fq(QuantizationSpec(dtype=torch.uint4), w), "w_fq")
    x = torch.randn(4, 32)
    int4 = activation_fq(QuantizationSpec(dtype=torch.int4), x)
    with pytest.raises(CoreMLExportError, match=r"torch.int4.*activation quantizer 'a'"):
        check_coreml_activation(int4, "a")
    channel = activation_fq(
        QuantizationSpec(dtype=torch.int8, granularity=PerChannelGranularity(axis=1)), x
    )
    with pytest.raises(
        CoreMLExportError, match=r"PerTensorGranularity.*PerChannelGranularity\(axis=1\)"
    ):
        check_coreml_activation(channel, "a")
    check_coreml_activation(activation_fq(QuantizationSpec(dtype=torch.uint8), x), "a")


# -- op choice -----------------------------------------------------------------------


def test_op_choice_follows_coreai_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    if _export_ops.coreai_torch_available():
        ops = select_export_ops()
        assert ops.uses_coreai_torch and ops.quantize is torch.ops.coreai.quantize
        assert ops.blockwise_shift_scale is torch.ops.coreai.constexpr_blockwise_shift_scale
    monkeypatch.setattr(_export_ops, "coreai_torch_available", lambda: False)
    if hasattr(torch.ops.coreai_opt, "blockwise_shift_scale"):
        ops = select_export_ops()
        assert ops.library == "coreai_opt"
        assert ops.blockwise_shift_scale is torch.ops.coreai_opt.blockwise_shift_scale
    else:
        with pytest.raises(RuntimeError, match="rebuild"):
            select_export_ops()
