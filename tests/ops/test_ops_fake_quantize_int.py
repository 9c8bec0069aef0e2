"""coreai_opt.fake_quantize_int and its STE backward against the float32 reference (bit-exact)."""

from __future__ import annotations

import pytest
import reference as ref
import torch
from ops_cases import GRANULARITIES, INPUT_DTYPES, int_input, int_ranges, random_scale

ops = torch.ops.coreai_opt

FORMULATIONS = ["zp", "zp_none", "minval"]


def assert_bitexact(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same dtype, shape and bits (NaN equals NaN; +0 equals -0)."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def offsets(
    formulation: str, q_shape: tuple[int, ...], quant_min: int, quant_max: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(zero_point, minval) arguments of a formulation, random within the range."""
    if formulation == "zp":
        return torch.randint(quant_min, quant_max + 1, q_shape, dtype=torch.int32), None
    if formulation == "minval":
        return None, -torch.rand(q_shape)
    return None, None


def run_case(
    x_shape: tuple[int, ...],
    q_shape: tuple[int, ...],
    dtype: torch.dtype,
    formulation: str,
    quant_min: int,
    quant_max: int,
) -> None:
    """Forward and backward of one case against the reference."""
    scale = random_scale(q_shape)
    zp, mv = offsets(formulation, q_shape, quant_min, quant_max)
    x = int_input(x_shape, scale, quant_min, quant_max).to(dtype)
    y = ops.fake_quantize_int(x, scale, zp, mv, quant_min, quant_max)
    assert_bitexact(y, ref.fake_quantize_int(x, scale, zp, mv, quant_min, quant_max))
    g = torch.randn(x_shape, dtype=dtype)
    gx = ops.fake_quantize_int_backward(g, x, scale, zp, mv, quant_min, quant_max)
    mask = ref.int_mask(x, scale, zp, mv, quant_min, quant_max)
    assert_bitexact(gx, ref.ste_grad(g, mask, dtype))


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize(("quant_min", "quant_max"), int_ranges())
def test_ranges(quant_min: int, quant_max: int, formulation: str, dtype: torch.dtype) -> None:
    run_case((6, 37), (6, 1), dtype, formulation, quant_min, quant_max)


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize(("x_shape", "q_shape"), GRANULARITIES)
def test_granularities(
    x_shape: tuple[int, ...], q_shape: tuple[int, ...], formulation: str, dtype: torch.dtype
) -> None:
    run_case(x_shape, q_shape, dtype, formulation, -128, 127)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_power_of_two_scale_ties(formulation: str) -> None:
    """Exact ties k + 0.5 round half to even (power-of-two scales make x / s exact)."""
    scale = torch.tensor([[0.25], [2.0**-7]])
    zp, mv = offsets(formulation, (2, 1), -8, 7)
    k = torch.arange(-20, 20, dtype=torch.float32) + 0.5
    x = (k * scale).contiguous()
    y = ops.fake_quantize_int(x, scale, zp, mv, -8, 7)
    assert_bitexact(y, ref.fake_quantize_int(x, scale, zp, mv, -8, 7))
    if formulation == "zp_none":
        # round half to even: 0.5 -> 0, 1.5 -> 2, -0.5 -> -0, -1.5 -> -2.
        assert torch.equal(y / scale, torch.clamp(torch.round(k), -8, 7).expand(2, -1))


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_non_contiguous(layout: str, dtype: torch.dtype) -> None:
    base = torch.randn(40, 34, dtype=dtype)
    if layout == "transposed":
        x = base.t()
    elif layout == "sliced":
        x = base[1::2, 3:30:3]
    else:
        x = base[:1].expand(34, 34)
    assert not x.is_contiguous()
    scale = random_scale((1, x.shape[1]))
    zp = torch.randint(-10, 10, (1, x.shape[1]), dtype=torch.int32)
    y = ops.fake_quantize_int(x, scale, zp, None, -128, 127)
    assert_bitexact(y, ref.fake_quantize_int(x.contiguous(), scale, zp, None, -128, 127))
    g = torch.randn(x.shape[1], x.shape[0], dtype=dtype).t()
    gx = ops.fake_quantize_int_backward(g, x, scale, zp, None, -128, 127)
    mask = ref.int_mask(x, scale, zp, None, -128, 127)
    assert_bitexact(gx, ref.ste_grad(g.contiguous(), mask, dtype))


def test_non_contiguous_qparams() -> None:
    """Strided scale / zero_point / minval views give the same result as contiguous ones."""
    x = torch.randn(5, 9)
    scale = random_scale((9, 5)).t()
    zp = torch.randint(-5, 5, (9, 5), dtype=torch.int32).t()
    mv = -torch.rand(9, 5).t()
    y = ops.fake_quantize_int(x, scale, zp, None, -128, 127)
    assert_bitexact(y, ref.fake_quantize_int(x, scale.contiguous(), zp, None, -128, 127))
    y = ops.fake_quantize_int(x, scale, None, mv, -128, 127)
    assert_bitexact(y, ref.fake_quantize_int(x, scale.contiguous(), None, mv, -128, 127))


@pytest.mark.parametrize("q_shape", [(), (1, 1), (1, 5)])
@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
def test_empty(q_shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = torch.empty(0, 5, dtype=dtype)
    scale = random_scale(q_shape)
    y = ops.fake_quantize_int(x, scale, None, None, -128, 127)
    assert y.shape == (0, 5) and y.dtype == dtype
    gx = ops.fake_quantize_int_backward(x, x, scale, None, None, -128, 127)
    assert gx.shape == (0, 5) and gx.dtype == dtype


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_zero_dim_scale_is_per_tensor(formulation: str) -> None:
    x = torch.randn(4, 6, 5)
    scale = torch.tensor(0.03)
    zp, mv = offsets(formulation, (), 0, 15)
    y0 = ops.fake_quantize_int(x, scale, zp, mv, 0, 15)
    ones = (1, 1, 1)
    y1 = ops.fake_quantize_int(
        x,
        scale.reshape(ones),
        None if zp is None else zp.reshape(ones),
        None if mv is None else mv.reshape(ones),
        0,
        15,
    )
    assert_bitexact(y0, y1)
    assert_bitexact(y0, ref.fake_quantize_int(x, scale, zp, mv, 0, 15))


def test_zero_dim_input() -> None:
    x = torch.tensor(0.37)
    y = ops.fake_quantize_int(x, torch.tensor(0.1), None, None, -128, 127)
    assert y.shape == ()
    assert_bitexact(y, ref.fake_quantize_int(x, torch.tensor(0.1), None, None, -128, 127))


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_nan_inf_rule(formulation: str) -> None:
    """NaN in gives NaN out; ±inf saturates to the range ends; the STE mask is 0 for all three."""
    scale = torch.tensor([0.1])
    zp, mv = offsets(formulation, (1,), -4, 3)
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.1])
    y = ops.fake_quantize_int(x, scale, zp, mv, -4, 3)
    o = 0.0 if zp is None else float(zp)
    if mv is None:
        hi, lo = (3 - o) * 0.1, (-4 - o) * 0.1
    else:
        hi, lo = (3 - -4) * 0.1 + float(mv), 0.0 * 0.1 + float(mv)
    assert torch.isnan(y[0])
    assert y[1].item() == pytest.approx(hi) and y[2].item() == pytest.approx(lo)
    assert_bitexact(y, ref.fake_quantize_int(x, scale, zp, mv, -4, 3))
    gx = ops.fake_quantize_int_backward(torch.ones(4), x, scale, zp, mv, -4, 3)
    assert gx[:3].tolist() == [0.0, 0.0, 0.0]


def test_grad_dtype_follows_x() -> None:
    """A float32 grad for a bfloat16 x comes back as bfloat16, computed as grad.to(x.dtype)."""
    x = torch.randn(3, 17, dtype=torch.bfloat16)
    g = torch.randn(3, 17)
    scale = torch.tensor(0.02)
    gx = ops.fake_quantize_int_backward(g, x, scale, None, None, -8, 7)
    mask = ref.int_mask(x, scale, None, None, -8, 7)
    assert_bitexact(gx, ref.ste_grad(g, mask, torch.bfloat16))


@pytest.mark.parametrize("scale_dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_scale_dtypes(scale_dtype: torch.dtype) -> None:
    """Non-float32 scales and minvals are converted to float32 first."""
    x = torch.randn(4, 33)
    scale = random_scale((4, 1)).to(scale_dtype)
    mv = (-torch.rand(4, 1)).to(scale_dtype)
    y = ops.fake_quantize_int(x, scale, None, mv, 0, 255)
    assert_bitexact(y, ref.fake_quantize_int(x, scale, None, mv, 0, 255))
