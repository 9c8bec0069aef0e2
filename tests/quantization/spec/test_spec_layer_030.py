"""Spec-layer changes of coreai-opt 0.3.0 (behaviour.md §12) and reference API gaps.

resolve_block_sizes, any-axis PerBlockGranularity, QuantizationScheme as a StrEnum, the
float_range clamp, tensor_fqn, quantization_target on calculators, maybe_build_from_dict,
the factory's quantization_target keyword and the dtype names of behaviour.md §2.
"""

from __future__ import annotations

import logging

import core_formulas as ref
import pydantic
import pytest
import torch

import coreai_opt  # noqa: F401  (loads the op library)
from coreai_opt.config.spec import CompressionTargetTensor
from coreai_opt.quantization.spec import (
    MinMaxRangeCalculator,
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QuantizationComponentFactory,
    QuantizationGranularity,
    QuantizationScheme,
    QuantizationSpec,
    StaticQParamsCalculator,
    resolve_block_sizes,
)
from coreai_opt.quantization.spec.errors import _BlockSizeMismatchError
from coreai_opt.quantization.spec.fake_quantize import FakeQuantize

Factory = QuantizationComponentFactory
ACT = CompressionTargetTensor.ACTIVATION
WEIGHT = CompressionTargetTensor.WEIGHT


# -- resolve_block_sizes and PerBlockGranularity on any axis ---------------------------------


def test_resolve_block_sizes() -> None:
    assert resolve_block_sizes((4, 6, 8), (2, -1, 4)) == (2, 6, 4)
    assert resolve_block_sizes([3], [-1]) == (3,)
    with pytest.raises(_BlockSizeMismatchError, match=r"block size 4 does not divide dimension 1"):
        resolve_block_sizes((4, 6), (2, 4))
    assert issubclass(_BlockSizeMismatchError, ValueError)
    with pytest.raises(ValueError, match=r"2 entries but the tensor has rank 3"):
        resolve_block_sizes((4, 4, 4), (2, 2))
    with pytest.raises(ValueError, match=r"entries \[0\]"):
        resolve_block_sizes((4, 4), (0, 2))


@pytest.mark.parametrize(
    ("axis", "target", "shape", "block"),
    [
        (1, WEIGHT, (8, 16, 3, 3), (1, 4, 3, 3)),
        (0, WEIGHT, (8, 16, 3, 3), (4, 1, 3, 3)),
        (2, WEIGHT, (8, 16, 4, 3), (1, 1, 4, 3)),
        (-1, WEIGHT, (8, 16), (1, 4)),
        (-1, ACT, (2, 5, 16), (1, 1, 4)),
        (1, ACT, (2, 8, 6), (1, 4, 1)),
        (0, ACT, (8, 16), (4, 1)),
        (-3, "activation", (8, 16, 2), (4, 1, 1)),
    ],
    ids=str,
)
def test_per_block_any_axis(axis, target, shape, block) -> None:
    """Weights collapse only the other of dims 0/1; activations collapse every other dim."""
    granularity = PerBlockGranularity(axis=axis, block_size=4)
    assert granularity.get_block_size(shape, target) == block
    expected_qshape = tuple(s // b for s, b in zip(shape, block, strict=True))
    assert granularity.get_qparams_shape(shape, target) == expected_qshape


def test_per_block_tuple_and_default_target() -> None:
    granularity = PerBlockGranularity(block_size=(2, -1))
    assert granularity.get_block_size((4, 6), ACT) == granularity.get_block_size((4, 6)) == (2, 6)
    # The target defaults to WEIGHT (the 0.2.0 behaviour).
    assert PerBlockGranularity(axis=1, block_size=2).get_block_size((2, 4, 3)) == (1, 2, 3)


def test_activation_fake_quantizer_uses_the_activation_block_layout() -> None:
    spec = QuantizationSpec(granularity={"type": "per_block", "axis": 1, "block_size": 4})
    act = Factory.create_fake_quantizer(spec, quantization_target="activation")
    weight = Factory.create_fake_quantizer(spec, quantization_target="weight")
    x = torch.randn(2, 8, 3)
    act(x)
    weight(x)
    assert act.calculate_qparams()[0].shape == (2, 2, 3)
    assert weight.calculate_qparams()[0].shape == (2, 2, 1)
    assert act.get_block_size(x.shape) == (1, 4, 1)
    assert weight.get_block_size(x.shape) == (1, 4, 3)
    lo, hi = ref.block_minmax(x, (1, 4, 1))
    want = ref.int_qparams(lo, hi, -128, 127, True)
    torch.testing.assert_close(act.calculate_qparams()[0], want[0], rtol=0, atol=0)


def test_custom_granularity_without_target_argument_still_works() -> None:
    """A 0.2.0-style granularity (get_block_size(shape) only) keeps working."""

    @QuantizationGranularity.register("test_030_rows")
    class Rows(QuantizationGranularity):
        axis: None = None

        def get_block_size(self, shape):
            return (1, *shape[1:])

    try:
        calc = StaticQParamsCalculator(dtype=torch.int8, qscheme="symmetric", granularity=Rows())
        assert calc(torch.randn(3, 4))[0].shape == (3, 1)
    finally:
        QuantizationGranularity.REGISTRY.pop("test_030_rows")


# -- QuantizationScheme is a StrEnum ---------------------------------------------------------


def test_quantization_scheme_is_a_str_enum() -> None:
    assert isinstance(QuantizationScheme.SYMMETRIC, str)
    assert QuantizationScheme.ASYMMETRIC == "asymmetric"
    assert str(QuantizationScheme.SYMMETRIC_WITH_CLIPPING) == "symmetric_with_clipping"
    assert f"{QuantizationScheme.SYMMETRIC}" == "symmetric"
    assert QuantizationScheme("ASYMMETRIC") is QuantizationScheme.ASYMMETRIC
    with pytest.raises(
        ValueError, match=r"'affine' is not a valid QuantizationScheme.*'asymmetric'"
    ):
        QuantizationScheme("affine")
    assert QuantizationSpec(qscheme="Asymmetric").qscheme is QuantizationScheme.ASYMMETRIC


# -- float_range clamp ---------------------------------------------------------------------------


def _calc(float_range, dtype=torch.uint8, qscheme="asymmetric"):
    return StaticQParamsCalculator(
        dtype=dtype, qscheme=qscheme, granularity=PerTensorGranularity(), float_range=float_range
    )


@pytest.mark.parametrize(
    ("pinned", "clamped"),
    [((0.5, None), (0.0, None)), ((None, -1.0), (None, 0.0)), ((0.25, 3.0), (0.0, 3.0))],
    ids=str,
)
def test_pinned_bounds_are_clamped_to_include_zero(pinned, clamped) -> None:
    x = torch.tensor([[-2.0, 1.0, 4.0]])
    got = _calc(pinned)(x)
    want = _calc(clamped)(x)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    assert _calc(pinned).effective_float_range(torch.float32) == clamped


def test_one_pinned_bound_is_cast_to_the_input_dtype() -> None:
    """bf16 input, max pinned to 0.1: the bound is bf16(0.1), as the observed min is bf16."""
    x = torch.tensor([[-1.0, 0.05]], dtype=torch.bfloat16)
    calc = _calc((None, 0.1))
    calc(x)
    hi = torch.tensor(0.1, dtype=torch.bfloat16).float().item()
    assert hi != pytest.approx(0.1, abs=1e-6)
    want = ref.int_qparams(torch.tensor([[-1.0]]), torch.tensor([[hi]]), 0, 255, False, (None, hi))
    torch.testing.assert_close(calc.scale, want[0], rtol=0, atol=0)
    assert calc.effective_float_range(torch.bfloat16) == (None, hi)
    assert calc.effective_float_range(torch.float16) == (
        None,
        torch.tensor(0.1, dtype=torch.float16).item(),
    )
    # Both pinned: no cast (float32 as given).
    both = _calc((-0.1, 0.1))
    assert both.effective_float_range(torch.bfloat16) == (-0.1, 0.1)
    # The fused fake-quantizer computes the same qparams as the calculator.
    spec = QuantizationSpec(dtype="uint8", qscheme="asymmetric", float_range=[None, 0.1])
    fq = Factory.create_fake_quantizer(spec, "activation")
    fq(x)
    torch.testing.assert_close(fq.calculate_qparams()[0], want[0], rtol=0, atol=0)


def test_spec_still_validates_float_range() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"float_range min=1.0 must be <= 0"):
        QuantizationSpec(float_range=[1.0, None])


# -- quantization_target, tensor_fqn, read-only qscheme -----------------------------------------


def test_quantization_target_reaches_every_component() -> None:
    spec = QuantizationSpec(granularity={"type": "per_block", "axis": 1, "block_size": 2})
    rc = Factory.create_range_calculator(spec)
    assert isinstance(rc, MinMaxRangeCalculator) and rc.quantization_target is WEIGHT
    rc = Factory.create_range_calculator(spec, quantization_target="activation")
    assert rc.quantization_target is ACT and rc.block_size((2, 4, 3)) == (1, 2, 1)
    assert MinMaxRangeCalculator(PerTensorGranularity()).quantization_target is WEIGHT
    calc = Factory.create_qparams_calculator(spec, quantization_target="activation")
    assert calc.quantization_target is ACT
    assert calc.range_calculator.quantization_target is ACT
    fq = Factory.create_fake_quantizer(spec, quantization_target="lut")
    assert fq.quantization_target is CompressionTargetTensor.LUT
    with pytest.raises(ValueError, match=r"quantization_target='bias' is not a compression target"):
        Factory.create_range_calculator(spec, "bias")


def test_factory_target_argument_forms() -> None:
    spec = QuantizationSpec()
    positional = Factory.create_fake_quantizer(spec, "weight")
    keyword = Factory.create_fake_quantizer(
        spec, quantization_target=CompressionTargetTensor.WEIGHT
    )
    partial = Factory.create_fake_quantizer_partial(spec, quantization_target="activation")
    assert positional.quantization_target is keyword.quantization_target is WEIGHT
    assert type(positional.qparams_calculator) is StaticQParamsCalculator
    assert partial().quantization_target is ACT
    with pytest.raises(TypeError, match=r"either positionally or as quantization_target="):
        Factory.create_fake_quantizer(spec, "weight", quantization_target="weight")
    with pytest.raises(TypeError, match=r"a quantization target is required"):
        Factory.create_fake_quantizer(spec)


def test_fake_quantizer_reads_qscheme_and_target_from_its_calculator() -> None:
    spec = QuantizationSpec(qscheme="asymmetric")
    calc = Factory.create_qparams_calculator(spec, "activation")
    common = dict(
        dtype=spec.dtype,
        qformulation=spec.qformulation,
        granularity=spec.granularity,
        target_dtype=spec.target_dtype,
        quant_min=spec.quant_min,
        quant_max=spec.quant_max,
        qparams_calculator=calc,
    )
    fq = FakeQuantize(**common)
    assert fq.qscheme is QuantizationScheme.ASYMMETRIC and fq.quantization_target is ACT
    with pytest.raises(AttributeError):
        fq.qscheme = QuantizationScheme.SYMMETRIC  # type: ignore[misc]
    assert FakeQuantize(**common, qscheme="asymmetric", quantization_target="activation")
    with pytest.raises(ValueError, match=r"qscheme='symmetric' contradicts .* 'asymmetric'"):
        FakeQuantize(**common, qscheme="symmetric")
    with pytest.raises(ValueError, match=r"quantization_target='weight' contradicts"):
        FakeQuantize(**common, quantization_target="weight")


def test_tensor_fqn(caplog: pytest.LogCaptureFixture) -> None:
    fq = Factory.create_fake_quantizer(
        QuantizationSpec(granularity={"type": "per_block", "axis": 1, "block_size": 32}), "weight"
    )
    assert fq.tensor_fqn == "<unknown>"
    fq.tensor_fqn = "encoder.layers.0.linear.weight"
    assert fq.tensor_fqn == "encoder.layers.0.linear.weight"
    with caplog.at_level(logging.WARNING):
        x = torch.randn(4, 48)
        assert fq(x) is x
    assert fq.is_disabled()
    assert "encoder.layers.0.linear.weight" in caplog.text and "(4, 48)" in caplog.text
    assert "quantization target weight" in caplog.text
    fq.tensor_fqn = None
    assert fq.tensor_fqn == "<unknown>"
    with pytest.raises(TypeError, match=r"tensor_fqn must be a str or None, got int"):
        fq.tensor_fqn = 3  # type: ignore[assignment]


# -- reference API gaps (issue 16 part D) -----------------------------------------------------


def test_maybe_build_from_dict() -> None:
    built = QuantizationGranularity.maybe_build_from_dict({"type": "per_channel", "axis": 1})
    assert built == PerChannelGranularity(axis=1)
    same = PerBlockGranularity(axis=0, block_size=8)
    assert QuantizationGranularity.maybe_build_from_dict(same) is same
    assert (
        PerTensorGranularity.maybe_build_from_dict({"type": "per_tensor"}) == PerTensorGranularity()
    )
    with pytest.raises(ValueError, match=r"has no 'type' key; allowed types: .*'per_block'"):
        QuantizationGranularity.maybe_build_from_dict({"axis": 0})
    with pytest.raises(ValueError, match=r"no class is registered with key 'per_row'"):
        QuantizationGranularity.maybe_build_from_dict({"type": "per_row"})
    with pytest.raises(ValueError, match=r"got str: 'per_tensor'; allowed types"):
        QuantizationGranularity.maybe_build_from_dict("per_tensor")  # type: ignore[arg-type]


def test_component_keys_resolve_and_dump() -> None:
    spec = QuantizationSpec(fake_quantize_cls="lsq", qparam_calculator_cls="global_minmax")
    assert spec.fake_quantize_cls.__name__ == "LearnableFakeQuantize"
    dumped = spec.model_dump()
    assert dumped["qparam_calculator_cls"].__name__ == "GlobalMinMaxQParamsCalculator"
    as_json = spec.model_dump(mode="json")
    assert (as_json["dtype"], as_json["target_dtype"], as_json["scale_dtype"]) == (
        "int8",
        "int8",
        None,
    )
    assert (as_json["fake_quantize_cls"], as_json["qparam_calculator_cls"]) == (
        "lsq",
        "global_minmax",
    )
    assert as_json["range_calculator_cls"] == "minmax"
    assert QuantizationSpec(**as_json) == spec


@pytest.mark.parametrize(
    ("dtype", "n_bits", "target_dtype"),
    [
        (torch.int1, 1, torch.int8),
        (torch.uint1, 1, torch.uint8),
        ("int1", 1, torch.int8),
        ("uint1", 1, torch.uint8),
        (torch.int3, 3, torch.int8),
        (torch.uint7, 7, torch.uint8),
        (torch.int16, 16, torch.int16),
        ("float8_e4m3", 8, torch.float8_e4m3fn),
        ("float4_e2m1fn", 4, torch.float8_e4m3fn),
        (torch.float4_e2m1fn_x2, 4, torch.float8_e4m3fn),
    ],
    ids=str,
)
def test_dtype_names_and_widths(dtype, n_bits, target_dtype) -> None:
    assert QuantizationSpec.get_n_bits_from_dtype(dtype) == n_bits
    assert QuantizationSpec.get_target_dtype(dtype) == target_dtype


def test_quant_ranges_of_other_integer_widths() -> None:
    assert QuantizationSpec.get_quant_range(torch.int1, "symmetric") == (-1, 0)
    assert QuantizationSpec.get_quant_range("uint1", "asymmetric") == (0, 1)
    assert QuantizationSpec.get_quant_range(torch.int3, "symmetric_with_clipping") == (-3, 3)
    assert QuantizationSpec.get_quant_range("float8_e4m3", "symmetric") == (-448.0, 448.0)


def test_spec_dtype_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert QuantizationSpec(dtype="float4_e2m1fn").dtype is torch.float4_e2m1fn_x2
    assert QuantizationSpec(dtype="float8_e4m3").dtype is torch.float8_e4m3fn
    with pytest.raises(pydantic.ValidationError, match=r"unsupported dtype torch.int1; allowed"):
        QuantizationSpec(dtype="int1")
    widened = {*QuantizationSpec.SUPPORTED_DTYPES, torch.int1, torch.uint1, torch.int3}
    monkeypatch.setattr(QuantizationSpec, "SUPPORTED_DTYPES", widened)
    for name, bits, qrange in (("int1", 1, (-1, 0)), ("uint1", 1, (0, 1)), ("int3", 3, (-4, 3))):
        spec = QuantizationSpec(dtype=name, qscheme="asymmetric")
        assert (spec.n_bits, (spec.quant_min, spec.quant_max)) == (bits, qrange)
    # A width the kernels have no table entry for runs on the unfused ops.
    fq = Factory.create_fake_quantizer(
        QuantizationSpec(dtype="int3", qscheme="asymmetric"), "weight"
    )
    assert fq._method is None
    x = torch.randn(4, 8)
    y = fq(x)
    scale, zp, _ = fq.calculate_qparams()
    q = torch.clamp(torch.round(x / scale) + zp, -4, 3)
    torch.testing.assert_close(y, (q - zp) * scale, rtol=0, atol=1e-6)


def test_range_calculator_written_for_020_takes_no_target() -> None:
    """A custom range calculator whose constructor only takes the granularity still builds."""
    from coreai_opt.quantization.spec import RangeCalculatorBase

    @RangeCalculatorBase.register("test_030_plain")
    class Plain(RangeCalculatorBase):
        def __init__(self, granularity):
            super().__init__(granularity)

        def forward(self, x):
            return x.amin().reshape(1, 1), x.amax().reshape(1, 1)

    try:
        spec = QuantizationSpec(range_calculator_cls="test_030_plain")
        calc = Factory.create_range_calculator(spec, quantization_target="activation")
        assert isinstance(calc, Plain) and calc.quantization_target is ACT
        fq = Factory.create_fake_quantizer(spec, "activation")
        x = torch.randn(3, 4)
        fq(x)
        assert fq.calculate_qparams()[0].item() == pytest.approx(x.abs().max().item() / 127.5)
    finally:
        RangeCalculatorBase.REGISTRY.pop("test_030_plain")


def test_fp4_forward_rounds_onto_the_e2m1_grid() -> None:
    from coreai_opt.quantization.spec import fp4_forward

    x = torch.tensor([0.2, 0.3, 0.75, 1.25, 2.5, 5.0, 7.0, -7.0, -0.26, float("nan"), float("inf")])
    y = fp4_forward(x)
    want = torch.tensor([0.0, 0.5, 1.0, 1.0, 2.0, 4.0, 6.0, -6.0, -0.5, float("nan"), 6.0])
    torch.testing.assert_close(y, want, rtol=0, atol=0, equal_nan=True)
    assert fp4_forward(x.to(torch.bfloat16)).dtype == torch.bfloat16
