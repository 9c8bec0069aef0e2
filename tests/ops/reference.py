"""Plain-PyTorch reference of the coreai_opt ops, written from the formulas.

Sources: ``reference/behaviour.md`` §3 and the schema comments in ``csrc/ops/*.cpp`` and
``csrc/formats/*.h``. Every function computes in float32 (as the ops do, whatever the input
dtype) with the same operation order, so integer formats, FP8 and FP4 compare bit-exactly.
Nothing here calls a ``coreai_opt`` op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

F32_EPS = torch.finfo(torch.float32).eps

INT_DTYPES: dict[torch.dtype, tuple[int, bool]] = {
    torch.int8: (8, True),
    torch.uint8: (8, False),
    torch.int4: (4, True),
    torch.uint4: (4, False),
    torch.int2: (2, True),
    torch.uint2: (2, False),
}
"""Integer quantization dtypes: (bits, signed)."""

FLOAT_FORMATS: dict[torch.dtype, tuple[float, int]] = {
    torch.float8_e4m3fn: (448.0, 8),
    torch.float8_e5m2: (57344.0, 15),
    torch.float4_e2m1fn_x2: (6.0, 2),
}
"""Float quantization formats: (largest finite magnitude, emax of the OCP MX FLOOR rule)."""

E2M1_GRID: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
"""The non-negative FP4 E2M1 values, indexed by their 3-bit magnitude code."""

PACK_BITS: dict[torch.dtype, int] = {
    torch.int4: 4,
    torch.uint4: 4,
    torch.int2: 2,
    torch.uint2: 2,
    torch.float4_e2m1fn_x2: 4,
}
"""Bits per code of the packable formats."""


# ---- ranges ---------------------------------------------------------------------------------


def int_range(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Quantization range of an n-bit integer: narrow (symmetric_with_clipping) is signed-only."""
    if not signed:
        return 0, 2**bits - 1
    qmax = 2 ** (bits - 1) - 1
    return (-qmax if narrow else -qmax - 1), qmax


def dtype_range(dtype: torch.dtype, narrow: bool = False) -> tuple[float, float]:
    """Range of any quantization dtype: integer ranges or the float format's [-max, max]."""
    if dtype in INT_DTYPES:
        bits, signed = INT_DTYPES[dtype]
        lo, hi = int_range(bits, signed, narrow)
        return float(lo), float(hi)
    mx = FLOAT_FORMATS[dtype][0]
    return -mx, mx


# ---- granularity --------------------------------------------------------------------------


def qparam_shape(x_shape: Sequence[int], q: torch.Tensor) -> list[int]:
    """The qparam shape with x's rank (a 0-d qparam is per-tensor: all ones)."""
    return [1] * len(x_shape) if q.dim() == 0 else list(q.shape)


def expand_qparam(q: torch.Tensor, x_shape: Sequence[int]) -> torch.Tensor:
    """Float32 copy of a qparam tensor broadcast to x_shape (blocks repeated along their dim)."""
    out = q.to(torch.float32).reshape(qparam_shape(x_shape, q))
    for d, (xs, qs) in enumerate(zip(x_shape, out.shape, strict=True)):
        if qs not in (1, xs):
            out = out.repeat_interleave(xs // qs, dim=d)
    return out.expand(tuple(x_shape)).contiguous()


def reduce_to_qparam(t: torch.Tensor, q_shape: Sequence[int]) -> torch.Tensor:
    """Sums t (shaped like x) over the elements that share each qparam; returns q_shape."""
    split: list[int] = []
    reduce_dims: list[int] = []
    for xs, qs in zip(t.shape, q_shape, strict=True):
        if qs == xs:
            split.append(xs)
        elif qs == 1:
            reduce_dims.append(len(split))
            split.append(xs)
        else:
            split.extend([qs, xs // qs])
            reduce_dims.append(len(split) - 1)
    r = t.reshape(split)
    if reduce_dims:
        r = r.sum(dim=reduce_dims)
    return r.reshape(list(q_shape))


def reduce_minmax(x: torch.Tensor, block_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """amin / amax of float32 x over blocks (torchao's block reshape); NaN propagates."""
    split: list[int] = []
    reduce_dims: list[int] = []
    q_shape: list[int] = []
    for xs, b in zip(x.shape, block_size, strict=True):
        q_shape.append(xs // b)
        if b == 1:
            split.append(xs)
        else:
            split.extend([xs // b, b])
            reduce_dims.append(len(split) - 1)
    r = x.reshape(split)
    if reduce_dims:
        return r.amin(dim=reduce_dims).reshape(q_shape), r.amax(dim=reduce_dims).reshape(q_shape)
    return r.reshape(q_shape).clone(), r.reshape(q_shape).clone()


# ---- integer fake-quantize ----------------------------------------------------------------


def _int_offsets(
    x_shape: Sequence[int],
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    minval: torch.Tensor | None,
    quant_min: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(quant offset, float offset) of the zp form (zp, None) or minval form (qmin, minval)."""
    s = expand_qparam(scale, x_shape)
    if minval is not None:
        return torch.full_like(s, float(quant_min)), expand_qparam(minval, x_shape)
    if zero_point is not None:
        return expand_qparam(zero_point, x_shape), None
    return torch.zeros_like(s), None


def int_pre_clamp(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    minval: torch.Tensor | None,
    quant_min: int,
) -> torch.Tensor:
    """Float32 pre-clamp code: round(x/s) + zp, or round((x - m)/s) + qmin."""
    x32 = x.to(torch.float32)
    s = expand_qparam(scale, x.shape)
    o, m = _int_offsets(x.shape, scale, zero_point, minval, quant_min)
    v = x32 if m is None else x32 - m
    return torch.round(v / s) + o


def fake_quantize_int(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    minval: torch.Tensor | None,
    quant_min: int,
    quant_max: int,
) -> torch.Tensor:
    """zp: (clamp(round(x/s)+zp) - zp)*s; minval: (clamp(round((x-m)/s)+qmin) - qmin)*s + m."""
    s = expand_qparam(scale, x.shape)
    o, m = _int_offsets(x.shape, scale, zero_point, minval, quant_min)
    q = torch.clamp(int_pre_clamp(x, scale, zero_point, minval, quant_min), quant_min, quant_max)
    y = (q - o) * s
    if m is not None:
        y = y + m
    return y.to(x.dtype)


def int_mask(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    minval: torch.Tensor | None,
    quant_min: int,
    quant_max: int,
) -> torch.Tensor:
    """STE clipping mask: qmin <= pre-clamp code <= qmax (False for NaN)."""
    q = int_pre_clamp(x, scale, zero_point, minval, quant_min)
    return (q >= quant_min) & (q <= quant_max)


def ste_grad(grad: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """grad * mask computed in float32 and returned in the input's dtype."""
    g32 = grad.to(dtype).to(torch.float32)
    return (g32 * mask.to(torch.float32)).to(dtype)


# ---- float formats ------------------------------------------------------------------------


def round_e2m1(v: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 value of float32 v (|v| <= 6 or NaN): ties to the even code, sign kept."""
    grid = torch.tensor(E2M1_GRID, dtype=torch.float32)
    a = v.abs().clamp(max=6.0).nan_to_num(0.0)
    dist = (a.unsqueeze(-1) - grid).abs()
    best = dist.min(dim=-1, keepdim=True).values
    codes = torch.arange(len(E2M1_GRID))
    # Among the (at most two) nearest grid points take the even code.
    key = torch.where(dist == best, (codes % 2) * 16 + codes, torch.full_like(codes, 1000))
    r = grid[key.argmin(dim=-1)]
    r = torch.copysign(r, v)
    return torch.where(torch.isnan(v), v, r)


def round_to_format(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Saturating round-to-nearest-even of float32 v onto a float format's grid."""
    mx = FLOAT_FORMATS[dtype][0]
    c = torch.clamp(v, -mx, mx)
    if dtype == torch.float4_e2m1fn_x2:
        return round_e2m1(c)
    return c.to(dtype).to(torch.float32)


def fake_quantize_float(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """round_to_format(clamp(x / s, -max, max)) * s in float32, back in x's dtype."""
    s = expand_qparam(scale, x.shape)
    return (round_to_format(x.to(torch.float32) / s, dtype) * s).to(x.dtype)


def float_mask(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """STE clipping mask of the float formats: -max <= x / s <= max (False for NaN)."""
    mx = FLOAT_FORMATS[dtype][0]
    r = x.to(torch.float32) / expand_qparam(scale, x.shape)
    return (r >= -mx) & (r <= mx)


# ---- LSQ ----------------------------------------------------------------------------------


def lsq_zero_point(zero_point: torch.Tensor, quant_min: int, quant_max: int) -> torch.Tensor:
    """zp_r = round(clamp(zero_point, qmin, qmax)) in float32."""
    return torch.round(torch.clamp(zero_point.to(torch.float32), quant_min, quant_max))


def fake_quantize_lsq(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, quant_min: int, quant_max: int
) -> torch.Tensor:
    """LSQ forward: the zp form with zp_r = round(clamp(zero_point))."""
    zp = lsq_zero_point(zero_point, quant_min, quant_max)
    return fake_quantize_int(x, scale, zp, None, quant_min, quant_max)


def lsq_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    quant_min: int,
    quant_max: int,
    grad_factor: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dscale, dzero_point) of LSQ, reductions in float64 (compare with allclose).

    inside [qmin, qmax]: dx = g, dscale = g * (y - x) / s, dzero_point = 0;
    below / above:       dx = 0, dscale = g * (qmin|qmax - zp_r), dzero_point = -g * s.
    """
    zp_r = lsq_zero_point(zero_point, quant_min, quant_max)
    x32 = x.to(torch.float32)
    g32 = grad.to(x.dtype).to(torch.float32)
    s = expand_qparam(scale, x.shape)
    zp = expand_qparam(zp_r, x.shape)
    q = torch.round(x32 / s) + zp
    inside = (q >= quant_min) & (q <= quant_max)
    below = q < quant_min
    y = (q - zp) * s
    g64, s64, x64, y64, zp64 = (t.double() for t in (g32, s, x32, y, zp))
    end = torch.where(below, torch.full_like(zp64, quant_min), torch.full_like(zp64, quant_max))
    ds = torch.where(inside, g64 * (y64 - x64) / s64, g64 * (end - zp64))
    dz = torch.where(inside, torch.zeros_like(g64), -g64 * s64)
    nan = torch.isnan(q)
    ds = torch.where(nan, torch.nan, ds)
    dz = torch.where(nan, torch.nan, dz)
    q_shape = qparam_shape(x.shape, scale)
    dscale = (reduce_to_qparam(ds, q_shape) * grad_factor).reshape(scale.shape)
    dzp = (reduce_to_qparam(dz, q_shape) * grad_factor).reshape(zero_point.shape)
    dx = ste_grad(grad, inside, x.dtype)
    return dx, dscale.to(scale.dtype), dzp.to(zero_point.dtype)


# ---- observation and qparams --------------------------------------------------------------


def minmax(x: torch.Tensor, block_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block min / max computed on float32 values, returned in x's dtype."""
    lo, hi = reduce_minmax(x.to(torch.float32), block_size)
    return lo.to(x.dtype), hi.to(x.dtype)


def update_range(
    x: torch.Tensor,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    block_size: Sequence[int],
    method: str,
    averaging_constant: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """New (running_min, running_max) in float32; ±inf means uninitialised."""
    lo, hi = reduce_minmax(x.to(torch.float32), block_size)
    if method == "static":
        return lo, hi
    if method == "moving_average":
        c = torch.tensor(averaging_constant, dtype=torch.float32)
        one_minus_c = torch.tensor(1.0, dtype=torch.float32) - c
        new_min = torch.where(running_min == math.inf, lo, c * lo + one_minus_c * running_min)
        new_max = torch.where(running_max == -math.inf, hi, c * hi + one_minus_c * running_max)
        return new_min, new_max
    if method == "global_minmax":
        new_min = torch.where((lo < running_min) | torch.isnan(lo), lo, running_min)
        new_max = torch.where((hi > running_max) | torch.isnan(hi), hi, running_max)
        return new_min, new_max
    raise ValueError(method)


def _range_ends(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    range_min: float | None,
    range_max: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (lo, hi): float_range ends when given, else widened to include 0 (NaN kept)."""
    lo = min_val.to(torch.float32)
    hi = max_val.to(torch.float32)
    zero = torch.zeros_like(lo)
    lo = torch.full_like(lo, range_min) if range_min is not None else torch.minimum(lo, zero)
    hi = torch.full_like(hi, range_max) if range_max is not None else torch.maximum(hi, zero)
    return lo, hi


def choose_qparams_int(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    quant_min: int,
    quant_max: int,
    symmetric: bool,
    range_min: float | None = None,
    range_max: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scale, zero_point int32, minval) by behaviour.md §3; scale/minval in min's dtype."""
    lo, hi = _range_ends(min_val, max_val, range_min, range_max)
    if symmetric:
        max_abs = torch.maximum(-lo, hi)
        denom = torch.tensor((quant_max - quant_min) / 2, dtype=torch.float32)
        scale = torch.clamp(max_abs / denom, min=F32_EPS)
        zp = torch.full(lo.shape, int((quant_max + quant_min + 1) / 2), dtype=torch.int32)
        minval = -max_abs
    else:
        denom = torch.tensor(float(quant_max - quant_min), dtype=torch.float32)
        scale = torch.clamp((hi - lo) / denom, min=F32_EPS)
        zpf = torch.clamp(quant_min - torch.round(lo / scale), quant_min, quant_max)
        zp = torch.where(torch.isnan(zpf), float(quant_min), zpf).to(torch.int32)
        minval = lo
    return scale.to(min_val.dtype), zp, minval.to(min_val.dtype)


def e8m0_scale(max_abs: torch.Tensor, emax: int) -> torch.Tensor:
    """OCP MX FLOOR: 2^clamp(exponent(max_abs) - emax, -127, 128), at least 2^-126 (float32)."""
    bits = max_abs.to(torch.float32).contiguous().view(torch.int32)
    e = ((bits >> 23) & 0xFF) - 127
    es = torch.clamp(e - emax, -127, 128)
    scale = ((es + 127) << 23).to(torch.int32).view(torch.float32)
    return torch.clamp(scale, min=2.0**-126)


def choose_qparams_float(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    dtype: torch.dtype,
    e8m0: bool,
    range_min: float | None = None,
    range_max: float | None = None,
) -> torch.Tensor:
    """max_abs / fmax >= eps (in min's dtype), or the E8M0 FLOOR rule (float32)."""
    lo, hi = _range_ends(min_val, max_val, range_min, range_max)
    max_abs = torch.maximum(-lo, hi)
    fmax, emax = FLOAT_FORMATS[dtype]
    if e8m0:
        return e8m0_scale(max_abs, emax)
    fmax32 = torch.tensor(fmax, dtype=torch.float32)
    return torch.clamp(max_abs / fmax32, min=F32_EPS).to(min_val.dtype)


# ---- pack ---------------------------------------------------------------------------------


def e2m1_code(v: torch.Tensor) -> torch.Tensor:
    """4-bit E2M1 code (sign << 3 | magnitude index) of float v after saturating RNE."""
    r = round_e2m1(torch.clamp(v.to(torch.float32), -6.0, 6.0))
    grid = torch.tensor(E2M1_GRID, dtype=torch.float32)
    mag = (r.abs().unsqueeze(-1) == grid).to(torch.int64).argmax(dim=-1)
    sign = torch.signbit(r).to(torch.int64)
    return (sign << 3) | mag


def pack(q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Packs codes along the last dim, the lower index in the lower bits, into uint8."""
    bits = PACK_BITS[dtype]
    per_byte = 8 // bits
    codes = e2m1_code(q) if dtype == torch.float4_e2m1fn_x2 else q.to(torch.int64)
    codes = codes & (2**bits - 1)
    codes = codes.reshape(*q.shape[:-1], q.shape[-1] // per_byte, per_byte)
    shifts = torch.arange(per_byte, dtype=torch.int64) * bits
    return (codes << shifts).sum(dim=-1).to(torch.uint8)


def unpack(packed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of pack: int8 (signed) / uint8 (unsigned) codes, or float32 FP4 values."""
    bits = PACK_BITS[dtype]
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, dtype=torch.int64) * bits
    codes = (packed.to(torch.int64).unsqueeze(-1) >> shifts) & (2**bits - 1)
    codes = codes.reshape(*packed.shape[:-1], packed.shape[-1] * per_byte)
    if dtype == torch.float4_e2m1fn_x2:
        grid = torch.tensor(E2M1_GRID, dtype=torch.float32)
        mag = grid[codes & 7]
        return torch.where((codes >> 3) == 1, -mag, mag)
    if INT_DTYPES[dtype][1]:
        codes = torch.where(codes >= 2 ** (bits - 1), codes - 2**bits, codes)
        return codes.to(torch.int8)
    return codes.to(torch.uint8)
