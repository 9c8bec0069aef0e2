"""coreai_opt.fake_quantize_lsq and fake_quantize_lsq_backward (learnable scale / zero point)."""

from __future__ import annotations

import pytest
import reference as ref
import torch
from ops_cases import GRANULARITIES, INPUT_DTYPES, int_input, random_scale

ops = torch.ops.coreai_opt


def assert_bitexact(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same dtype, shape and bits (NaN equals NaN; +0 equals -0)."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def lsq_case(
    x_shape: tuple[int, ...], q_shape: tuple[int, ...], quant_min: int, quant_max: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, scale, float zero_point); zero points are off-grid and partly outside the range."""
    scale = random_scale(q_shape)
    span = quant_max - quant_min
    zp = torch.rand(q_shape) * (span + 4) + quant_min - 2
    x = int_input(x_shape, scale, quant_min, quant_max)
    return x, scale, zp


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize(("x_shape", "q_shape"), GRANULARITIES)
def test_forward_and_backward(
    x_shape: tuple[int, ...], q_shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    x, scale, zp = lsq_case(x_shape, q_shape, 0, 15)
    x = x.to(dtype)
    y = ops.fake_quantize_lsq(x, scale, zp, 0, 15, 1.0)
    assert_bitexact(y, ref.fake_quantize_lsq(x, scale, zp, 0, 15))
    g = torch.randn(x_shape, dtype=dtype)
    g.view(-1)[-1] = 0.0  # the NaN element: keep the sums finite below
    xf = x.clone()
    xf.view(-1)[-1] = 0.0
    dx, ds, dz = ops.fake_quantize_lsq_backward(g, xf, scale, zp, 0, 15, 0.5)
    rdx, rds, rdz = ref.lsq_backward(g, xf, scale, zp, 0, 15, 0.5)
    assert_bitexact(dx, rdx)
    assert ds.dtype == scale.dtype and dz.dtype == zp.dtype
    assert ds.shape == scale.shape and dz.shape == zp.shape
    torch.testing.assert_close(ds, rds, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dz, rdz, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("qparam_dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_qparam_dtypes(qparam_dtype: torch.dtype) -> None:
    """dscale / dzero_point come back in the dtype of scale / zero_point."""
    x, scale, zp = lsq_case((6, 40), (6, 1), -128, 127)
    scale, zp = scale.to(qparam_dtype), zp.to(qparam_dtype)
    x.view(-1)[-1] = 1.0
    g = torch.randn(6, 40)
    dx, ds, dz = ops.fake_quantize_lsq_backward(g, x, scale, zp, -128, 127, 2.0)
    rdx, rds, rdz = ref.lsq_backward(g, x, scale, zp, -128, 127, 2.0)
    assert_bitexact(dx, rdx)
    assert ds.dtype == qparam_dtype and dz.dtype == qparam_dtype
    tol = 1e-2 if qparam_dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(ds, rds, rtol=tol, atol=tol)
    torch.testing.assert_close(dz, rdz, rtol=tol, atol=tol)


def test_grad_factor_scales_qparam_grads_only() -> None:
    x, scale, zp = lsq_case((4, 50), (1, 50), -8, 7)
    x.view(-1)[-1] = 0.5
    g = torch.randn(4, 50)
    dx1, ds1, dz1 = ops.fake_quantize_lsq_backward(g, x, scale, zp, -8, 7, 1.0)
    dx3, ds3, dz3 = ops.fake_quantize_lsq_backward(g, x, scale, zp, -8, 7, 3.0)
    assert torch.equal(dx1, dx3)
    torch.testing.assert_close(ds3, 3 * ds1)
    torch.testing.assert_close(dz3, 3 * dz1)


def test_nan_input_propagates_into_qparam_grads() -> None:
    """A NaN element gives dx = 0 there and NaN in its qparam's sums, as the tensor formula."""
    x = torch.tensor([[0.1, float("nan")], [0.2, 0.3]])
    scale = torch.tensor([[0.1], [0.1]])
    zp = torch.zeros(2, 1)
    dx, ds, dz = ops.fake_quantize_lsq_backward(torch.ones(2, 2), x, scale, zp, -8, 7, 1.0)
    assert dx[0, 1].item() == 0.0
    assert torch.isnan(ds[0, 0]) and torch.isnan(dz[0, 0])
    assert torch.isfinite(ds[1, 0]) and torch.isfinite(dz[1, 0])


def test_empty() -> None:
    x = torch.empty(0, 4)
    scale, zp = random_scale((1, 4)), torch.zeros(1, 4)
    assert ops.fake_quantize_lsq(x, scale, zp, 0, 15, 1.0).shape == (0, 4)
    dx, ds, dz = ops.fake_quantize_lsq_backward(x, x, scale, zp, 0, 15, 1.0)
    assert dx.shape == (0, 4)
    assert torch.equal(ds, torch.zeros(1, 4)) and torch.equal(dz, torch.zeros(1, 4))


def test_non_contiguous() -> None:
    x, scale, zp = lsq_case((30, 8), (30, 1), -128, 127)
    x.view(-1)[-1] = 0.0
    xt = x.t().contiguous().t()
    assert not xt.is_contiguous()
    g = torch.randn(8, 30).t()
    y = ops.fake_quantize_lsq(xt, scale, zp, -128, 127, 1.0)
    assert_bitexact(y, ref.fake_quantize_lsq(x, scale, zp, -128, 127))
    dx, ds, dz = ops.fake_quantize_lsq_backward(g, xt, scale, zp, -128, 127, 1.0)
    rdx, rds, rdz = ref.lsq_backward(g.contiguous(), x, scale, zp, -128, 127, 1.0)
    assert_bitexact(dx, rdx)
    torch.testing.assert_close(ds, rds, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dz, rdz, rtol=1e-4, atol=1e-4)
