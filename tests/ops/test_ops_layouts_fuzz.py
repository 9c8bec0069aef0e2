"""Random shapes and granularities (bounded hypothesis profile): the kernels' layout walks,
vector tails and parallel chunk boundaries against the reference."""

from __future__ import annotations

import hypothesis.strategies as st
import reference as ref
import torch
from hypothesis import HealthCheck, given, settings
from ops_cases import block_size_of

ops = torch.ops.coreai_opt

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def assert_bitexact(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same dtype, shape and bits (NaN equals NaN; +0 equals -0)."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """(x shape, qparam shape): each dim shared, per index, or blocked by a divisor."""
    rank = draw(st.integers(1, 4))
    x_shape = [
        draw(st.sampled_from([1, 2, 3, 5, 7, 8, 12, 16, 33, 48, 64, 96])) for _ in range(rank)
    ]
    while torch.Size(x_shape).numel() > 150_000:
        x_shape[draw(st.integers(0, rank - 1))] = 1
    q_shape = []
    for n in x_shape:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        q_shape.append(draw(st.sampled_from(divisors)))
    return x_shape, q_shape


@FUZZ
@given(
    layout=layouts(),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
    transpose=st.booleans(),
)
def test_fuzz_layouts(
    layout: tuple[list[int], list[int]], dtype: torch.dtype, transpose: bool
) -> None:
    x_shape, q_shape = layout
    scale = torch.rand(q_shape) * 0.1 + 0.01
    zp = torch.randint(-3, 4, q_shape, dtype=torch.int32)
    mv = -torch.rand(q_shape)
    x = (torch.randn(x_shape) * 0.2).to(dtype)
    if transpose and len(x_shape) > 1:
        x = x.transpose(0, -1).contiguous().transpose(0, -1)
    g = torch.randn(x_shape, dtype=dtype)
    for z, m in ((zp, None), (None, mv)):
        args = (x, scale, z, m, -8, 7)
        assert_bitexact(ops.fake_quantize_int(*args), ref.fake_quantize_int(*args))
        mask = ref.int_mask(*args)
        assert_bitexact(ops.fake_quantize_int_backward(g, *args), ref.ste_grad(g, mask, dtype))
    xf = x * 100
    assert_bitexact(
        ops.fake_quantize_float(xf, scale, torch.float8_e4m3fn),
        ref.fake_quantize_float(xf, scale, torch.float8_e4m3fn),
    )
    block = block_size_of(x_shape, q_shape)
    lo, hi = ops.minmax(x, block)
    rlo, rhi = ref.minmax(x, block)
    assert_bitexact(lo, rlo)
    assert_bitexact(hi, rhi)
    zpf = zp.float() + 8
    dx, ds, dz = ops.fake_quantize_lsq_backward(g, x, scale, zpf, 0, 15, 1.0)
    rdx, rds, rdz = ref.lsq_backward(g, x, scale, zpf, 0, 15, 1.0)
    assert_bitexact(dx, rdx)
    torch.testing.assert_close(ds, rds, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(dz, rdz, rtol=1e-3, atol=1e-3)
