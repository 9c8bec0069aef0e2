"""Test inputs shared by the op tests: granularities, ranges, dtypes and data generators."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest
import torch
from reference import FLOAT_FORMATS, INT_DTYPES, int_range

INPUT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
"""Every input dtype the ops accept."""

# (x shape, qparam shape); a qparam dim is 1, the input's size or size / block.
GRANULARITIES: list = [
    pytest.param((13, 7), (), id="tensor-0d"),
    pytest.param((13, 7), (1, 1), id="tensor-ones"),
    pytest.param((1037,), (1,), id="tensor-1d-tail"),
    pytest.param((33, 7), (33, 1), id="channel-dim0"),
    pytest.param((5, 33), (1, 33), id="channel-last"),
    pytest.param((2, 3, 5, 7), (1, 3, 1, 1), id="channel-middle"),
    pytest.param((64, 128), (64, 4), id="block-last"),
    pytest.param((64, 24), (2, 1), id="block-dim0"),
    pytest.param((64, 24), (2, 24), id="block-dim0-channel-last"),
    pytest.param((8, 12, 6), (2, 3, 1), id="block-tuple"),
    pytest.param((3, 33), (3, 11), id="block-odd"),
    pytest.param((7,), (7,), id="elementwise-odd"),
    pytest.param((300, 257), (1, 1), id="tensor-parallel"),
    pytest.param((300, 257), (300, 1), id="channel-dim0-parallel"),
    pytest.param((257, 300), (1, 300), id="channel-last-parallel"),
    pytest.param((96, 520), (96, 13), id="block-last-parallel"),
]
"""Granularities by scale shape, including odd sizes (vector tails) and parallel sizes."""


# Every tensor op of the library (each device registers a kernel for each).
TENSOR_OPS = [
    "fake_quantize_int",
    "fake_quantize_int_backward",
    "fake_quantize_float",
    "fake_quantize_float_backward",
    "fake_quantize_lsq",
    "fake_quantize_lsq_backward",
    "minmax",
    "update_range",
    "choose_qparams_int",
    "choose_qparams_float",
    "fused_fake_quantize",
    "fused_fake_quantize_backward",
    "fused_fake_quantize_cachemask",
    "fake_quantize_mask_backward",
    "fake_quantize_mask_backward_",
    "pack",
    "unpack",
    "quantize",
    "dequantize",
    "blockwise_shift_scale",
    "channel_scale_shift",
    "channel_scale_shift_backward",
]


def int_ranges() -> list:
    """Every (quant_min, quant_max) of int2..int8 / uint2..uint8, plus the narrow signed ones."""
    out = []
    for dtype, (bits, signed) in INT_DTYPES.items():
        name = str(dtype).removeprefix("torch.")
        out.append(pytest.param(*int_range(bits, signed), id=name))
        if signed:
            out.append(pytest.param(*int_range(bits, signed, narrow=True), id=f"{name}-narrow"))
    return out


def random_scale(shape: Sequence[int], lo: float = 0.01, hi: float = 0.1) -> torch.Tensor:
    """Positive float32 scales in [lo, hi)."""
    return torch.rand(tuple(shape)) * (hi - lo) + lo


def block_size_of(x_shape: Sequence[int], q_shape: Sequence[int]) -> list[int]:
    """The block size that gives q_shape (a 0-d / ones q_shape reduces every dim)."""
    q = list(q_shape) if len(q_shape) else [1] * len(x_shape)
    return [xs // qs for xs, qs in zip(x_shape, q, strict=True)]


def sprinkle_specials(
    x: torch.Tensor, scale_full: torch.Tensor, quant_span: float, rounding_ties: bool = True
) -> torch.Tensor:
    """Puts exact rounding ties, out-of-range values, ±inf, NaN and ±0 into float32 x."""
    flat = x.reshape(-1).clone()
    s = scale_full.reshape(-1)
    n = flat.numel()
    if rounding_ties and n > 8:
        # Multiples of s/2: exact ties k + 0.5 for power-of-two scales, near-ties otherwise.
        k = torch.arange(n // 4) - n // 8
        flat[: n // 4] = (k.to(torch.float32) + 0.5) * s[: n // 4]
    if n > 16:
        flat[-1] = float("nan")
        flat[-2] = float("inf")
        flat[-3] = -float("inf")
        flat[-4] = 3 * quant_span * s[-4]
        flat[-5] = -3 * quant_span * s[-5]
        flat[-6] = 0.0
        flat[-7] = -0.0
    return flat.reshape(x.shape)


def int_input(
    x_shape: Sequence[int], scale: torch.Tensor, quant_min: int, quant_max: int
) -> torch.Tensor:
    """float32 x spanning a bit more than the quantization range, with specials."""
    from reference import expand_qparam

    s = expand_qparam(scale, x_shape)
    span = float(quant_max - quant_min)
    x = (torch.rand(tuple(x_shape)) - 0.5) * 1.4 * span * s
    return sprinkle_specials(x, s, span)


def assert_same_bits(got: torch.Tensor, want: torch.Tensor) -> None:
    """NaN where `want` has NaN; every other element equal bit for bit (-0 is not +0)."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert torch.equal(got.isnan(), want.isnan())
    keep = ~want.isnan()
    ints = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}
    assert torch.equal(got[keep].view(ints[got.dtype]), want[keep].view(ints[got.dtype]))


# ---- fused_fake_quantize: the one place its argument lists are written ----------------------


def fresh_fused_state(q_shape: Sequence[int]) -> list[torch.Tensor]:
    """running_min, running_max, scale, zero_point, minval of a fresh FakeQuantize.

    Uninitialised running range (+inf / -inf), scale 1, zero_point and minval 0; float32
    buffers and an int32 zero_point of qparam shape ``q_shape``, in schema order.
    """
    q = tuple(q_shape)
    return [
        torch.full(q, math.inf),
        torch.full(q, -math.inf),
        torch.ones(q),
        torch.zeros(q, dtype=torch.int32),
        torch.zeros(q),
    ]


@dataclass(frozen=True)
class FusedFormat:
    """The quantization format of a fused call (the op's format arguments)."""

    dtype: torch.dtype
    quant_min: int = 0
    quant_max: int = 0
    symmetric: bool = True
    use_minval: bool = False
    e8m0: bool = False

    @property
    def is_float(self) -> bool:
        """Float formats keep zero_point / minval untouched."""
        return self.dtype in FLOAT_FORMATS


def fused_kwargs(
    x: torch.Tensor,
    observer_on: torch.Tensor,
    fake_quant_on: torch.Tensor,
    state: Sequence[torch.Tensor],
    block_size: Sequence[int],
    fmt: FusedFormat,
    method: str,
    averaging_constant: float = 0.01,
    range_min: float | None = None,
    range_max: float | None = None,
) -> dict[str, object]:
    """Keyword arguments of ``torch.ops.coreai_opt.fused_fake_quantize``.

    ``state`` is (running_min, running_max, scale, zero_point, minval), e.g. from
    :func:`fresh_fused_state`; the op mutates those tensors in place. Call the op as
    ``ops.fused_fake_quantize(**fused_kwargs(...))``, or pass the result through
    :func:`schema_args` where a dispatch path takes positional arguments only.
    """
    running_min, running_max, scale, zero_point, minval = state
    return {
        "x": x,
        "observer_on": observer_on,
        "fake_quant_on": fake_quant_on,
        "running_min": running_min,
        "running_max": running_max,
        "scale": scale,
        "zero_point": zero_point,
        "minval": minval,
        "block_size": list(block_size),
        "dtype": fmt.dtype,
        "quant_min": fmt.quant_min,
        "quant_max": fmt.quant_max,
        "symmetric": fmt.symmetric,
        "use_minval": fmt.use_minval,
        "e8m0": fmt.e8m0,
        "method": method,
        "averaging_constant": averaging_constant,
        "range_min": range_min,
        "range_max": range_max,
    }


def fused_backward_kwargs(
    grad: torch.Tensor,
    x: torch.Tensor,
    fake_quant_on: torch.Tensor,
    qparams: Sequence[torch.Tensor],
    fmt: FusedFormat,
) -> dict[str, object]:
    """Keyword arguments of ``torch.ops.coreai_opt.fused_fake_quantize_backward``.

    ``qparams`` is (scale, zero_point, minval), e.g. ``state[2:]`` of a fused state.
    """
    scale, zero_point, minval = qparams
    return {
        "grad": grad,
        "x": x,
        "fake_quant_on": fake_quant_on,
        "scale": scale,
        "zero_point": zero_point,
        "minval": minval,
        "dtype": fmt.dtype,
        "quant_min": fmt.quant_min,
        "quant_max": fmt.quant_max,
        "use_minval": fmt.use_minval,
    }


def schema_args(overload: torch._ops.OpOverload, kwargs: Mapping[str, object]) -> tuple:
    """``kwargs`` as a positional tuple in the order of ``overload``'s schema.

    For the paths that take positional arguments only (boxed kernel calls, opcheck cases);
    every schema argument must be present in ``kwargs``.
    """
    names = [a.name for a in overload._schema.arguments]
    assert set(kwargs) == set(names), sorted(set(kwargs) ^ set(names))
    return tuple(kwargs[n] for n in names)
