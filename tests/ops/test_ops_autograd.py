"""Autograd of the ops: STE = grad * mask exactly, LSQ gradients, gradcheck where meaningful."""

from __future__ import annotations

import math

import pytest
import reference as ref
import torch
from ops_cases import FusedFormat, fresh_fused_state, fused_kwargs, int_input, random_scale

ops = torch.ops.coreai_opt

GRAD_DTYPES = [torch.float32, torch.bfloat16, torch.float64]
FLOAT_FORMATS = [torch.float8_e4m3fn, torch.float8_e5m2, torch.float4_e2m1fn_x2]


def assert_bitexact(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same dtype, shape and bits (NaN equals NaN; +0 equals -0)."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


# ---- STE: the gradient is exactly grad * mask ---------------------------------------------


@pytest.mark.parametrize("dtype", GRAD_DTYPES, ids=str)
@pytest.mark.parametrize("formulation", ["zp", "zp_none", "minval"])
def test_int_ste(formulation: str, dtype: torch.dtype) -> None:
    scale = random_scale((5, 1))
    zp = torch.randint(-8, 8, (5, 1), dtype=torch.int32) if formulation == "zp" else None
    mv = -torch.rand(5, 1) if formulation == "minval" else None
    x = int_input((5, 40), scale, -8, 7).to(dtype).requires_grad_()
    y = ops.fake_quantize_int(x, scale, zp, mv, -8, 7)
    assert y.requires_grad
    assert_bitexact(y.detach(), ref.fake_quantize_int(x.detach(), scale, zp, mv, -8, 7))
    g = torch.randn(5, 40, dtype=dtype)
    y.backward(g)
    mask = ref.int_mask(x.detach(), scale, zp, mv, -8, 7)
    assert_bitexact(x.grad, ref.ste_grad(g, mask, dtype))
    assert not mask.all() and mask.any()


@pytest.mark.parametrize("dtype", GRAD_DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FLOAT_FORMATS, ids=str)
def test_float_ste(fmt: torch.dtype, dtype: torch.dtype) -> None:
    fmax = ref.FLOAT_FORMATS[fmt][0]
    scale = random_scale((1, 24))
    x = (torch.randn(6, 24) * fmax * scale).to(dtype)
    x[0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    x.requires_grad_()
    y = ops.fake_quantize_float(x, scale, fmt)
    g = torch.randn(6, 24, dtype=dtype)
    y.backward(g)
    mask = ref.float_mask(x.detach(), scale, fmt)
    assert_bitexact(x.grad, ref.ste_grad(g, mask, dtype))
    assert x.grad[0, :3].tolist() == [0.0, 0.0, 0.0]


def test_no_grad_to_qparams() -> None:
    """STE ops give no gradient to scale / zero point / minval, even when they require it."""
    x = torch.randn(4, 8, requires_grad=True)
    scale = random_scale((4, 1)).requires_grad_()
    mv = (-torch.rand(4, 1)).requires_grad_()
    y = ops.fake_quantize_int(x, scale, None, mv, 0, 15) + ops.fake_quantize_float(
        x, scale, torch.float8_e4m3fn
    )
    y.sum().backward()
    assert x.grad is not None
    assert scale.grad is None and mv.grad is None


@pytest.mark.parametrize("dtype", GRAD_DTYPES, ids=str)
@pytest.mark.parametrize(("x_shape", "q_shape"), [((6, 40), (6, 1)), ((4, 64), (1, 2)), ((9,), ())])
def test_lsq_grads(x_shape: tuple[int, ...], q_shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """dx, dscale, dzero_point through autograd match the analytic LSQ formula."""
    scale = random_scale(q_shape)
    zp = torch.rand(q_shape) * 18 - 1
    x = int_input(x_shape, scale, 0, 15)
    x.view(-1)[-1] = 0.0
    x = x.to(dtype).requires_grad_()
    scale_p = scale.clone().requires_grad_()
    zp_p = zp.clone().requires_grad_()
    y = ops.fake_quantize_lsq(x, scale_p, zp_p, 0, 15, 0.25)
    assert_bitexact(y.detach(), ref.fake_quantize_lsq(x.detach(), scale, zp, 0, 15))
    g = torch.randn(x_shape, dtype=dtype)
    y.backward(g)
    rdx, rds, rdz = ref.lsq_backward(g, x.detach(), scale, zp, 0, 15, 0.25)
    assert_bitexact(x.grad, rdx)
    torch.testing.assert_close(scale_p.grad, rds, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(zp_p.grad, rdz, rtol=1e-4, atol=1e-4)


def test_fused_ste_uses_the_step_qparams() -> None:
    """Backward of a step uses the qparams of that step, even after the state moved on."""
    state = fresh_fused_state([4, 1])
    on = torch.tensor([1], dtype=torch.uint8)
    fmt = FusedFormat(torch.int8, -128, 127, symmetric=False)
    versions = [t._version for t in state]
    x1 = (torch.randn(4, 32) * 3).requires_grad_()
    y1 = ops.fused_fake_quantize(**fused_kwargs(x1, on, on, state, [1, 32], fmt, "static"))
    assert [t._version for t in state] != versions
    scale1, zp1 = state[2].clone(), state[3].clone()
    x2 = torch.randn(4, 32) * 0.01
    ops.fused_fake_quantize(**fused_kwargs(x2, on, on, state, [1, 32], fmt, "static"))
    assert not torch.equal(scale1, state[2])
    g = torch.randn(4, 32)
    x1_wide = x1.detach().clone()
    y1.backward(g)
    mask = ref.int_mask(x1_wide, scale1, zp1, None, -128, 127)
    assert_bitexact(x1.grad, ref.ste_grad(g, mask, torch.float32))


def test_fused_fake_quant_off_passes_grad_through() -> None:
    state = fresh_fused_state([1, 1])
    x = (torch.randn(3, 5) * 1000).requires_grad_()
    off = torch.tensor(False), torch.tensor(False)
    fmt = FusedFormat(torch.float8_e4m3fn, 0, 0, symmetric=True)
    y = ops.fused_fake_quantize(**fused_kwargs(x, *off, state, [3, 5], fmt, "static"))
    g = torch.randn(3, 5)
    y.backward(g)
    assert torch.equal(x.grad, g)


def test_non_differentiable_ops() -> None:
    """Observation outputs never require grad; mutated state gets a new version."""
    x = torch.randn(4, 8, requires_grad=True)
    lo, hi = ops.minmax(x, [1, 8])
    assert not lo.requires_grad and not hi.requires_grad
    s, _zp, mv = ops.choose_qparams_int(lo, hi, -128, 127, True)
    assert not s.requires_grad and not mv.requires_grad
    rmin, rmax = torch.full((4, 1), math.inf), torch.full((4, 1), -math.inf)
    v = (rmin._version, rmax._version)
    ops.update_range(x, rmin, rmax, [1, 8], "static")
    assert rmin._version > v[0] and rmax._version > v[1]


# ---- gradcheck ----------------------------------------------------------------------------


def test_gradcheck_int_ste() -> None:
    """With eps >> scale, finite differences see slope 1 inside the range and 0 outside."""
    s = 2.0**-10
    scale = torch.tensor([[s]], dtype=torch.float64)
    inside = torch.linspace(-100 * s, 200 * s, 10, dtype=torch.float64)
    outside = torch.tensor([-1.0, -0.5, 0.6, 2.0], dtype=torch.float64)
    x = torch.cat([inside, outside]).reshape(2, 7).requires_grad_()
    eps = 8 * s

    def f(x: torch.Tensor) -> torch.Tensor:
        return ops.fake_quantize_int(x, scale.expand(1, 1), None, None, -128, 255)

    assert torch.autograd.gradcheck(f, (x,), eps=eps, atol=s / (2 * eps) + 1e-3, rtol=0)


def test_gradcheck_float_ste() -> None:
    """FP8 E4M3: x / s in [1, 2) has spacing 1/8, eps = s/2; clipped values have slope 0."""
    scale = torch.tensor(0.25, dtype=torch.float64)
    inside = (1.2 + 0.6 * torch.rand(8, dtype=torch.float64)) * scale
    outside = torch.tensor([600.0, -700.0, 1e4, -2e3], dtype=torch.float64) * scale
    x = torch.cat([inside, -inside, outside]).requires_grad_()
    eps = 0.5 * float(scale)

    def f(x: torch.Tensor) -> torch.Tensor:
        return ops.fake_quantize_float(x, scale, torch.float8_e4m3fn)

    assert torch.autograd.gradcheck(f, (x,), eps=eps, atol=0.126 / 0.5 + 1e-3, rtol=0)


def test_gradcheck_lsq_clipped_region() -> None:
    """Where every element clips, y = (qmin|qmax - zp_r) * s: LSQ's dscale is the derivative."""
    x = torch.tensor([[5.0, -7.0, 9.0], [-3.0, 4.0, 100.0]], dtype=torch.float64)
    x.requires_grad_()
    scale = torch.tensor([[0.1], [0.2]], dtype=torch.float64, requires_grad=True)
    zp = torch.tensor([[3.3], [8.0]], dtype=torch.float64)

    def f(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return ops.fake_quantize_lsq(x, scale, zp, 0, 15, 1.0)

    # The op computes in float32: eps 1e-3 keeps the rounding of s below the tolerance.
    assert torch.autograd.gradcheck(f, (x, scale), eps=1e-3, atol=1e-3, rtol=1e-3)


def test_gradcheck_lsq_grad_factor_clipped_region() -> None:
    """grad_factor multiplies the scale gradient (checked against finite differences / 1)."""
    x = torch.tensor([[5.0, -7.0, 9.0]], dtype=torch.float64)
    scale = torch.tensor([[0.1]], dtype=torch.float64, requires_grad=True)
    zp = torch.tensor([[3.0]], dtype=torch.float64)
    y = ops.fake_quantize_lsq(x, scale, zp, 0, 15, 0.5)
    (ds,) = torch.autograd.grad(y.sum(), scale)
    # y = (15 - 3) * s for 5 and 9, (0 - 3) * s for -7: d/ds = 12 + 12 - 3 = 21.
    want = ((15 - 3) * 2 + (0 - 3)) * 0.5
    assert ds.item() == pytest.approx(want)
