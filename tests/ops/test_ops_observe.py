"""minmax, update_range, choose_qparams_int / choose_qparams_float and format_range."""

from __future__ import annotations

import math

import pytest
import reference as ref
import torch
from ops_cases import GRANULARITIES, INPUT_DTYPES, block_size_of, int_ranges

ops = torch.ops.coreai_opt

FLOAT_FORMATS = [torch.float8_e4m3fn, torch.float8_e5m2, torch.float4_e2m1fn_x2]
METHODS = ["static", "moving_average", "global_minmax"]


def assert_bitexact(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same dtype, shape and bits (NaN equals NaN; +0 equals -0)."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


# ---- minmax -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize(("x_shape", "q_shape"), GRANULARITIES)
def test_minmax(x_shape: tuple[int, ...], q_shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = (torch.randn(x_shape) * 3).to(dtype)
    block = block_size_of(x_shape, q_shape)
    lo, hi = ops.minmax(x, block)
    rlo, rhi = ref.minmax(x, block)
    assert_bitexact(lo, rlo)
    assert_bitexact(hi, rhi)


def test_minmax_nan_and_inf() -> None:
    x = torch.randn(4, 40)
    x[0, 3] = float("nan")
    x[1, 39] = float("inf")
    x[2, 0] = -float("inf")
    lo, hi = ops.minmax(x, [1, 40])
    rlo, rhi = ref.minmax(x, [1, 40])
    assert_bitexact(lo, rlo)
    assert_bitexact(hi, rhi)
    assert torch.isnan(lo[0, 0]) and torch.isnan(hi[0, 0])
    assert hi[1, 0].item() == math.inf and lo[2, 0].item() == -math.inf


def test_minmax_non_contiguous() -> None:
    base = torch.randn(36, 20)
    for x in (base.t(), base[::3, 1:19]):
        block = [1, x.shape[1]]
        lo, hi = ops.minmax(x, block)
        rlo, rhi = ref.minmax(x.contiguous(), block)
        assert_bitexact(lo, rlo)
        assert_bitexact(hi, rhi)


def test_minmax_empty_reduction_dim_keeps_shape() -> None:
    """An input with a zero-size dim keeps it in the result (nothing to reduce there)."""
    lo, hi = ops.minmax(torch.empty(0, 8), [1, 8])
    assert lo.shape == (0, 1) and hi.shape == (0, 1)


# ---- update_range -------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize(
    ("x_shape", "q_shape"), [((13, 7), (1, 1)), ((33, 7), (33, 1)), ((64, 128), (64, 4))]
)
def test_update_range_steps(
    x_shape: tuple[int, ...], q_shape: tuple[int, ...], dtype: torch.dtype, method: str
) -> None:
    """Three steps from the uninitialised ±inf state, running tensors mutated in place."""
    block = block_size_of(x_shape, q_shape)
    q = [xs // b for xs, b in zip(x_shape, block, strict=True)]
    rmin = torch.full(q, math.inf)
    rmax = torch.full(q, -math.inf)
    wmin, wmax = rmin.clone(), rmax.clone()
    ptr_min, ptr_max = rmin.data_ptr(), rmax.data_ptr()
    for step in range(3):
        x = (torch.randn(x_shape) * (step + 1) + step).to(dtype)
        out = ops.update_range(x, rmin, rmax, block, method, 0.125)
        assert out is None
        wmin, wmax = ref.update_range(x, wmin, wmax, block, method, 0.125)
        assert_bitexact(rmin, wmin)
        assert_bitexact(rmax, wmax)
    assert rmin.data_ptr() == ptr_min and rmax.data_ptr() == ptr_max


def test_update_range_moving_average_first_step_takes_batch() -> None:
    x = torch.randn(8, 16)
    rmin, rmax = torch.full((8, 1), math.inf), torch.full((8, 1), -math.inf)
    ops.update_range(x, rmin, rmax, [1, 16], "moving_average", 0.01)
    assert torch.equal(rmin, x.amin(1, keepdim=True))
    assert torch.equal(rmax, x.amax(1, keepdim=True))


def test_update_range_default_averaging_constant() -> None:
    x1, x2 = torch.randn(3, 10), torch.randn(3, 10) * 5
    rmin, rmax = torch.full((3, 1), math.inf), torch.full((3, 1), -math.inf)
    ops.update_range(x1, rmin, rmax, [1, 10], "moving_average")
    ops.update_range(x2, rmin, rmax, [1, 10], "moving_average")
    wmin, wmax = ref.update_range(
        x1, torch.full((3, 1), math.inf), rmax * 0 - math.inf, [1, 10], "moving_average"
    )
    wmin, wmax = ref.update_range(x2, wmin, wmax, [1, 10], "moving_average", 0.01)
    assert_bitexact(rmin, wmin)
    assert_bitexact(rmax, wmax)


# ---- choose_qparams -----------------------------------------------------------------------


def observed_range(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) pairs covering both signs, all-positive, all-negative, zero and tiny ranges."""
    a = torch.randn(shape) * 4
    b = torch.randn(shape) * 4
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    flat_lo, flat_hi = lo.view(-1), hi.view(-1)
    specials = [(0.0, 0.0), (1.0, 2.0), (-3.0, -1.0), (-1e-9, 1e-9), (-1e30, 1e30), (-5.0, 0.0)]
    for i, (u, v) in enumerate(specials[: flat_lo.numel()]):
        flat_lo[i], flat_hi[i] = u, v
    return lo.to(dtype), hi.to(dtype)


RANGE_OVERRIDES = [
    pytest.param(None, None, id="observed"),
    pytest.param(-2.0, None, id="range_min"),
    pytest.param(None, 3.0, id="range_max"),
    pytest.param(-1.5, 0.75, id="float_range"),
]


@pytest.mark.parametrize(("range_min", "range_max"), RANGE_OVERRIDES)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize(("quant_min", "quant_max"), int_ranges())
def test_choose_qparams_int(
    quant_min: int,
    quant_max: int,
    symmetric: bool,
    range_min: float | None,
    range_max: float | None,
) -> None:
    lo, hi = observed_range((6, 5), torch.float32)
    got = ops.choose_qparams_int(lo, hi, quant_min, quant_max, symmetric, range_min, range_max)
    want = ref.choose_qparams_int(lo, hi, quant_min, quant_max, symmetric, range_min, range_max)
    for g, w in zip(got, want, strict=True):
        assert_bitexact(g, w)


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_choose_qparams_int_dtypes(dtype: torch.dtype, symmetric: bool) -> None:
    """scale / minval come back in min's dtype (computed in float32); zero_point is int32."""
    lo, hi = observed_range((4, 1, 3), dtype)
    scale, zp, minval = ops.choose_qparams_int(lo, hi, -128, 127, symmetric)
    assert scale.dtype == dtype and minval.dtype == dtype and zp.dtype == torch.int32
    assert scale.shape == lo.shape
    want = ref.choose_qparams_int(lo, hi, -128, 127, symmetric)
    for g, w in zip((scale, zp, minval), want, strict=True):
        assert_bitexact(g, w)


def test_choose_qparams_int_documented_values() -> None:
    """behaviour.md §3 spelled out: int8 sym max_abs/127.5, sym_clip /127, uint8 zp 128, ..."""
    lo, hi = torch.tensor([-2.0]), torch.tensor([1.0])
    s, zp, mv = ops.choose_qparams_int(lo, hi, -128, 127, True)
    assert s.item() == pytest.approx(2.0 / 127.5) and zp.item() == 0 and mv.item() == -2.0
    s, zp, _ = ops.choose_qparams_int(lo, hi, -127, 127, True)
    assert s.item() == pytest.approx(2.0 / 127) and zp.item() == 0
    s, zp, _ = ops.choose_qparams_int(lo, hi, 0, 255, True)
    assert s.item() == pytest.approx(2.0 / 127.5) and zp.item() == 128
    s, zp, _ = ops.choose_qparams_int(lo, hi, 0, 15, True)
    assert s.item() == pytest.approx(2.0 / 7.5) and zp.item() == 8
    s, zp, mv = ops.choose_qparams_int(lo, hi, 0, 255, False)
    assert s.item() == pytest.approx(3.0 / 255) and zp.item() == round(2.0 / (3.0 / 255))
    assert mv.item() == -2.0
    # Widening to include 0, and the eps floor for an all-zero range.
    s, zp, mv = ops.choose_qparams_int(torch.tensor([1.0]), torch.tensor([2.0]), 0, 255, False)
    assert s.item() == pytest.approx(2.0 / 255) and zp.item() == 0 and mv.item() == 0.0
    s, _, _ = ops.choose_qparams_int(torch.zeros(1), torch.zeros(1), -128, 127, True)
    assert s.item() == ref.F32_EPS


def test_choose_qparams_int_nan_range() -> None:
    lo = torch.tensor([float("nan"), -1.0])
    hi = torch.tensor([1.0, float("nan")])
    for symmetric in (True, False):
        got = ops.choose_qparams_int(lo, hi, 0, 255, symmetric)
        want = ref.choose_qparams_int(lo, hi, 0, 255, symmetric)
        for g, w in zip(got, want, strict=True):
            assert_bitexact(g, w)
        assert torch.isnan(got[0]).all()


@pytest.mark.parametrize(("range_min", "range_max"), RANGE_OVERRIDES)
@pytest.mark.parametrize("e8m0", [False, True], ids=["fp32_scale", "e8m0"])
@pytest.mark.parametrize("fmt", FLOAT_FORMATS, ids=str)
@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
def test_choose_qparams_float(
    dtype: torch.dtype,
    fmt: torch.dtype,
    e8m0: bool,
    range_min: float | None,
    range_max: float | None,
) -> None:
    lo, hi = observed_range((7, 3), dtype)
    got = ops.choose_qparams_float(lo, hi, fmt, e8m0, range_min, range_max)
    want = ref.choose_qparams_float(lo, hi, fmt, e8m0, range_min, range_max)
    assert_bitexact(got, want)
    assert got.dtype == (torch.float32 if e8m0 else dtype)


@pytest.mark.parametrize("fmt", FLOAT_FORMATS, ids=str)
def test_e8m0_rule_is_power_of_two_floor(fmt: torch.dtype) -> None:
    """scale = 2^(floor(log2 max_abs) - emax), clamped to [2^-127 -> 2^-126, ...]."""
    emax = ref.FLOAT_FORMATS[fmt][1]
    max_abs = torch.tensor([1.0, 1.5, 3.99, 448.0, 1e-3, 1e-38, 0.0, 3e38])
    s = ops.choose_qparams_float(-max_abs, max_abs, fmt, True)
    for m, got in zip(max_abs.tolist(), s.tolist(), strict=True):
        e = math.frexp(m)[1] - 1 if m > 0 else -127
        want = max(2.0 ** max(e - emax, -127), 2.0**-126)
        assert got == want, (m, got, want)
    # the scaled maximum lands in [2^emax, 2^(emax+1)): FP4 max 6 = 1.5 * 2^2
    assert torch.all(max_abs[:4] / s[:4] < 2.0 ** (emax + 1))


# ---- format_range -------------------------------------------------------------------------


@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("dtype", [*ref.INT_DTYPES, *FLOAT_FORMATS], ids=str)
def test_format_range(dtype: torch.dtype, narrow: bool) -> None:
    got = ops.format_range(dtype, narrow)
    assert got == list(ref.dtype_range(dtype, narrow))
    if dtype in FLOAT_FORMATS and dtype != torch.float4_e2m1fn_x2:
        assert got == [-torch.finfo(dtype).max, torch.finfo(dtype).max]


def test_format_range_default_is_not_narrow() -> None:
    assert ops.format_range(torch.int8) == [-128.0, 127.0]
    assert ops.format_range(torch.int8, True) == [-127.0, 127.0]


def test_format_range_rejects_other_dtypes() -> None:
    with pytest.raises(ValueError, match=r"format_range: dtype is .*allowed: torch\.int8"):
        ops.format_range(torch.float32)
