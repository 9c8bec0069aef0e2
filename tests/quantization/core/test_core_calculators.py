"""Range and qparam calculators against the formulas of behaviour.md §3."""

from __future__ import annotations

import re

import core_formulas as ref
import pytest
import torch

import coreai_opt  # noqa: F401  (loads the op library)
from coreai_opt.quantization.spec import (
    GlobalMinMaxQParamsCalculator,
    MinMaxRangeCalculator,
    MovingAverageQParamsCalculator,
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QParamsCalculatorBase,
    QuantizationScheme,
    QuantizationSpec,
    RunningRangeMixin,
    StaticQParamsCalculator,
)

CALCULATORS = {
    "static": StaticQParamsCalculator,
    "moving_average": MovingAverageQParamsCalculator,
    "global_minmax": GlobalMinMaxQParamsCalculator,
}

INT_CASES = [
    (torch.int8, "symmetric"),
    (torch.int8, "symmetric_with_clipping"),
    (torch.int8, "asymmetric"),
    (torch.uint8, "symmetric"),
    (torch.uint8, "asymmetric"),
    (torch.int4, "symmetric_with_clipping"),
    (torch.uint4, "asymmetric"),
    (torch.int2, "asymmetric"),
    (torch.uint2, "symmetric"),
]
FLOAT_CASES = [
    (torch.float8_e4m3fn, None),
    (torch.float8_e5m2, None),
    (torch.float8_e4m3fn, torch.float8_e8m0fnu),
    (torch.float8_e5m2, torch.float8_e8m0fnu),
    (torch.float4_e2m1fn_x2, torch.float8_e8m0fnu),
    (torch.float4_e2m1fn_x2, None),
]
GRANULARITIES = [
    (PerTensorGranularity(), (6, 16)),
    (PerChannelGranularity(axis=0), (6, 16)),
    (PerChannelGranularity(axis=-1), (6, 16)),
    (PerBlockGranularity(axis=1, block_size=4), (6, 16)),
    (PerBlockGranularity(block_size=(2, -1, 4)), (4, 3, 8)),
]


def _calc(method: str, dtype: torch.dtype, qscheme: str, granularity, **kwargs):
    qmin, qmax = QuantizationSpec.get_quant_range(dtype, qscheme)
    return CALCULATORS[method](
        dtype=dtype,
        qscheme=qscheme,
        granularity=granularity,
        quant_min=qmin,
        quant_max=qmax,
        **kwargs,
    )


def _batches(shape, n=3, dtype=torch.float32):
    gen = torch.Generator().manual_seed(7)
    return [(torch.randn(shape, generator=gen) * (k + 1) + 0.3 * k).to(dtype) for k in range(n)]


def _expected(method, batches, granularity, fn):
    run = None
    out = []
    for x in batches:
        lo, hi = ref.block_minmax(x, granularity.get_block_size(x.shape))
        run = ref.fold(method, lo, hi, run)
        out.append(fn(*run))
    return out


@pytest.mark.parametrize("method", list(CALCULATORS))
@pytest.mark.parametrize(("dtype", "qscheme"), INT_CASES)
@pytest.mark.parametrize(("granularity", "shape"), GRANULARITIES)
def test_int_qparams_match_formulas(method, dtype, qscheme, granularity, shape) -> None:
    calc = _calc(method, dtype, qscheme, granularity)
    qmin, qmax = calc.quant_min, calc.quant_max
    symmetric = qscheme != "asymmetric"
    batches = _batches(shape)
    want = _expected(
        method, batches, granularity, lambda lo, hi: ref.int_qparams(lo, hi, qmin, qmax, symmetric)
    )
    for x, (scale, zp, minval) in zip(batches, want, strict=True):
        got = calc(x)
        torch.testing.assert_close(got[0], scale, rtol=0, atol=0)
        torch.testing.assert_close(got[1], zp, rtol=0, atol=0)
        torch.testing.assert_close(got[2], minval, rtol=0, atol=0)
        assert got[0].shape == granularity.get_qparams_shape(shape)
    assert calc.scale.dtype == torch.float32 and calc.zero_point.dtype == torch.int32
    assert calc.minval.dtype == torch.float32


@pytest.mark.parametrize("method", list(CALCULATORS))
@pytest.mark.parametrize(("dtype", "scale_dtype"), FLOAT_CASES)
@pytest.mark.parametrize(("granularity", "shape"), GRANULARITIES[:4])
def test_float_qparams_match_formulas(method, dtype, scale_dtype, granularity, shape) -> None:
    calc = _calc(method, dtype, "symmetric", granularity, scale_dtype=scale_dtype)
    batches = _batches(shape)
    e8m0 = scale_dtype is not None
    want = _expected(
        method, batches, granularity, lambda lo, hi: ref.float_qparams(lo, hi, dtype, e8m0)
    )
    for x, scale in zip(batches, want, strict=True):
        got_scale, zp, minval = calc(x)
        torch.testing.assert_close(got_scale, scale, rtol=0, atol=0)
        assert zp is None and minval is None
    assert calc.zero_point is None and calc.minval is None
    assert "zero_point" not in calc.state_dict()


@pytest.mark.parametrize(
    "float_range", [(None, 3.0), (-2.0, None), (-1.0, 2.5), (0.0, 4.0)], ids=str
)
@pytest.mark.parametrize("method", list(CALCULATORS))
def test_float_range(method, float_range) -> None:
    calc = _calc(
        method, torch.uint8, "asymmetric", PerChannelGranularity(axis=0), float_range=float_range
    )
    batches = _batches((4, 8))
    want = _expected(
        method,
        batches,
        PerChannelGranularity(axis=0),
        lambda lo, hi: ref.int_qparams(lo, hi, 0, 255, False, float_range),
    )
    for x, expected in zip(batches, want, strict=True):
        got = calc(x)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_float_range_freezes_after_first_forward() -> None:
    calc = _calc(
        "moving_average", torch.int8, "symmetric", PerTensorGranularity(), float_range=(-4.0, 4.0)
    )
    first = calc(torch.randn(3, 5))
    again = calc(torch.randn(3, 5) * 100)
    torch.testing.assert_close(again[0], first[0])
    torch.testing.assert_close(first[0], torch.full((1, 1), 4.0 / 127.5))
    assert torch.isinf(calc.running_min).all(), "a fixed range never observes"


@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize(
    ("dtype", "qscheme"), [(torch.int8, "asymmetric"), (torch.float8_e4m3fn, "symmetric")]
)
def test_input_dtypes_return_qparams_in_input_dtype(x_dtype, dtype, qscheme) -> None:
    gran = PerChannelGranularity(axis=0)
    calc = _calc("moving_average", dtype, qscheme, gran)
    batches = _batches((4, 8), dtype=x_dtype)
    for x in batches:
        scale, zp, minval = calc(x)
        assert scale.dtype == x_dtype
        assert calc.scale.dtype == torch.float32
        if minval is not None:
            assert minval.dtype == x_dtype and zp.dtype == torch.int32
    # Computed in float32 from the float32 running range, then cast.
    lo, hi = calc.running_min, calc.running_max
    if dtype == torch.int8:
        want = ref.int_qparams(lo, hi, -128, 127, False)[0]
    else:
        want = ref.float_qparams(lo, hi, dtype, False)
    torch.testing.assert_close(scale, want.to(x_dtype), rtol=0, atol=0)
    assert calc._compute_dtype_for_export == x_dtype


@pytest.mark.parametrize("method", list(CALCULATORS))
@pytest.mark.parametrize(
    ("dtype", "qscheme", "scale_dtype"),
    [
        (torch.int8, "symmetric", None),
        (torch.uint4, "asymmetric", None),
        (torch.float8_e4m3fn, "symmetric", None),
        (torch.float4_e2m1fn_x2, "symmetric", torch.float8_e8m0fnu),
    ],
)
def test_differentiable_path_matches_ops(method, dtype, qscheme, scale_dtype) -> None:
    gran = PerBlockGranularity(axis=1, block_size=4)
    plain = _calc(method, dtype, qscheme, gran, scale_dtype=scale_dtype)
    graded = _calc(method, dtype, qscheme, gran, scale_dtype=scale_dtype)
    for x in _batches((4, 16)):
        want = plain(x)
        leaf = x.clone().requires_grad_()
        got = graded(leaf)
        if scale_dtype is None:
            assert got[0].grad_fn is not None, "scale carries autograd history"
            got[0].sum().backward()
            assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
        for g, w in zip(got, want, strict=True):
            if w is None:
                assert g is None
            else:
                torch.testing.assert_close(g.detach(), w, rtol=0, atol=0)
    torch.testing.assert_close(graded.running_min, plain.running_min, rtol=0, atol=0)
    torch.testing.assert_close(graded.running_max, plain.running_max, rtol=0, atol=0)


def test_no_history_under_no_grad() -> None:
    calc = _calc("static", torch.int8, "symmetric", PerTensorGranularity())
    with torch.no_grad():
        scale, _, _ = calc(torch.randn(3, 3, requires_grad=True))
    assert scale.grad_fn is None


def test_moving_average_constant() -> None:
    calc = _calc(
        "moving_average", torch.int8, "asymmetric", PerTensorGranularity(), averaging_constant=0.5
    )
    calc(torch.tensor([[-1.0, 1.0]]))
    calc(torch.tensor([[-3.0, 5.0]]))
    assert calc.running_min.item() == -2.0 and calc.running_max.item() == 3.0
    assert calc.averaging_constant == 0.5
    with pytest.raises(ValueError, match=r"averaging_constant=1.5 .* \(0, 1\]"):
        _calc(
            "moving_average",
            torch.int8,
            "asymmetric",
            PerTensorGranularity(),
            averaging_constant=1.5,
        )


def test_running_range_mixin_and_bases() -> None:
    assert issubclass(MovingAverageQParamsCalculator, RunningRangeMixin)
    assert issubclass(GlobalMinMaxQParamsCalculator, RunningRangeMixin)
    assert not issubclass(StaticQParamsCalculator, RunningRangeMixin)
    for cls in CALCULATORS.values():
        assert issubclass(cls, QParamsCalculatorBase)
    assert QParamsCalculatorBase.REGISTRY["static"] is StaticQParamsCalculator


def test_get_qparams_warns_before_first_forward() -> None:
    calc = _calc("static", torch.int8, "symmetric", PerTensorGranularity())
    with pytest.warns(UserWarning, match=r"before any forward"):
        calc.get_qparams()
    calc(torch.randn(2, 2))
    scale, zp, minval = calc.get_qparams()
    assert scale.shape == (1, 1) and zp.dtype == torch.int32 and minval.shape == (1, 1)


def test_export_mode_returns_stored_values() -> None:
    calc = _calc("global_minmax", torch.int8, "symmetric", PerTensorGranularity())
    first = calc(torch.ones(2, 2))
    calc.set_export_mode(True)
    frozen = calc(torch.ones(2, 2) * 50)
    torch.testing.assert_close(frozen[0], first[0])
    assert calc.running_max.item() == 1.0
    calc.set_export_mode(False)
    assert calc(torch.ones(2, 2) * 50)[0].item() == pytest.approx(50 / 127.5)


def test_granularity_setter() -> None:
    calc = _calc("static", torch.int8, "symmetric", PerChannelGranularity())
    calc.granularity = PerChannelGranularity(axis=1)
    assert calc.range_calculator.granularity == PerChannelGranularity(axis=1)
    calc(torch.randn(3, 4))
    assert calc.scale.shape == (1, 4) and calc._resolved_axis == 1
    with pytest.raises(RuntimeError, match=r"granularity cannot change after the calculator has"):
        calc.granularity = PerTensorGranularity()
    # The same granularity again is refused too: the state is fixed after the first forward.
    with pytest.raises(RuntimeError, match=r"before the first forward pass"):
        calc.granularity = PerChannelGranularity(axis=1)
    assert calc.granularity == PerChannelGranularity(axis=1)


def test_extra_repr_shows_the_state_as_the_reference() -> None:
    """repr shows scale / zero_point / minval / export_mode; running calculators add a line."""
    static = _calc("static", torch.int4, "asymmetric", PerTensorGranularity())
    first_line = repr(static).splitlines()[1].strip()
    assert first_line == (
        "scale=tensor([]), zero_point=tensor([], dtype=torch.int32), minval=tensor([]), "
        "export_mode=False"
    )
    assert "running_min" not in static.extra_repr()
    static(torch.tensor([[-1.0, 2.0]]))
    static.set_export_mode(True)
    assert static.extra_repr() == (
        f"scale={static.scale}, zero_point={static.zero_point}, minval={static.minval}, "
        f"export_mode=True"
    )
    for method in ("moving_average", "global_minmax"):
        calc = _calc(method, torch.int8, "symmetric", PerTensorGranularity())
        calc(torch.tensor([[-1.0, 3.0]]))
        head, running = calc.extra_repr().split("\n")
        assert head.startswith("scale=tensor([[") and head.endswith("export_mode=False")
        assert running == f"running_min={calc.running_min}, running_max={calc.running_max}"
    fp8 = _calc("static", torch.float8_e4m3fn, "symmetric", PerTensorGranularity())
    assert "zero_point=None, minval=None" in fp8.extra_repr()


def test_validation() -> None:
    with pytest.raises(ValueError, match=r"scale_dtype=float8_e8m0fnu needs a float dtype"):
        _calc(
            "static",
            torch.int8,
            "symmetric",
            PerTensorGranularity(),
            scale_dtype=torch.float8_e8m0fnu,
        )
    with pytest.raises(ValueError, match=r"float_range \[2.0, 1.0\]: min must be < max"):
        _calc("static", torch.int8, "symmetric", PerTensorGranularity(), float_range=(2.0, 1.0))
    with pytest.raises(RuntimeError, match=re.escape("qparam_calculator_cls='default'")):
        QParamsCalculatorBase.REGISTRY["default"](dtype=torch.int8)


def test_state_dict_round_trip_resizes_buffers() -> None:
    src = _calc(
        "moving_average", torch.uint8, "asymmetric", PerBlockGranularity(axis=1, block_size=2)
    )
    for x in _batches((3, 8)):
        src(x)
    dst = _calc(
        "moving_average", torch.uint8, "asymmetric", PerBlockGranularity(axis=1, block_size=2)
    )
    assert dst.scale.numel() == 0
    dst.load_state_dict(src.state_dict())
    for key, value in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[key], value, rtol=0, atol=0)
    assert dst.initialized
    x = torch.randn(3, 8)
    for g, w in zip(dst(x), src(x), strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_minmax_range_calculator() -> None:
    rc = MinMaxRangeCalculator(PerBlockGranularity(block_size=(1, 4)))
    x = torch.randn(3, 8)
    lo, hi = rc(x)
    want = ref.block_minmax(x, (1, 4))
    torch.testing.assert_close(lo, want[0])
    torch.testing.assert_close(hi, want[1])
    leaf = x.clone().requires_grad_()
    lo2, hi2 = rc(leaf)
    assert lo2.grad_fn is not None
    torch.testing.assert_close(lo2.detach(), lo, rtol=0, atol=0)
    torch.testing.assert_close(hi2.detach(), hi, rtol=0, atol=0)


def test_scheme_enum_accepted() -> None:
    calc = StaticQParamsCalculator(
        torch.int8, QuantizationScheme.SYMMETRIC_WITH_CLIPPING, PerTensorGranularity()
    )
    assert (calc.quant_min, calc.quant_max) == (-127, 127)
