"""The other kernels of each op: Meta (shapes / dtypes), the CompositeExplicitAutograd
reference (what CUDA / MPS / other devices run; called here on CPU tensors) and CUDA."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import reference as ref
import torch
from ops_cases import (
    GRANULARITIES,
    FusedFormat,
    fresh_fused_state,
    fused_backward_kwargs,
    fused_kwargs,
    int_input,
    random_scale,
    schema_args,
)

ops = torch.ops.coreai_opt

FLOAT_FORMATS = [torch.float8_e4m3fn, torch.float8_e5m2, torch.float4_e2m1fn_x2]


def assert_bitexact(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same dtype, shape and bits (NaN equals NaN; +0 equals -0)."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def composite(name: str) -> Callable[..., object]:
    """The op's CompositeExplicitAutograd kernel, called directly on CPU tensors.

    A device with no kernel of its own (PrivateUse1 here) gets the CompositeExplicitAutograd
    kernel in its dispatch-table slot; calling that slot bypasses the CPU kernel.
    """
    qualified = f"coreai_opt::{name}"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CompositeExplicitAutograd")
    kernel = torch._C._dispatch_get_computed_kernel_for_dispatch_key(
        qualified, torch._C.DispatchKey.PrivateUse1
    )
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    return lambda *args: kernel.call_boxed(keys, *args)


# ---- CompositeExplicitAutograd reference == CPU kernels, bit for bit ------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize(("x_shape", "q_shape"), GRANULARITIES)
def test_composite_fake_quantize(
    x_shape: tuple[int, ...], q_shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    scale = random_scale(q_shape)
    zp = torch.randint(-20, 20, q_shape, dtype=torch.int32)
    mv = -torch.rand(q_shape)
    x = int_input(x_shape, scale, -128, 127).to(dtype)
    g = torch.randn(x_shape, dtype=dtype)
    for z, m in ((zp, None), (None, mv), (None, None)):
        args = (x, scale, z, m, -128, 127)
        assert_bitexact(composite("fake_quantize_int")(*args), ops.fake_quantize_int(*args))
        assert_bitexact(
            composite("fake_quantize_int_backward")(g, *args),
            ops.fake_quantize_int_backward(g, *args),
        )
    for fmt in FLOAT_FORMATS:
        xf = x * 40
        assert_bitexact(
            composite("fake_quantize_float")(xf, scale, fmt),
            ops.fake_quantize_float(xf, scale, fmt),
        )
        assert_bitexact(
            composite("fake_quantize_float_backward")(g, xf, scale, fmt),
            ops.fake_quantize_float_backward(g, xf, scale, fmt),
        )


@pytest.mark.parametrize("fmt", FLOAT_FORMATS, ids=str)
def test_composite_e8m0_scale(fmt: torch.dtype) -> None:
    scale = torch.exp2(torch.randint(-8, 3, (6, 4)).float()).to(torch.float8_e8m0fnu)
    x = torch.randn(6, 64) * 30
    x[0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    assert_bitexact(
        composite("fake_quantize_float")(x, scale, fmt), ops.fake_quantize_float(x, scale, fmt)
    )


@pytest.mark.parametrize(("x_shape", "q_shape"), GRANULARITIES[:12])
def test_composite_lsq(x_shape: tuple[int, ...], q_shape: tuple[int, ...]) -> None:
    scale = random_scale(q_shape)
    zp = torch.rand(q_shape) * 20 - 2
    x = int_input(x_shape, scale, 0, 15)
    x.view(-1)[-1] = 0.0
    g = torch.randn(x_shape)
    assert_bitexact(
        composite("fake_quantize_lsq")(x, scale, zp, 0, 15, 1.0),
        ops.fake_quantize_lsq(x, scale, zp, 0, 15, 1.0),
    )
    got = composite("fake_quantize_lsq_backward")(g, x, scale, zp, 0, 15, 0.5)
    want = ops.fake_quantize_lsq_backward(g, x, scale, zp, 0, 15, 0.5)
    assert_bitexact(got[0], want[0])
    for a, b in zip(got[1:], want[1:], strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["static", "moving_average", "global_minmax"])
@pytest.mark.parametrize(
    ("x_shape", "block"), [((13, 7), [13, 7]), ((6, 40), [1, 40]), ((64, 128), [1, 32])]
)
def test_composite_observe(x_shape: tuple[int, ...], block: list[int], method: str) -> None:
    x = torch.randn(x_shape) * 3
    x[0, 0] = float("nan") if method == "static" else 1.0
    lo, hi = composite("minmax")(x, block)
    wlo, whi = ops.minmax(x, block)
    assert_bitexact(lo, wlo)
    assert_bitexact(hi, whi)
    q = list(wlo.shape)
    got = [torch.full(q, math.inf), torch.full(q, -math.inf)]
    want = [t.clone() for t in got]
    for step in range(2):
        xs = x + step
        composite("update_range")(xs, *got, block, method, 0.2)
        ops.update_range(xs, *want, block, method, 0.2)
        assert_bitexact(got[0], want[0])
        assert_bitexact(got[1], want[1])
    for symmetric in (True, False):
        for rng in ((None, None), (-1.0, 2.0)):
            a = composite("choose_qparams_int")(wlo, whi, 0, 255, symmetric, *rng)
            b = ops.choose_qparams_int(wlo, whi, 0, 255, symmetric, *rng)
            for u, v in zip(a, b, strict=True):
                assert_bitexact(u, v)
    for fmt in FLOAT_FORMATS:
        for e8m0 in (False, True):
            assert_bitexact(
                composite("choose_qparams_float")(wlo, whi, fmt, e8m0, None, None),
                ops.choose_qparams_float(wlo, whi, fmt, e8m0, None, None),
            )


@pytest.mark.parametrize(
    ("dtype", "qmin", "qmax", "symmetric", "use_minval", "e8m0"),
    [
        (torch.int8, -128, 127, True, False, False),
        (torch.uint4, 0, 15, False, True, False),
        (torch.float8_e4m3fn, 0, 0, True, False, False),
        (torch.float4_e2m1fn_x2, 0, 0, True, False, True),
    ],
)
def test_composite_fused(
    dtype: torch.dtype, qmin: int, qmax: int, symmetric: bool, use_minval: bool, e8m0: bool
) -> None:
    got, want = fresh_fused_state([4, 2]), fresh_fused_state([4, 2])
    fmt = FusedFormat(dtype, qmin, qmax, symmetric, use_minval, e8m0)
    for obs, fq in ((1, 1), (1, 0), (0, 1)):
        x = torch.randn(4, 64) * 3
        flags = (torch.tensor([obs], dtype=torch.uint8), torch.tensor([bool(fq)]))
        fw = [
            fused_kwargs(x, *flags, state, [1, 32], fmt, "moving_average", 0.3, None, None)
            for state in (got, want)
        ]
        y = composite("fused_fake_quantize")(*schema_args(ops.fused_fake_quantize.default, fw[0]))
        wy = ops.fused_fake_quantize(**fw[1])
        assert_bitexact(y, wy)
        for a, b in zip(got, want, strict=True):
            assert_bitexact(a, b)
        g = torch.randn(4, 64)
        bw = fused_backward_kwargs(g, x, flags[1], want[2:], fmt)
        assert_bitexact(
            composite("fused_fake_quantize_backward")(
                *schema_args(ops.fused_fake_quantize_backward.default, bw)
            ),
            ops.fused_fake_quantize_backward(**bw),
        )


@pytest.mark.parametrize("dtype", list(ref.PACK_BITS), ids=str)
def test_composite_pack(dtype: torch.dtype) -> None:
    packed = torch.randint(0, 256, (5, 8), dtype=torch.uint8)
    values = ops.unpack(packed, dtype)
    assert_bitexact(composite("unpack")(packed, dtype), values)
    assert_bitexact(composite("pack")(values, dtype), packed)
    if dtype == torch.float4_e2m1fn_x2:
        v = torch.randn(3, 16) * 4
        assert_bitexact(composite("pack")(v, dtype), ops.pack(v, dtype))


def test_composite_shape_errors_match_cpu() -> None:
    """The argument checks are shared: the reference names the same problem."""
    x, s = torch.randn(8, 6), torch.full((3, 1), 0.1)
    with pytest.raises(ValueError, match=r"scale of shape \[3, 1\] fits no granularity"):
        composite("fake_quantize_int")(x, s, None, None, -128, 127)
    with pytest.raises(ValueError, match=r"quant_min \(3\) must be smaller"):
        composite("fake_quantize_int")(x, torch.tensor(0.1), None, None, 3, 3)
    with pytest.raises(TypeError, match="x has dtype"):
        composite("fake_quantize_float")(x.int(), torch.tensor(0.1), torch.float8_e4m3fn)


# ---- Meta: shapes and dtypes without data ----------------------------------------------------


def meta_cases() -> list:
    """(name, args builder on a device) pairs covering every op."""
    fmt = torch.float8_e5m2

    def fq_int(d: str) -> tuple:
        return (
            torch.randn(4, 12, dtype=torch.float64, device=d),
            torch.rand(4, 3, device=d) + 0.1,
            None,
            torch.zeros(4, 3, device=d),
            0,
            15,
        )

    def lsq(d: str) -> tuple:
        return (
            torch.randn(4, 12, dtype=torch.bfloat16, device=d),
            torch.rand(1, 12, dtype=torch.float64, device=d) + 0.1,
            torch.zeros(1, 12, dtype=torch.float16, device=d),
            0,
            15,
            1.0,
        )

    def fused(d: str) -> tuple:
        return schema_args(
            ops.fused_fake_quantize.default,
            fused_kwargs(
                torch.randn(4, 12, dtype=torch.float16, device=d),
                torch.tensor(True, device=d),
                torch.tensor(True, device=d),
                [t.to(d) for t in fresh_fused_state([4, 1])],
                [1, 12],
                FusedFormat(torch.int8, -128, 127, symmetric=True),
                "static",
                0.01,
                None,
                None,
            ),
        )

    x16 = lambda d: torch.randn(4, 12, dtype=torch.float16, device=d)  # noqa: E731
    return [
        pytest.param("fake_quantize_int", fq_int, id="fq_int"),
        pytest.param(
            "fake_quantize_int_backward", lambda d: (fq_int(d)[0], *fq_int(d)), id="fq_int_bw"
        ),
        pytest.param(
            "fake_quantize_float",
            lambda d: (x16(d), torch.tensor(0.5, device=d), fmt),
            id="fq_float",
        ),
        pytest.param(
            "fake_quantize_float_backward",
            lambda d: (x16(d).float(), x16(d), torch.tensor(0.5, device=d), fmt),
            id="fq_float_bw",
        ),
        pytest.param("fake_quantize_lsq", lsq, id="lsq"),
        pytest.param("fake_quantize_lsq_backward", lambda d: (lsq(d)[0], *lsq(d)), id="lsq_bw"),
        pytest.param("minmax", lambda d: (x16(d), [2, 4]), id="minmax"),
        pytest.param(
            "choose_qparams_int",
            lambda d: (
                -torch.rand(3, 1, dtype=torch.float64, device=d),
                torch.rand(3, 1, dtype=torch.float64, device=d),
                -8,
                7,
                False,
            ),
            id="qparams_int",
        ),
        pytest.param(
            "choose_qparams_float",
            lambda d: (
                -torch.rand(3, 1, dtype=torch.float16, device=d),
                torch.rand(3, 1, dtype=torch.float16, device=d),
                fmt,
                False,
            ),
            id="qparams_float",
        ),
        pytest.param(
            "choose_qparams_float",
            lambda d: (
                -torch.rand(3, 1, dtype=torch.float16, device=d),
                torch.rand(3, 1, dtype=torch.float16, device=d),
                fmt,
                True,
            ),
            id="qparams_float_e8m0",
        ),
        pytest.param("fused_fake_quantize", fused, id="fused"),
        pytest.param(
            "pack", lambda d: (torch.zeros(3, 8, dtype=torch.int8, device=d), torch.int2), id="pack"
        ),
        pytest.param(
            "pack", lambda d: (torch.zeros(3, 8, device=d), torch.float4_e2m1fn_x2), id="pack_fp4"
        ),
        pytest.param(
            "unpack",
            lambda d: (torch.zeros(3, 8, dtype=torch.uint8, device=d), torch.int4),
            id="unpack",
        ),
        pytest.param(
            "unpack",
            lambda d: (torch.zeros(3, 8, dtype=torch.uint8, device=d), torch.float4_e2m1fn_x2),
            id="unpack_fp4",
        ),
    ]


def _flat(out: object) -> list[torch.Tensor]:
    """Tensors of an op's result."""
    return list(out) if isinstance(out, tuple | list) else [out]  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "build"), meta_cases())
def test_meta_matches_cpu(name: str, build: Callable[[str], tuple]) -> None:
    """Meta kernels give the CPU kernels' shapes, dtypes and strides."""
    op = getattr(ops, name)
    cpu = _flat(op(*build("cpu")))
    meta = _flat(op(*build("meta")))
    assert len(cpu) == len(meta)
    for c, m in zip(cpu, meta, strict=True):
        assert m.device.type == "meta"
        assert (m.shape, m.dtype, m.stride()) == (c.shape, c.dtype, c.stride())


def test_meta_shape_errors() -> None:
    """Argument checks run on Meta too (they do not need data)."""
    x = torch.randn(8, 6, device="meta")
    with pytest.raises(ValueError, match=r"scale of shape \[3, 1\] fits no granularity"):
        ops.fake_quantize_int(x, torch.ones(3, 1, device="meta"), None, None, -128, 127)
    with pytest.raises(ValueError, match="does not divide"):
        ops.minmax(x, [1, 4])
    with pytest.raises(ValueError, match="must be a multiple of 4"):
        ops.pack(torch.zeros(2, 6, dtype=torch.int8, device="meta"), torch.int2)


# ---- CUDA ----------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    """The main ops on CUDA give the CPU results bit for bit."""
    scale = random_scale((6, 4))
    zp = torch.randint(-10, 10, (6, 4), dtype=torch.int32)
    x = int_input((6, 128), scale, -128, 127)
    g = torch.randn(6, 128)
    dev = [t.cuda() for t in (x, scale, zp, g)]
    for args_cpu, args_cuda in (((x, scale, zp, None), [*dev[:3], None]),):
        assert_bitexact(
            ops.fake_quantize_int(*args_cuda, -128, 127).cpu(),
            ops.fake_quantize_int(*args_cpu, -128, 127),
        )
        assert_bitexact(
            ops.fake_quantize_int_backward(dev[3], *args_cuda, -128, 127).cpu(),
            ops.fake_quantize_int_backward(g, *args_cpu, -128, 127),
        )
    for fmt in FLOAT_FORMATS:
        assert_bitexact(
            ops.fake_quantize_float(dev[0] * 30, dev[1], fmt).cpu(),
            ops.fake_quantize_float(x * 30, scale, fmt),
        )
    lo, hi = ops.minmax(dev[0].nan_to_num(0, 0, 0), [1, 32])
    wlo, whi = ops.minmax(x.nan_to_num(0, 0, 0), [1, 32])
    assert_bitexact(lo.cpu(), wlo)
    assert_bitexact(hi.cpu(), whi)
    for a, b in zip(
        ops.choose_qparams_int(lo, hi, 0, 255, False),
        ops.choose_qparams_int(wlo, whi, 0, 255, False),
        strict=True,
    ):
        assert_bitexact(a.cpu(), b)
    state_cpu = fresh_fused_state([6, 4])
    state_cuda = [t.cuda() for t in state_cpu]
    flags = [torch.tensor([1], dtype=torch.uint8)] * 2
    fmt = FusedFormat(torch.int8, -128, 127, symmetric=True)
    rest = ([1, 32], fmt, "moving_average", 0.1)
    y = ops.fused_fake_quantize(
        **fused_kwargs(x.nan_to_num(0, 0, 0).cuda(), *[f.cuda() for f in flags], state_cuda, *rest)
    )
    wy = ops.fused_fake_quantize(**fused_kwargs(x.nan_to_num(0, 0, 0), *flags, state_cpu, *rest))
    assert_bitexact(y.cpu(), wy)
    for a, b in zip(state_cuda, state_cpu, strict=True):
        assert_bitexact(a.cpu(), b)
