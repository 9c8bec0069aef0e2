"""coreai_opt.fake_quantize_float (FP8 E4M3FN / E5M2, FP4 E2M1) and its STE backward."""

from __future__ import annotations

import pytest
import reference as ref
import torch
from ops_cases import (
    GRANULARITIES,
    INPUT_DTYPES,
    assert_same_bits,
    random_scale,
    sprinkle_specials,
)

ops = torch.ops.coreai_opt

FORMATS = [torch.float8_e4m3fn, torch.float8_e5m2, torch.float4_e2m1fn_x2]


def assert_bitexact(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same dtype, shape and bits (NaN equals NaN; +0 equals -0)."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def float_input(x_shape: tuple[int, ...], scale: torch.Tensor, fmt: torch.dtype) -> torch.Tensor:
    """float32 x whose x / s covers the format's whole range (log-uniform), with specials."""
    fmax = ref.FLOAT_FORMATS[fmt][0]
    s = ref.expand_qparam(scale, x_shape)
    mag = torch.exp2(torch.rand(x_shape) * 30 - 24) * fmax * 1.5
    sign = torch.where(torch.rand(x_shape) < 0.5, -1.0, 1.0)
    return sprinkle_specials(sign * mag * s, s, 2 * fmax, rounding_ties=False)


def run_case(
    x_shape: tuple[int, ...], scale: torch.Tensor, dtype: torch.dtype, fmt: torch.dtype
) -> None:
    """Forward and backward of one case against the reference."""
    x = float_input(x_shape, scale.float(), fmt).to(dtype)
    y = ops.fake_quantize_float(x, scale, fmt)
    assert_bitexact(y, ref.fake_quantize_float(x, scale, fmt))
    g = torch.randn(x_shape, dtype=dtype)
    gx = ops.fake_quantize_float_backward(g, x, scale, fmt)
    assert_bitexact(gx, ref.ste_grad(g, ref.float_mask(x, scale, fmt), dtype))


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize(("x_shape", "q_shape"), GRANULARITIES)
def test_granularities(
    x_shape: tuple[int, ...], q_shape: tuple[int, ...], fmt: torch.dtype, dtype: torch.dtype
) -> None:
    run_case(x_shape, random_scale(q_shape), dtype, fmt)


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize(("x_shape", "q_shape"), [((64, 128), (64, 4)), ((5, 33), (5, 1))])
def test_e8m0_scales(
    x_shape: tuple[int, ...], q_shape: tuple[int, ...], fmt: torch.dtype, dtype: torch.dtype
) -> None:
    """float8_e8m0fnu scales decode to powers of two."""
    exps = torch.randint(-12, 4, q_shape).to(torch.float32)
    scale = torch.exp2(exps).to(torch.float8_e8m0fnu)
    assert torch.equal(scale.float(), torch.exp2(exps))
    run_case(x_shape, scale, dtype, fmt)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_every_grid_point_and_midpoint(fmt: torch.dtype) -> None:
    """Every representable value, every midpoint (ties to even) and nudges around them."""
    fmax = ref.FLOAT_FORMATS[fmt][0]
    if fmt == torch.float4_e2m1fn_x2:
        grid = torch.tensor(ref.E2M1_GRID)
    else:
        codes = torch.arange(256, dtype=torch.uint8).view(fmt).float()
        grid = codes[torch.isfinite(codes) & (codes >= 0)].unique()
    mids = (grid[1:] + grid[:-1]) / 2
    v = torch.cat([grid, mids, torch.nextafter(mids, grid[1:]), torch.nextafter(mids, grid[:-1])])
    v = torch.cat([v, -v, torch.tensor([fmax * 1.25, -fmax * 4])])
    for scale in (torch.tensor(1.0), torch.tensor(0.125)):
        x = v * scale
        y = ops.fake_quantize_float(x, scale, fmt)
        assert_bitexact(y, ref.fake_quantize_float(x, scale, fmt))
    y = ops.fake_quantize_float(grid, torch.tensor(1.0), fmt)
    assert torch.equal(y, grid)  # representable values are fixed points


def test_e2m1_reference_rounding() -> None:
    """The FP4 reference itself: ties go to the even code, saturation at 6, sign kept."""
    v = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, -0.1, -5.5, 0.3])
    want = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, -0.0, -6.0, 0.5])
    got = ref.round_e2m1(torch.clamp(v, -6, 6))
    assert torch.equal(got, want)
    assert torch.signbit(got[8])


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_nan_inf_rule(fmt: torch.dtype) -> None:
    fmax = ref.FLOAT_FORMATS[fmt][0]
    scale = torch.tensor(0.5)
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0])
    y = ops.fake_quantize_float(x, scale, fmt)
    assert torch.isnan(y[0])
    assert y[1].item() == fmax * 0.5 and y[2].item() == -fmax * 0.5
    gx = ops.fake_quantize_float_backward(torch.ones(4), x, scale, fmt)
    assert gx.tolist() == [0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_non_contiguous(layout: str) -> None:
    base = torch.randn(40, 34) * 100
    x = base.t() if layout == "transposed" else base[1::2, 3:30:3]
    scale = random_scale((x.shape[0], 1))
    y = ops.fake_quantize_float(x, scale, torch.float8_e4m3fn)
    assert_bitexact(y, ref.fake_quantize_float(x.contiguous(), scale, torch.float8_e4m3fn))
    g = torch.randn(x.shape[1], x.shape[0]).t()
    gx = ops.fake_quantize_float_backward(g, x, scale, torch.float8_e4m3fn)
    mask = ref.float_mask(x, scale, torch.float8_e4m3fn)
    assert_bitexact(gx, ref.ste_grad(g.contiguous(), mask, torch.float32))


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("q_shape", [(), (1, 1), (1, 5)])
def test_empty(q_shape: tuple[int, ...], fmt: torch.dtype) -> None:
    x = torch.empty(0, 5, dtype=torch.float16)
    y = ops.fake_quantize_float(x, random_scale(q_shape), fmt)
    assert y.shape == (0, 5) and y.dtype == torch.float16


def test_zero_dim_scale_is_per_tensor() -> None:
    x = torch.randn(3, 4, 5) * 30
    y0 = ops.fake_quantize_float(x, torch.tensor(0.07), torch.float8_e5m2)
    y1 = ops.fake_quantize_float(x, torch.tensor(0.07).reshape(1, 1, 1), torch.float8_e5m2)
    assert_bitexact(y0, y1)
    assert_bitexact(y0, ref.fake_quantize_float(x, torch.tensor(0.07), torch.float8_e5m2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_power_of_two_scales_at_the_float32_extremes(fmt: torch.dtype, dtype: torch.dtype) -> None:
    """Power-of-two scales take x * (1 / s) on CPU: same bits as x / s from 2^-149 to 2^127,
    including quotients that underflow to float32 subnormals or overflow to inf."""
    exps = torch.tensor([-149, -127, -126, -125, -100, -60, -1, 0, 1, 60, 100, 126, 127]).reshape(
        -1, 1
    )
    scale = torch.exp2(exps.to(torch.float32))
    n = 96  # several vector pairs plus a tail per row
    mant = torch.rand(len(exps), n) * 2 - 1
    shift = torch.randint(-30, 30, (len(exps), n)).to(torch.float32)
    x = (mant * torch.exp2(shift) * scale).to(dtype)
    x[:, 0] = float("nan")
    x[:, 1] = float("inf")
    x[:, 2] = -0.0
    x[:, 3] = torch.finfo(dtype).tiny / 4  # subnormal input
    x[:, 4] = -torch.finfo(dtype).max
    y = ops.fake_quantize_float(x, scale, fmt)
    assert_same_bits(y, ref.fake_quantize_float(x, scale, fmt))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_every_grid_tie_rounds_to_even(fmt: torch.dtype, dtype: torch.dtype) -> None:
    """The midpoints between neighbouring format values (and their neighbours one float32 ulp
    away) round as the reference does, in every binade, with a per-tensor and a per-block
    power-of-two scale and a non-power-of-two scale."""
    fmax = ref.FLOAT_FORMATS[fmt][0]
    grid = torch.unique(ref.round_to_format(torch.linspace(0, fmax, 20001), fmt))
    mids = (grid[:-1] + grid[1:]) / 2
    pts = torch.cat([mids, torch.nextafter(mids, mids + 1), torch.nextafter(mids, mids - 1)])
    pts = torch.cat([pts, -pts])
    pts = pts[: (len(pts) // 32) * 32].reshape(-1, 32)
    for scale in (torch.tensor(0.25), torch.exp2(torch.randint(-8, 8, (pts.shape[0], 1)).float())):
        x = (pts * scale).to(dtype)
        assert_same_bits(
            ops.fake_quantize_float(x, scale, fmt), ref.fake_quantize_float(x, scale, fmt)
        )
    for scale in (torch.tensor(0.3), torch.tensor(0.375), torch.tensor(1.0 + 2.0**-23)):
        x = (pts * scale).to(dtype)
        assert_same_bits(
            ops.fake_quantize_float(x, scale, fmt), ref.fake_quantize_float(x, scale, fmt)
        )
