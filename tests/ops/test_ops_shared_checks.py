"""CPU, Meta and the CompositeExplicitAutograd reference reject bad arguments alike."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch._C import DispatchKey, DispatchKeySet

ops = torch.ops.coreai_opt


def _fused_args(device: str, dtype: torch.dtype, qmin: int, qmax: int, lo, hi) -> tuple:
    """Arguments of fused_fake_quantize for a 4 x 8 input with per-tensor state."""
    f32 = {"device": device, "dtype": torch.float32}
    on = torch.ones(1, dtype=torch.uint8, device=device)
    return (
        torch.randn(4, 8, **f32),
        on,
        on,
        torch.full((1, 1), float("inf"), **f32),
        torch.full((1, 1), float("-inf"), **f32),
        torch.ones(1, 1, **f32),
        torch.zeros(1, 1, dtype=torch.int32, device=device),
        torch.zeros(1, 1, **f32),
        [4, 8],
        dtype,
        qmin,
        qmax,
        True,
        False,
        False,
        "static",
        0.01,
        lo,
        hi,
    )


def _call(path: str) -> Callable[..., object]:
    """How to reach one kernel: CPU and Meta by device, the reference by redispatch."""
    if path == "reference":
        keys = DispatchKeySet(DispatchKey.CompositeExplicitAutograd)
        return lambda op, *args: op.default.redispatch(keys, *args)
    return lambda op, *args: op(*args)


PATHS = ["cpu", "meta", "reference"]


@pytest.mark.parametrize("path", PATHS)
def test_fused_range_must_fit_the_dtype(path: str) -> None:
    """int4 with [-128, 127] is refused on every path, naming the dtype's range."""
    device = "meta" if path == "meta" else "cpu"
    args = _fused_args(device, torch.int4, -128, 127, None, None)
    with pytest.raises(ValueError, match=r"does not fit torch\.int4, whose range is \[-8, 7\]"):
        _call(path)(ops.fused_fake_quantize, *args)


@pytest.mark.parametrize("path", PATHS)
def test_fused_float_range_is_checked(path: str) -> None:
    """range_min must be <= 0 on every path."""
    device = "meta" if path == "meta" else "cpu"
    args = _fused_args(device, torch.int8, -128, 127, 0.5, 2.0)
    with pytest.raises(ValueError, match=r"range_min is 0\.5; it must be <= 0"):
        _call(path)(ops.fused_fake_quantize, *args)


@pytest.mark.parametrize("path", PATHS)
def test_choose_qparams_float_range_is_checked(path: str) -> None:
    """range_min >= range_max is refused by both qparam ops on every path."""
    device = "meta" if path == "meta" else "cpu"
    lo = torch.zeros(2, device=device)
    with pytest.raises(ValueError, match="must be smaller than range_max"):
        _call(path)(ops.choose_qparams_int, lo, lo, -128, 127, True, 0.0, 0.0)
    with pytest.raises(ValueError, match="must be smaller than range_max"):
        _call(path)(ops.choose_qparams_float, lo, lo, torch.float8_e4m3fn, False, 0.0, 0.0)
