"""Plain-PyTorch statement of the range and qparam formulas (behaviour.md §3).

Written from the formulas, independently of the library's Python and C++ code: the
calculators are checked against these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

EPS = torch.finfo(torch.float32).eps
FLOAT_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0, torch.float4_e2m1fn_x2: 6.0}
MAX_POW2 = {torch.float8_e4m3fn: 8, torch.float8_e5m2: 15, torch.float4_e2m1fn_x2: 2}


def block_minmax(x: torch.Tensor, block: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """amin/amax of every block by looping over block indices (float32 results)."""
    x = x.float()
    out_shape = [s // b for s, b in zip(x.shape, block, strict=True)]
    lo = torch.empty(out_shape)
    hi = torch.empty(out_shape)
    for index in torch.cartesian_prod(*[torch.arange(n) for n in out_shape]).reshape(
        -1, len(out_shape)
    ):
        sl = tuple(slice(int(i) * b, (int(i) + 1) * b) for i, b in zip(index, block, strict=True))
        part = x[sl]
        lo[tuple(index)] = part.min()
        hi[tuple(index)] = part.max()
    return lo, hi


def fold(
    method: str,
    lo: torch.Tensor,
    hi: torch.Tensor,
    run: tuple[torch.Tensor, torch.Tensor] | None,
    c: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running range after one batch (None = nothing observed yet)."""
    if run is None or method == "static":
        return lo.clone(), hi.clone()
    rlo, rhi = run
    if method == "moving_average":
        c32 = torch.tensor(c, dtype=torch.float32)
        keep = torch.tensor(1.0, dtype=torch.float32) - c32
        return c32 * lo + keep * rlo, c32 * hi + keep * rhi
    return torch.minimum(rlo, lo), torch.maximum(rhi, hi)


def int_qparams(
    lo: torch.Tensor,
    hi: torch.Tensor,
    qmin: int,
    qmax: int,
    symmetric: bool,
    float_range: Sequence[float | None] = (None, None),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scale, zero_point int32, minval) from a float32 range."""
    lo = torch.full_like(lo, float_range[0]) if float_range[0] is not None else lo.clamp(max=0)
    hi = torch.full_like(hi, float_range[1]) if float_range[1] is not None else hi.clamp(min=0)
    if symmetric:
        max_abs = torch.maximum(-lo, hi)
        scale = (max_abs / torch.tensor((qmax - qmin) / 2, dtype=torch.float32)).clamp(min=EPS)
        zp = torch.full_like(scale, int((qmax + qmin + 1) / 2), dtype=torch.int32)
        return scale, zp, -max_abs
    scale = ((hi - lo) / float(qmax - qmin)).clamp(min=EPS)
    zp = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zp, lo


def float_qparams(
    lo: torch.Tensor,
    hi: torch.Tensor,
    dtype: torch.dtype,
    e8m0: bool,
    float_range: Sequence[float | None] = (None, None),
) -> torch.Tensor:
    """Scale of a float format (max_abs / max, or the OCP MX FLOOR power of two)."""
    lo = torch.full_like(lo, float_range[0]) if float_range[0] is not None else lo.clamp(max=0)
    hi = torch.full_like(hi, float_range[1]) if float_range[1] is not None else hi.clamp(min=0)
    max_abs = torch.maximum(-lo, hi)
    if not e8m0:
        return (max_abs / FLOAT_MAX[dtype]).clamp(min=EPS)
    out = torch.empty_like(max_abs)
    for i, value in enumerate(max_abs.reshape(-1).tolist()):
        bits = torch.tensor([value], dtype=torch.float32).view(torch.int32).item()
        exp = ((bits >> 23) & 0xFF) - 127
        e_s = min(max(exp - MAX_POW2[dtype], -127), 128)
        out.view(-1)[i] = max(math.ldexp(1.0, e_s), 2.0**-126)
    return out
