"""Outputs of 16 MiB and more: on AVX2 the CPU kernels write them with streaming stores,
peeling elements until each run's destination is 32-byte aligned. These cases check the
bits of that path: per-tensor runs that start at arbitrary offsets (parallel chunks), rows
and blocks, odd lengths, bfloat16 lane-wise streaming, forward and backward.
"""

from __future__ import annotations

import pytest
import reference as ref
import torch
from ops_cases import assert_same_bits

ops = torch.ops.coreai_opt

STREAM_BYTES = 16 << 20


def large_input(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(shape) * 3
    x.view(-1)[::9973] = float("nan")
    x.view(-1)[5::7919] = -0.0
    out = x.to(dtype)
    assert out.nbytes >= STREAM_BYTES
    return out


# (x shape, scale shape): per-tensor with an odd length (parallel chunks start unaligned),
# per-channel rows, blocks of 32, rows whose length is not a multiple of 8.
LAYOUTS = [
    ((4_194_311,), (1,)),
    ((2048, 2048), (2048, 1)),
    ((2048, 2048), (2048, 64)),
    ((4099, 1031), (4099, 1)),
]


@pytest.mark.parametrize(("x_shape", "q_shape"), LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_int_forward_and_backward(
    x_shape: tuple[int, ...], q_shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    if dtype == torch.bfloat16:
        x_shape = tuple(2 * d if i == 0 else d for i, d in enumerate(x_shape))
        q_shape = tuple(2 * d if i == 0 and d > 1 else d for i, d in enumerate(q_shape))
    torch.manual_seed(0)
    scale = torch.rand(q_shape) * 0.1 + 0.01
    zp = torch.randint(-4, 4, q_shape, dtype=torch.int32)
    x = large_input(x_shape, dtype)
    assert_same_bits(
        ops.fake_quantize_int(x, scale, zp, None, -8, 7),
        ref.fake_quantize_int(x, scale, zp, None, -8, 7),
    )
    g = large_input(x_shape, dtype)
    gx = ops.fake_quantize_int_backward(g, x, scale, zp, None, -8, 7)
    assert_same_bits(gx, ref.ste_grad(g, ref.int_mask(x, scale, zp, None, -8, 7), dtype))


@pytest.mark.parametrize("fmt", [torch.float8_e4m3fn, torch.float4_e2m1fn_x2], ids=str)
@pytest.mark.parametrize("pow2", [True, False])
def test_float_forward(fmt: torch.dtype, pow2: bool) -> None:
    torch.manual_seed(1)
    x = large_input((4099, 1031), torch.float32)
    scale = torch.rand(4099, 1) + 0.1
    if pow2:
        scale = torch.exp2(torch.randint(-3, 3, (4099, 1)).float())
    assert_same_bits(ops.fake_quantize_float(x, scale, fmt), ref.fake_quantize_float(x, scale, fmt))


def test_lsq_backward() -> None:
    """The LSQ backward streams grad_x on long rows; its sums match the float64 reference."""
    torch.manual_seed(2)
    x = torch.randn(4099, 1031) * 3
    g = torch.randn(4099, 1031)
    scale = torch.rand(4099, 1) * 0.5 + 0.1
    zp = torch.rand(4099, 1) * 19 - 2
    dx, ds, dz = ops.fake_quantize_lsq_backward(g, x, scale, zp, 0, 15, 0.5)
    rdx, rds, rdz = ref.lsq_backward(g, x, scale, zp, 0, 15, 0.5)
    assert_same_bits(dx, rdx)
    torch.testing.assert_close(ds, rds, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dz, rdz, rtol=1e-4, atol=1e-4)
