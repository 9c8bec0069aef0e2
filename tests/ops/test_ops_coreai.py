"""coreai_opt.quantize / dequantize / blockwise_shift_scale: the Core AI export ops.

Checked against a plain-PyTorch formula reference written from the schema comments in
``csrc/ops/coreai_export.cpp`` (including the dtype each step runs in), against the
CompositeExplicitAutograd reference, for Meta shapes, opcheck and argument errors and, where
coreai-torch is installed (``make test`` installs the ``coreai`` extra), bit for bit against
``torch.ops.coreai.quantize / dequantize / constexpr_blockwise_shift_scale`` on every format
coreai-torch 0.4.3 handles.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import pytest
import reference as ref
import torch

from coreai_opt import _ops as cops

ops = torch.ops.coreai_opt

FLOATS = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
FP8 = [torch.float8_e4m3fn, torch.float8_e5m2]
FP4 = torch.float4_e2m1fn_x2
E8M0 = torch.float8_e8m0fnu
INT_FORMATS: dict[torch.dtype, tuple[int, bool]] = {
    torch.int8: (8, True),
    torch.uint8: (8, False),
    **{getattr(torch, f"int{b}"): (b, True) for b in range(1, 8)},
    **{getattr(torch, f"uint{b}"): (b, False) for b in range(1, 8)},
}
"""Every integer format: (bits, signed); codes live in int8 / uint8 containers."""
FLOAT_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0, FP4: 6.0}
NAMES = {d: str(d).removeprefix("torch.") for d in [*INT_FORMATS, *FP8, FP4, *FLOATS, E8M0]}


def qrange(dtype: torch.dtype) -> tuple[int, int]:
    bits, signed = INT_FORMATS[dtype]
    return ref.int_range(bits, signed)


def container(dtype: torch.dtype) -> torch.dtype:
    """int8 for signed integer formats, uint8 for unsigned ones."""
    return torch.int8 if INT_FORMATS[dtype][1] else torch.uint8


# ---- the formula reference --------------------------------------------------------------------


def broadcast(q: torch.Tensor, shape: Sequence[int], axis: int | None) -> torch.Tensor:
    """A qparam viewed against a tensor of `shape`: blockwise when axis is None (q has the
    rank of shape, blocks repeated), else per tensor (one value) or per channel along axis."""
    if axis is None:
        for d, n in enumerate(shape):
            q = q.repeat_interleave(n // q.shape[d], dim=d) if q.shape[d] else q
        return q
    if q.numel() == 1:
        return q.reshape([1] * len(shape))
    view = [1] * len(shape)
    view[axis] = -1
    return q.reshape(view)


def ref_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    out: torch.dtype,
    zp: torch.Tensor | None = None,
    mv: torch.Tensor | None = None,
    axis: int = 0,
) -> torch.Tensor:
    """Integer: clamp(round(x/s)+zp) / clamp(round((x-m)/s)+qmin) in promote_types(x, s),
    x - m in x's dtype, NaN -> 0. Float: clamp(f32(x)/f32(s), ±max) cast (FP4 packed)."""
    s = broadcast(scale, x.shape, axis)
    if out in FLOAT_MAX:
        v = torch.clamp(x.float() / s.float(), -FLOAT_MAX[out], FLOAT_MAX[out])
        return ref.pack(v, FP4) if out == FP4 else v.to(out)
    c = torch.promote_types(x.dtype, scale.dtype)
    v = x - broadcast(mv, x.shape, axis) if mv is not None else x
    t = torch.round(v.to(c) / s.to(c)).double()
    lo, hi = qrange(out)
    if zp is not None:
        t = t + broadcast(zp, x.shape, axis).double()
    elif mv is not None:
        t = t + lo
    return torch.nan_to_num(torch.clamp(t, lo, hi), nan=0.0).to(container(out))


def ref_dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    zp: torch.Tensor | None = None,
    mv: torch.Tensor | None = None,
    axis: int | None = 0,
    input_dtype: torch.dtype | None = None,
    output_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Integer codes in the scale's dtype S, one rounding per operation: (q-zp)*s,
    (q-qmin)*s+m, q*s; float codes S(f32(q) * f32(s)); then cast to output_dtype. E8M0
    scales: output_dtype(f32(q) * f32(s))."""
    fmt = input_dtype or q.dtype
    if fmt == FP4:
        vals = ref.unpack(q.view(torch.uint8), FP4)
    elif fmt in FP8:
        vals = q.float()
    else:
        vals = q.to(torch.int64)
    s = broadcast(scale, vals.shape, axis)
    if scale.dtype == E8M0:
        return (vals.float() * s.float()).to(output_dtype)
    sd = scale.dtype
    if fmt in FLOAT_MAX:
        y = (vals.float() * s.float()).to(sd)
    elif zp is not None:
        y = (vals - broadcast(zp, vals.shape, axis).long()).to(sd) * s
    elif mv is not None:
        y = (vals - qrange(fmt)[0]).to(sd) * s + broadcast(mv, vals.shape, axis)
    else:
        y = vals.to(sd) * s
    return y.to(output_dtype or sd)


# ---- helpers --------------------------------------------------------------------------------


def same(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same dtype, shape and bits; NaN matches NaN whatever its payload in results wider
    than a byte (torch's own float conversions give different payloads per code path)."""
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    got, want = got.reshape(-1), want.reshape(-1)
    if got.dtype.itemsize > 1:
        nan = got.isnan()
        assert torch.equal(nan, want.isnan())
        got, want = got[~nan], want[~nan]
    assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))


def composite(name: str) -> Callable[..., torch.Tensor]:
    """The op's CompositeExplicitAutograd kernel, called on CPU tensors (what a device with
    no kernel of its own runs), positional arguments in schema order."""
    kernel = torch._C._dispatch_get_computed_kernel_for_dispatch_key(
        f"coreai_opt::{name}", torch._C.DispatchKey.PrivateUse1
    )
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    return lambda *args: kernel.call_boxed(keys, *args)


def on_meta(args: Sequence[object]) -> list[object]:
    return [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]


def check_paths(name: str, args: Sequence[object], want: torch.Tensor) -> torch.Tensor:
    """The CPU op equals `want` bit for bit, the composite reference equals the CPU op, and
    the Meta kernel gives its shape and dtype."""
    op = getattr(ops, name).default
    got = op(*args)
    same(got, want)
    same(composite(name)(*args), got)
    meta = op(*on_meta(args))
    assert meta.shape == got.shape and meta.dtype == got.dtype
    return got


def scale_of(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Short-mantissa positive scales (x = t * s is exact, so ties stay ties)."""
    e = torch.randint(-7, -1, tuple(shape)).float()
    return (torch.exp2(e) * (1 + torch.randint(0, 4, tuple(shape)) / 4)).to(dtype)


def e8m0_scale(shape: Sequence[int]) -> torch.Tensor:
    return torch.randint(110, 135, tuple(shape), dtype=torch.uint8).view(E8M0)


def quantize_input(
    shape: Sequence[int], s_full: torch.Tensor, span: float, dtype: torch.dtype
) -> torch.Tensor:
    """Values whose x / s are halves over twice the range (ties, clamping), a little noise on
    a third of them, and NaN / ±inf / -0.0 at the front."""
    t = torch.randint(-int(4 * span), int(4 * span) + 1, tuple(shape)) / 2
    noise = torch.where(torch.rand(tuple(shape)) < 0.3, torch.rand(tuple(shape)) - 0.5, 0.0)
    x = ((t + noise) * s_full.float()).to(dtype)
    flat = x.view(-1)
    if flat.numel() >= 4:
        flat[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    return x


# (input shape, scale shape, axis): per tensor, per channel, on first / last / middle axes.
CHANNEL_CASES = [
    pytest.param((6, 10), (), 0, id="tensor-0d"),
    pytest.param((6, 10), (1,), 1, id="tensor-1elem"),
    pytest.param((6, 10), (6,), 0, id="channel-0"),
    pytest.param((6, 10), (10,), -1, id="channel-last"),
    pytest.param((3, 5, 4), (5,), 1, id="channel-middle"),
]
BLOCK_CASES = [
    pytest.param((6, 16), (6, 1), id="channel-rows"),
    pytest.param((6, 16), (1, 16), id="channel-cols"),
    pytest.param((6, 16), (6, 4), id="blocks-last"),
    pytest.param((8, 12, 6), (2, 3, 1), id="blocks-tuple"),
    pytest.param((6, 12), (3, 4), id="blocks-odd"),
    pytest.param((6, 16), (1, 1), id="tensor"),
]


def full(scale: torch.Tensor, shape: Sequence[int], axis: int | None) -> torch.Tensor:
    return broadcast(scale, shape, axis).expand(tuple(shape))


# ---- quantize -------------------------------------------------------------------------------


@pytest.mark.parametrize(("x_shape", "s_shape", "axis"), CHANNEL_CASES)
@pytest.mark.parametrize("out", [*INT_FORMATS, *FP8, FP4], ids=lambda d: NAMES[d])
def test_quantize_formats(
    out: torch.dtype, x_shape: tuple[int, ...], s_shape: tuple[int, ...], axis: int
) -> None:
    scale = scale_of(s_shape)
    s_full = full(scale, x_shape, axis)
    if out in FLOAT_MAX:
        x = quantize_input(x_shape, s_full, FLOAT_MAX[out], torch.float32)
        if out == FP4:
            x = torch.nan_to_num(x, nan=0.0)  # FP4 has no NaN code
        forms = [(None, None)]
    else:
        lo, hi = qrange(out)
        x = quantize_input(x_shape, s_full, hi - lo, torch.float32)
        zp = torch.randint(lo, hi + 1, tuple(s_shape), dtype=container(out))
        mv = -torch.rand(tuple(s_shape))
        forms = [(None, None), (zp, None), (None, mv)]
    for z, m in forms:
        xm = x + full(m, x_shape, axis) if m is not None else x
        args = (xm, scale, out, z, m, axis)
        got = check_paths("quantize", args, ref_quantize(xm, scale, out, z, m, axis))
        packed = (*x_shape[:-1], x_shape[-1] // 2)
        assert got.shape == (packed if out == FP4 else x_shape)


@pytest.mark.parametrize("s_dtype", FLOATS, ids=lambda d: NAMES[d])
@pytest.mark.parametrize("x_dtype", FLOATS, ids=lambda d: NAMES[d])
def test_quantize_dtypes(x_dtype: torch.dtype, s_dtype: torch.dtype) -> None:
    """Integer formats compute in promote_types(input, scale), input - minval in input's
    dtype; float formats in float32 whatever the dtypes."""
    scale = (torch.rand(7) * 0.1 + 0.01).to(s_dtype)
    x = (torch.randn(7, 300) * 6).to(x_dtype)
    mv = (-torch.rand(7)).to(x_dtype)
    zp = torch.randint(-20, 20, (7,), dtype=torch.int32)
    for out, z, m in [
        (torch.int8, zp, None),
        (torch.uint4, None, mv),
        (torch.int5, None, None),
        (torch.float8_e4m3fn, None, None),
        (torch.float8_e5m2, None, None),
        (FP4, None, None),
    ]:
        xs = x * 40 if out in FP8 else x
        args = (xs, scale, out, z, m, 0)
        check_paths("quantize", args, ref_quantize(xs, scale, out, z, m, 0))


@pytest.mark.parametrize("out", [*FP8, FP4], ids=lambda d: NAMES[d])
def test_quantize_e8m0_scale(out: torch.dtype) -> None:
    scale = e8m0_scale((4,))
    x = torch.randn(4, 32) * scale.float()[:, None] * FLOAT_MAX[out]
    args = (x, scale, out, None, None, 0)
    check_paths("quantize", args, ref_quantize(x, scale, out, None, None, 0))


def test_quantize_fp4_layout() -> None:
    """Two codes a byte, the even index in the low nibble; saturating round to nearest even."""
    x = torch.tensor([[0.5, -6.0, 7.0, 0.25, 0.75, -1e9]])
    q = ops.quantize(x, torch.tensor(1.0), FP4)
    assert q.dtype == torch.uint8 and q.shape == (1, 3)
    # 0.5 -> 0x1, -6 -> 0xF, 7 -> 6 (0x7), 0.25 -> 0 (tie to even), 0.75 -> 1.0 (0x2), -6 (0xF)
    assert q.tolist() == [[0x1 | 0xF << 4, 0x7 | 0x0 << 4, 0x2 | 0xF << 4]]
    assert torch.equal(q, ops.pack(torch.clamp(x, -6, 6), FP4))


def test_quantize_nan_and_inf() -> None:
    """NaN -> code 0 for integers (not the zero point), NaN for FP8; ±inf saturates."""
    x = torch.tensor([float("nan"), float("inf"), -float("inf")])
    s = torch.tensor(0.5)
    assert ops.quantize(x, s, torch.int8, torch.tensor(3, dtype=torch.int8)).tolist() == [
        0,
        127,
        -128,
    ]
    assert ops.quantize(x, s, torch.uint4).tolist() == [0, 15, 0]
    f8 = ops.quantize(x, s, torch.float8_e4m3fn).float()
    assert f8.isnan()[0] and f8[1:].tolist() == [448.0, -448.0]
    with pytest.raises(ValueError, match="FP4 has no NaN code"):
        ops.quantize(x[:2], s, FP4)


# ---- dequantize / blockwise_shift_scale -----------------------------------------------------


def codes_of(fmt: torch.dtype, shape: Sequence[int]) -> torch.Tensor:
    """Random codes over the whole format: integer codes in their container, every FP8 bit
    pattern (NaN included), FP4 as random packed bytes (shape is the unpacked one)."""
    if fmt in FP8:
        return torch.randint(0, 256, tuple(shape), dtype=torch.uint8).view(fmt)
    if fmt == FP4:
        packed = (*shape[:-1], shape[-1] // 2)
        return torch.randint(0, 256, packed, dtype=torch.uint8)
    lo, hi = qrange(fmt)
    return torch.randint(lo, hi + 1, tuple(shape), dtype=container(fmt))


def offsets(
    fmt: torch.dtype, s_shape: Sequence[int], s_dtype: torch.dtype
) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """(zero_point, minval) forms of a format: none; zp (the codes' container); minval."""
    if fmt in FLOAT_MAX:
        return [(None, None)]
    lo, hi = qrange(fmt)
    zp = torch.randint(lo, hi + 1, tuple(s_shape), dtype=container(fmt))
    mv = (-torch.rand(tuple(s_shape)) * 3).to(s_dtype)
    return [(None, None), (zp, None), (None, mv)]


def dequantize_cases(fmt: torch.dtype, q: torch.Tensor) -> list[tuple[torch.dtype | None, object]]:
    """input_dtype values to try: the logical dtype, and None where the container implies it."""
    if fmt == FP4:
        return [(FP4, q), (None, q.view(FP4))]  # uint8 + input_dtype, or a float4 tensor
    if fmt in FP8 or fmt in (torch.int8, torch.uint8):
        return [(fmt, q), (None, q)]
    return [(fmt, q)]


@pytest.mark.parametrize(("x_shape", "s_shape", "axis"), CHANNEL_CASES)
@pytest.mark.parametrize("fmt", [*INT_FORMATS, *FP8, FP4], ids=lambda d: NAMES[d])
def test_dequantize_formats(
    fmt: torch.dtype, x_shape: tuple[int, ...], s_shape: tuple[int, ...], axis: int
) -> None:
    q = codes_of(fmt, x_shape)
    scale = torch.rand(s_shape) * 0.1 + 0.01
    for z, m in offsets(fmt, s_shape, scale.dtype):
        for in_dtype, qq in dequantize_cases(fmt, q):
            if m is not None and in_dtype is None:
                continue  # minval needs input_dtype
            args = (qq, scale, z, m, axis, in_dtype, None)
            want = ref_dequantize(q, scale, z, m, axis, fmt, None)
            assert want.shape == x_shape
            check_paths("dequantize", args, want)


@pytest.mark.parametrize(("x_shape", "s_shape"), BLOCK_CASES)
@pytest.mark.parametrize("fmt", [*INT_FORMATS, *FP8, FP4], ids=lambda d: NAMES[d])
def test_blockwise_formats(
    fmt: torch.dtype, x_shape: tuple[int, ...], s_shape: tuple[int, ...]
) -> None:
    q = codes_of(fmt, x_shape)
    scale = torch.rand(s_shape) * 0.1 + 0.01
    for z, m in offsets(fmt, s_shape, scale.dtype):
        for in_dtype, qq in dequantize_cases(fmt, q):
            if m is not None and in_dtype is None:
                continue
            args = (qq, scale, z, m, in_dtype, None)
            check_paths("blockwise_shift_scale", args, ref_dequantize(q, scale, z, m, None, fmt))


@pytest.mark.parametrize("out", [None, *FLOATS], ids=lambda d: NAMES.get(d, "none"))
@pytest.mark.parametrize("s_dtype", FLOATS, ids=lambda d: NAMES[d])
def test_dequantize_dtypes(s_dtype: torch.dtype, out: torch.dtype | None) -> None:
    """Integer codes in the scale's dtype (two roundings in the minval form), float codes in
    float32; then cast to output_dtype."""
    scale = (torch.rand(5, 1) * 0.1 + 0.01).to(s_dtype)
    mv = (-torch.rand(5, 1) * 3).to(s_dtype)
    for fmt, z, m in [
        (torch.uint8, torch.randint(0, 256, (5, 1), dtype=torch.uint8), None),
        (torch.int4, None, mv),
        (torch.int8, None, None),
        (torch.float8_e5m2, None, None),
        (FP4, None, None),
    ]:
        q = codes_of(fmt, (5, 64))
        in_dtype = fmt if fmt == FP4 or m is not None else None
        want = ref_dequantize(q, scale, z, m, None, fmt, out)
        assert want.dtype == (out or s_dtype)
        check_paths("blockwise_shift_scale", (q, scale, z, m, in_dtype, out), want)
        want = ref_dequantize(q, scale.flatten(), z, m if m is None else m.flatten(), 0, fmt, out)
        zf = None if z is None else z.flatten()
        mf = None if m is None else m.flatten()
        check_paths("dequantize", (q, scale.flatten(), zf, mf, 0, in_dtype, out), want)


@pytest.mark.parametrize("out", FLOATS, ids=lambda d: NAMES[d])
@pytest.mark.parametrize("fmt", [*FP8, FP4], ids=lambda d: NAMES[d])
def test_dequantize_e8m0(fmt: torch.dtype, out: torch.dtype) -> None:
    """E8M0 scales (NaN code 0xFF, tiny and huge exponents included): out(f32(q) * s)."""
    q = codes_of(fmt, (4, 64))
    scale = torch.tensor([[0, 1, 127, 255], [100, 140, 200, 254], [3, 7, 120, 130], [5, 6, 7, 8]])
    scale = scale.to(torch.uint8).view(E8M0)
    in_dtype = FP4 if fmt == FP4 else None
    want = ref_dequantize(q, scale, None, None, None, fmt, out)
    got = ops.blockwise_shift_scale(q, scale, None, None, in_dtype, out)
    same(got, want)
    same(composite("blockwise_shift_scale")(q, scale, None, None, in_dtype, out), got)
    s1 = scale[:, 0].contiguous()
    got = ops.dequantize(q, s1, None, None, 0, in_dtype, out)
    same(got, ref_dequantize(q, s1, None, None, 0, fmt, out))


def test_round_trip() -> None:
    """dequantize(quantize(x)) is the fake-quantized x (integer zp and FP8 forms)."""
    x = torch.randn(8, 32)
    s = torch.rand(8) * 0.05 + 0.01
    zp = torch.randint(-5, 5, (8,), dtype=torch.int8)
    q = cops.coreai_quantize(x, s, torch.int8, zero_point=zp, axis=0)
    y = cops.coreai_dequantize(q, s, zero_point=zp, axis=0)
    want = ops.fake_quantize_int(x, s[:, None], zp[:, None].int(), None, -128, 127)
    torch.testing.assert_close(y, want, rtol=0, atol=1e-6)
    q8 = cops.coreai_quantize(x, s, torch.float8_e4m3fn, axis=0)
    y8 = cops.blockwise_shift_scale(q8, s[:, None])
    same(y8, ops.fake_quantize_float(x, s[:, None], torch.float8_e4m3fn))


def test_empty_and_scalar_inputs() -> None:
    for shape in [(0, 4), (3, 0)]:
        x = torch.zeros(shape)
        assert ops.quantize(x, torch.tensor(1.0), torch.int8).shape == shape
        q = torch.zeros(shape, dtype=torch.int8)
        assert ops.dequantize(q, torch.tensor(1.0)).shape == shape
        assert ops.blockwise_shift_scale(q, torch.ones(1, 1)).shape == shape
    assert ops.quantize(torch.tensor(2.5), torch.tensor(1.0), torch.int8).item() == 2
    assert ops.dequantize(torch.tensor(3, dtype=torch.int8), torch.tensor(0.5)).item() == 1.5


def test_noncontiguous_inputs() -> None:
    x = torch.randn(16, 6).t()
    s = torch.rand(16) * 0.1 + 0.01
    same(ops.quantize(x, s, torch.int8, None, None, 1), ref_quantize(x, s, torch.int8, axis=1))
    q = torch.randint(-8, 8, (16, 6), dtype=torch.int8).t()
    same(ops.dequantize(q, s, None, None, 1, torch.int4), ref_dequantize(q, s, axis=1))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    """On CUDA (the CompositeExplicitAutograd reference) every op gives the CPU bits."""
    s = scale_of((6,))
    x = quantize_input((6, 32), full(s, (6, 32), 0), 300, torch.float32).nan_to_num(0.0)
    zp = torch.randint(-8, 8, (6,), dtype=torch.int8)
    calls: list[tuple[str, tuple]] = [
        ("quantize", (x, s, torch.int8, zp, None, 0)),
        ("quantize", (x, s.half(), torch.uint4, None, -s, 0)),
        ("quantize", (x, s, torch.float8_e4m3fn, None, None, 0)),
        ("quantize", (x / 50, s, FP4, None, None, 0)),
        ("quantize", (x * 50, e8m0_scale((6,)), torch.float8_e5m2, None, None, 0)),
        ("dequantize", (codes_of(torch.int8, (6, 32)), s, zp, None, 0, None, None)),
        (
            "dequantize",
            (
                codes_of(torch.int4, (6, 32)),
                s.bfloat16(),
                None,
                -s.bfloat16(),
                0,
                torch.int4,
                torch.float32,
            ),
        ),
        (
            "blockwise_shift_scale",
            (codes_of(FP4, (6, 32)), e8m0_scale((6, 4)), None, None, FP4, torch.float16),
        ),
        (
            "blockwise_shift_scale",
            (codes_of(torch.float8_e4m3fn, (6, 32)), s[:, None].half(), None, None, None, None),
        ),
    ]
    for name, args in calls:
        op = getattr(ops, name)
        on_cuda = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
        same(op(*on_cuda).cpu(), op(*args))


# ---- PT2: opcheck, compile, export ----------------------------------------------------------


def opcheck_cases() -> list:
    x = torch.randn(4, 12)
    s = torch.rand(4) + 0.05
    s_blk = torch.rand(4, 3) + 0.05
    q8 = torch.randint(-128, 128, (4, 12), dtype=torch.int8)
    zp = torch.randint(-3, 3, (4,), dtype=torch.int8)
    packed = torch.randint(0, 256, (4, 6), dtype=torch.uint8)
    return [
        pytest.param(ops.quantize.default, (x, s, torch.int4, zp, None, 0), id="q-int4-zp"),
        pytest.param(ops.quantize.default, (x, s, torch.uint8, None, -s, -2), id="q-uint8-mv"),
        pytest.param(ops.quantize.default, (x, s, FP4), id="q-fp4"),
        pytest.param(ops.dequantize.default, (q8, s, zp, None, 0), id="dq-int8-zp"),
        pytest.param(
            ops.dequantize.default,
            (q8, s.half(), None, -s.half(), 0, torch.int8, torch.float32),
            id="dq-mv-f16",
        ),
        pytest.param(
            ops.blockwise_shift_scale.default, (packed, s_blk, None, None, FP4), id="bss-fp4"
        ),
        pytest.param(
            ops.blockwise_shift_scale.default,
            (q8, s_blk.bfloat16(), zp[:, None].repeat(1, 3)),
            id="bss-zp-bf16",
        ),
    ]


@pytest.mark.parametrize(("op", "args"), opcheck_cases())
def test_opcheck(op: torch._ops.OpOverload, args: tuple) -> None:
    torch.library.opcheck(op, args)


def test_compile_and_export() -> None:
    """One graph with all three ops (aot_eager, dynamic shapes) and one export node each."""

    def f(x: torch.Tensor, s: torch.Tensor, sb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q = ops.quantize(x, s, torch.int4, None, None, 0)
        f4 = ops.quantize(x, s, FP4, None, None, 0)
        return (
            ops.dequantize(q, s, None, None, 0, torch.int4, torch.float16),
            ops.blockwise_shift_scale(f4, sb, None, None, FP4, None),
        )

    for rows in (4, 6):
        x, s, sb = torch.randn(rows, 32), torch.rand(rows) + 0.1, torch.rand(rows, 4) + 0.1
        want = f(x, s, sb)
        with torch._dynamo.config.patch(only_allow_pt2_compliant_ops=True):
            got = torch.compile(f, backend="aot_eager", fullgraph=True, dynamic=True)(x, s, sb)
        for a, b in zip(got, want, strict=True):
            same(a, b)

    class M(torch.nn.Module):
        def forward(self, x: torch.Tensor, s: torch.Tensor, sb: torch.Tensor) -> object:
            return f(x, s, sb)

    ep = torch.export.export(M(), (x, s, sb))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(ops.quantize.default) == 2
    assert targets.count(ops.dequantize.default) == 1
    assert targets.count(ops.blockwise_shift_scale.default) == 1


# ---- argument errors ------------------------------------------------------------------------

_x = torch.randn(4, 8)
_s = torch.rand(4) + 0.1
_q = torch.zeros(4, 8, dtype=torch.int8)
_sb = torch.rand(4, 2) + 0.1
ERRORS = [
    ("quantize", (_x, _s, torch.float32), ValueError, "output_dtype is torch.float32; allowed"),
    ("quantize", (_x.int(), _s, torch.int8), TypeError, "input has dtype torch.int32"),
    ("quantize", (_x, _s.int(), torch.int8), TypeError, "scale has dtype torch.int32"),
    ("quantize", (_x, _s.to(E8M0), torch.int8), TypeError, "only float formats take"),
    ("quantize", (_x, _sb, torch.int8), ValueError, "scale has 2 dimensions"),
    ("quantize", (_x, _s, torch.int8, None, None, 2), ValueError, "axis is 2"),
    ("quantize", (_x, _s, torch.int8, None, None, 1), ValueError, "needs input.size(1) = 8"),
    (
        "quantize",
        (_x, _s, torch.int8, _s.to(torch.int8), -_s),
        ValueError,
        "mutually exclusive",
    ),
    ("quantize", (_x, _s, torch.int8, _s), TypeError, "zero_point has dtype torch.float32"),
    ("quantize", (_x, _s, torch.int8, None, -_s.half()), TypeError, "minval has dtype"),
    ("quantize", (_x, _s, torch.int8, None, -_s[:2]), ValueError, "minval has shape [2]"),
    ("quantize", (_x, _s, torch.float8_e4m3fn, _s.int()), ValueError, "take no zero_point"),
    ("quantize", (_x[:, :7], _s, FP4), ValueError, "must be even"),
    ("dequantize", (_x, _s), TypeError, "input has dtype torch.float32"),
    ("dequantize", (_q, _s, None, -_s), ValueError, "minval needs input_dtype"),
    ("dequantize", (_q, _s, None, -_s.half(), 0, torch.int4), TypeError, "minval has dtype"),
    ("dequantize", (_q, _s, _s.to(torch.uint8)), TypeError, "zero_point has dtype torch.uint8"),
    ("dequantize", (_q, _s, None, None, 0, torch.uint8), ValueError, "cannot hold"),
    ("dequantize", (_q, _s, None, None, 0, torch.float8_e4m3fn), ValueError, "float8 tensor"),
    ("dequantize", (_q, _s, None, None, 0, torch.int16), ValueError, "input_dtype is torch.int16"),
    ("dequantize", (_q.view(torch.float8_e5m2), _s.to(E8M0)), ValueError, "needs output_dtype"),
    ("dequantize", (_q, _s, None, None, 0, None, torch.int8), ValueError, "output_dtype is"),
    (
        "dequantize",
        (_q.view(torch.float8_e5m2), _s, None, None, 0, torch.int8),
        ValueError,
        "must be None or the same",
    ),
    ("blockwise_shift_scale", (_q, _s), ValueError, "scale has 1 dimensions but the input has 2"),
    (
        "blockwise_shift_scale",
        (_q, torch.ones(4, 3)),
        ValueError,
        "scale of shape [4, 3] fits no granularity of an input of shape [4, 8]",
    ),
    (
        "blockwise_shift_scale",
        (_q.view(torch.uint8), torch.ones(4, 3), None, None, FP4),
        ValueError,
        "scale of shape [4, 3] fits no granularity of an input of shape [4, 16]",
    ),
]


@pytest.mark.parametrize(("name", "args", "kind", "match"), ERRORS)
def test_errors(name: str, args: tuple, kind: type, match: str) -> None:
    """CPU, Meta and the composite reference refuse with the same type and message."""
    messages = set()
    for call in (getattr(ops, name), lambda *a: getattr(ops, name)(*on_meta(a)), composite(name)):
        with pytest.raises(kind) as info:
            call(*args)
        text = str(info.value).split("\nException raised from")[0]
        assert text.startswith(f"coreai_opt.{name}: ") and match in text, text
        messages.add(text)
    assert len(messages) == 1, messages


# ---- coreai-torch, bit for bit --------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> SimpleNamespace:
    """torch.ops.coreai (registered when coreai-torch's compression layers load)."""
    pytest.importorskip(
        "coreai_torch", reason="coreai-torch (the `coreai` extra; make test installs it)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for torch's "+cpu" local version label
        layers = importlib.import_module("coreai_torch._compression.custom_layers")
    return SimpleNamespace(ops=torch.ops.coreai, Float4Tensor=layers.Float4Tensor)


UP_CHANNEL = [
    pytest.param((6, 40), (), 0, id="tensor"),
    pytest.param((6, 40), (6,), 0, id="channel-0"),
    pytest.param((6, 40), (40,), -1, id="channel-last"),
    pytest.param((3, 5, 8), (5,), 1, id="channel-middle"),
]


@pytest.mark.parametrize(("x_shape", "s_shape", "axis"), UP_CHANNEL)
@pytest.mark.parametrize("s_dtype", FLOATS, ids=lambda d: NAMES[d])
@pytest.mark.parametrize("x_dtype", FLOATS, ids=lambda d: NAMES[d])
def test_upstream_quantize(
    upstream: SimpleNamespace,
    x_dtype: torch.dtype,
    s_dtype: torch.dtype,
    x_shape: tuple[int, ...],
    s_shape: tuple[int, ...],
    axis: int,
) -> None:
    """int8 / uint8 (zp, minval, neither) and FP8 codes equal torch.ops.coreai.quantize's."""
    scale = (torch.rand(s_shape) * 0.1 + 0.01).to(s_dtype)
    s_full = full(scale.float(), x_shape, axis)
    for out in [torch.int8, torch.uint8, *FP8]:
        span = FLOAT_MAX[out] if out in FP8 else 256
        x = quantize_input(x_shape, s_full, span, torch.float32)
        x = (x + torch.randn(x_shape) * s_full).to(x_dtype)  # off the ties as well
        forms: list[dict] = [{}]
        if out not in FP8:
            lo, hi = qrange(out)
            zp = torch.randint(lo, hi + 1, s_shape, dtype=container(out))
            forms += [{"zero_point": zp}, {"minval": (-torch.rand(s_shape)).to(x_dtype)}]
        for kw in forms:
            want = upstream.ops.quantize(x, scale, out, axis=axis, **kw)
            same(ops.quantize(x, scale, out, axis=axis, **kw), want)


@pytest.mark.parametrize("out", FP8, ids=lambda d: NAMES[d])
def test_upstream_quantize_e8m0(upstream: SimpleNamespace, out: torch.dtype) -> None:
    scale = e8m0_scale((6,))
    x = torch.randn(6, 64) * scale.float()[:, None] * FLOAT_MAX[out] * 1.5
    same(ops.quantize(x, scale, out), upstream.ops.quantize(x, scale, out))


UP_INPUTS = [torch.int8, torch.uint8, torch.int4, torch.uint4, torch.int2, torch.uint2]
"""The integer input_dtype values coreai-torch 0.4.3 knows (it has no int3, int5, ...)."""


def upstream_forms(
    fmt: torch.dtype, s_shape: Sequence[int], s_dtype: torch.dtype
) -> list[dict[str, object]]:
    """Keyword arguments for both libraries: no offset (with and without input_dtype), then
    zero_point and minval for integer formats (minval needs input_dtype in both)."""
    forms: list[dict[str, object]] = [{}, {"input_dtype": fmt}]
    if fmt in FP8:
        return forms
    _, (zp, _), (_, mv) = offsets(fmt, s_shape, s_dtype)
    return [
        *forms,
        {"zero_point": zp},
        {"zero_point": zp, "input_dtype": fmt},
        {"minval": mv, "input_dtype": fmt},
    ]


@pytest.mark.parametrize(("x_shape", "s_shape", "axis"), UP_CHANNEL)
@pytest.mark.parametrize("s_dtype", FLOATS, ids=lambda d: NAMES[d])
@pytest.mark.parametrize("fmt", [*UP_INPUTS, *FP8], ids=lambda d: NAMES[d])
def test_upstream_dequantize(
    upstream: SimpleNamespace,
    fmt: torch.dtype,
    s_dtype: torch.dtype,
    x_shape: tuple[int, ...],
    s_shape: tuple[int, ...],
    axis: int,
) -> None:
    q = codes_of(fmt, x_shape)
    scale = (torch.rand(s_shape) * 0.1 + 0.01).to(s_dtype)
    for kw in upstream_forms(fmt, s_shape, s_dtype):
        want = upstream.ops.dequantize(q, scale, axis=axis, **kw)
        same(ops.dequantize(q, scale, axis=axis, **kw), want)
        # output_dtype equal to the scale's: the one value coreai-torch honours here.
        same(ops.dequantize(q, scale, axis=axis, output_dtype=s_dtype, **kw), want)


@pytest.mark.parametrize(("x_shape", "s_shape"), BLOCK_CASES)
@pytest.mark.parametrize("s_dtype", FLOATS, ids=lambda d: NAMES[d])
@pytest.mark.parametrize("fmt", [*UP_INPUTS, *FP8], ids=lambda d: NAMES[d])
def test_upstream_blockwise(
    upstream: SimpleNamespace,
    fmt: torch.dtype,
    s_dtype: torch.dtype,
    x_shape: tuple[int, ...],
    s_shape: tuple[int, ...],
) -> None:
    q = codes_of(fmt, x_shape)
    scale = (torch.rand(s_shape) * 0.1 + 0.01).to(s_dtype)
    for kw in upstream_forms(fmt, s_shape, s_dtype):
        want = upstream.ops.constexpr_blockwise_shift_scale(q, scale, **kw)
        same(ops.blockwise_shift_scale(q, scale, **kw), want)


@pytest.mark.parametrize("out", FLOATS, ids=lambda d: NAMES[d])
@pytest.mark.parametrize("fmt", [*FP8, FP4], ids=lambda d: NAMES[d])
def test_upstream_e8m0(upstream: SimpleNamespace, fmt: torch.dtype, out: torch.dtype) -> None:
    """E8M0 scales with FP8 codes (both ops) and FP4 (coreai-torch's Float4Tensor holding
    the same packed bytes: the one FP4 form it dequantizes)."""
    q = codes_of(fmt, (4, 64))
    scale = torch.tensor([[0, 1, 127, 255], [100, 140, 200, 254], [3, 7, 120, 130], [5, 6, 7, 8]])
    scale = scale.to(torch.uint8).view(E8M0)
    if fmt == FP4:
        want = upstream.ops.constexpr_blockwise_shift_scale(
            upstream.Float4Tensor(q), scale, output_dtype=out
        )
        got = ops.blockwise_shift_scale(q, scale, input_dtype=FP4, output_dtype=out)
        same(got, want)
        return
    want = upstream.ops.constexpr_blockwise_shift_scale(q, scale, output_dtype=out)
    same(ops.blockwise_shift_scale(q, scale, output_dtype=out), want)
    s1 = scale[:, 1].contiguous()
    want = upstream.ops.dequantize(q, s1, axis=0, output_dtype=out)
    same(ops.dequantize(q, s1, axis=0, output_dtype=out), want)


def test_upstream_output_dtype_with_float_scales(upstream: SimpleNamespace) -> None:
    """The one documented difference: with a non-E8M0 scale coreai-torch 0.4.3 ignores
    output_dtype (its result keeps the scale's dtype); ours casts that same result to it."""
    q = codes_of(torch.int8, (4, 16))
    scale = torch.rand(4) * 0.1 + 0.01
    want = upstream.ops.dequantize(q, scale, axis=0, output_dtype=torch.float16)
    assert want.dtype == torch.float32
    same(ops.dequantize(q, scale, axis=0, output_dtype=torch.float16), want.half())


def test_upstream_refuses_alike(upstream: SimpleNamespace) -> None:
    """Where coreai-torch refuses an argument combination, so do we."""
    x, s = torch.randn(4, 8), torch.rand(4) + 0.1
    q = torch.zeros(4, 8, dtype=torch.int8)
    f8 = q.view(torch.float8_e4m3fn)
    calls = [
        ("quantize", (x, s, torch.int8), {"zero_point": s.to(torch.int8), "minval": -s}),
        ("quantize", (x, s, torch.float8_e4m3fn), {"zero_point": s.to(torch.int8)}),
        ("quantize", (x, s, torch.int8), {"minval": (-s).half()}),
        ("dequantize", (q, s), {"minval": -s}),
        ("dequantize", (f8, s), {"zero_point": s.to(torch.int8)}),
        ("dequantize", (f8, s.to(E8M0)), {}),
        ("dequantize", (q, s), {"zero_point": s.to(torch.int32)}),
        ("dequantize", (q, torch.rand(3)), {}),
        ("dequantize", (q, s), {"minval": (-s).half(), "input_dtype": torch.int8}),
    ]
    for name, args, kw in calls:
        with pytest.raises((ValueError, TypeError, RuntimeError)):
            getattr(upstream.ops, name)(*args, **kw)
        with pytest.raises((ValueError, TypeError)):
            getattr(ops, name)(*args, **kw)
