"""Bad input raises a clear ValueError / TypeError naming the problem; nothing crashes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from ops_cases import FusedFormat, fresh_fused_state, fused_kwargs

ops = torch.ops.coreai_opt

INT8 = FusedFormat(torch.int8, -128, 127, symmetric=True)
"""The int8 format of the fused-op checks; a test swaps the dtype to reach one check."""


def fq_int(x: torch.Tensor, scale: torch.Tensor, **kw: object) -> torch.Tensor:
    """fake_quantize_int with defaults for everything but x and scale."""
    args = {"zero_point": None, "minval": None, "quant_min": -128, "quant_max": 127, **kw}
    return ops.fake_quantize_int(
        x, scale, args["zero_point"], args["minval"], args["quant_min"], args["quant_max"]
    )


# Every op that takes a (x, scale) pair, as (name, call(x, scale)).
SCALE_OPS = [
    pytest.param(lambda x, s: fq_int(x, s), id="fake_quantize_int"),
    pytest.param(
        lambda x, s: ops.fake_quantize_int_backward(x, x, s, None, None, -128, 127),
        id="fake_quantize_int_backward",
    ),
    pytest.param(
        lambda x, s: ops.fake_quantize_float(x, s, torch.float8_e4m3fn), id="fake_quantize_float"
    ),
    pytest.param(
        lambda x, s: ops.fake_quantize_float_backward(x, x, s, torch.float8_e4m3fn),
        id="fake_quantize_float_backward",
    ),
    pytest.param(
        lambda x, s: ops.fake_quantize_lsq(x, s, torch.zeros_like(s), 0, 15, 1.0),
        id="fake_quantize_lsq",
    ),
    pytest.param(
        lambda x, s: ops.fake_quantize_lsq_backward(x, x, s, torch.zeros_like(s), 0, 15, 1.0),
        id="fake_quantize_lsq_backward",
    ),
]


@pytest.mark.parametrize("call", SCALE_OPS)
@pytest.mark.parametrize(
    ("x_shape", "q_shape", "why"),
    [
        ((8, 6), (3, 1), r"dimension 0 has 3 entries"),
        ((8, 6), (1, 4), r"dimension 1 has 4 entries"),
        ((8, 6), (6,), r"it has 1 dimensions but the input has 2"),
        ((8, 6), (1, 1, 1), r"it has 3 dimensions but the input has 2"),
        ((8, 6), (6, 8), r"dimension 0 has 6 entries"),
    ],
)
def test_scale_shape_fits_no_granularity(
    call: object, x_shape: tuple[int, ...], q_shape: tuple[int, ...], why: str
) -> None:
    """The message names the op, both shapes and the offending dimension."""
    x, s = torch.randn(x_shape), torch.full(q_shape, 0.1)
    xs = ", ".join(map(str, x_shape))
    qs = ", ".join(map(str, q_shape))
    pattern = rf"scale of shape \[{qs}\] fits no granularity of an input of shape \[{xs}\]"
    with pytest.raises(ValueError, match=pattern) as info:
        call(x, s)  # type: ignore[operator]
    assert "coreai_opt." in str(info.value)
    assert len(__import__("re").findall(why, str(info.value))) == 1


@pytest.mark.parametrize("call", SCALE_OPS)
@pytest.mark.parametrize("bad", [0.0, -0.5, math.nan], ids=["zero", "negative", "nan"])
def test_non_positive_or_nan_scale(call: object, bad: float) -> None:
    x = torch.randn(4, 6)
    s = torch.full((4, 1), 0.1)
    s[2, 0] = bad
    with pytest.raises(ValueError, match=r"every scale must be positive and not NaN.*flat index 2"):
        call(x, s)  # type: ignore[operator]


@pytest.mark.parametrize("call", SCALE_OPS)
@pytest.mark.parametrize("xdtype", [torch.int32, torch.int8, torch.bool, torch.complex64], ids=str)
def test_integer_input_is_a_type_error(call: object, xdtype: torch.dtype) -> None:
    x = torch.ones(4, 6).to(xdtype)
    with pytest.raises(TypeError, match=r"x has dtype .*allowed: torch\.float32"):
        call(x, torch.tensor(0.1))  # type: ignore[operator]


@pytest.mark.parametrize(("quant_min", "quant_max"), [(5, 5), (7, -8), (0, -1)])
def test_quant_min_not_below_quant_max(quant_min: int, quant_max: int) -> None:
    pattern = rf"quant_min \({quant_min}\) must be smaller than quant_max \({quant_max}\)"
    with pytest.raises(ValueError, match=pattern):
        fq_int(torch.randn(3), torch.tensor(0.1), quant_min=quant_min, quant_max=quant_max)
    with pytest.raises(ValueError, match=pattern):
        ops.fake_quantize_lsq(
            torch.randn(3), torch.tensor(0.1), torch.tensor(0.0), quant_min, quant_max, 1.0
        )
    with pytest.raises(ValueError, match=pattern):
        ops.choose_qparams_int(torch.zeros(1), torch.ones(1), quant_min, quant_max, True)


@pytest.mark.parametrize(("quant_min", "quant_max"), [(-129, 127), (0, 256)])
def test_range_outside_container(quant_min: int, quant_max: int) -> None:
    with pytest.raises(ValueError, match=r"must lie inside \[-128, 255\]"):
        fq_int(torch.randn(3), torch.tensor(0.1), quant_min=quant_min, quant_max=quant_max)


def test_offsets() -> None:
    x, s = torch.randn(4, 6), torch.full((4, 1), 0.1)
    with pytest.raises(ValueError, match="not both"):
        fq_int(x, s, zero_point=torch.zeros(4, 1, dtype=torch.int32), minval=torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"zero_point has shape \[1, 6\] but scale has shape"):
        fq_int(x, s, zero_point=torch.zeros(1, 6, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"minval has shape \[4\] but scale has shape \[4, 1\]"):
        fq_int(x, s, minval=torch.zeros(4))
    with pytest.raises(ValueError, match=r"grad has shape \[4, 5\] but x has shape \[4, 6\]"):
        ops.fake_quantize_int_backward(torch.randn(4, 5), x, s, None, None, -128, 127)


def test_float_dtype_and_scale_dtype() -> None:
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match=r"fake_quantize_float: dtype is .*allowed"):
        ops.fake_quantize_float(x, torch.tensor(0.1), torch.int8)
    with pytest.raises(TypeError, match=r"scale has dtype .*float8_e8m0fnu"):
        ops.fake_quantize_float(x, torch.tensor(1, dtype=torch.int32), torch.float8_e4m3fn)
    with pytest.raises(TypeError, match=r"scale has dtype"):
        fq_int(x, torch.tensor(1, dtype=torch.int32))


def test_e8m0_nan_scale() -> None:
    s = torch.tensor([[1.0], [2.0]]).to(torch.float8_e8m0fnu)
    s.view(torch.uint8)[1, 0] = 255  # the E8M0 NaN code
    with pytest.raises(ValueError, match="positive and not NaN"):
        ops.fake_quantize_float(torch.randn(2, 4), s, torch.float8_e4m3fn)


@pytest.mark.parametrize(
    ("block", "pattern"),
    [
        ([1, 5], r"block_size\[1\] = 5 does not divide the input's dimension 1 of size 12"),
        ([3, 12], r"block_size\[0\] = 3 does not divide the input's dimension 0 of size 8"),
        ([1, 0], r"block_size\[1\] is 0; block sizes must be positive"),
        ([12], r"block_size has 1 entries but the input has 2 dimensions"),
    ],
)
def test_bad_block_size(block: list[int], pattern: str) -> None:
    x = torch.randn(8, 12)
    state = fresh_fused_state((8, 1))
    rmin, rmax = state[0], state[1]
    with pytest.raises(ValueError, match=pattern):
        ops.minmax(x, block)
    with pytest.raises(ValueError, match=pattern):
        ops.update_range(x, rmin, rmax, block, "static")
    with pytest.raises(ValueError, match=pattern):
        ops.fused_fake_quantize(
            **fused_kwargs(x, torch.tensor(True), torch.tensor(True), state, block, INT8, "static")
        )


def test_update_range_state_checks() -> None:
    x = torch.randn(8, 12)
    good = torch.zeros(8, 1)
    with pytest.raises(ValueError, match=r"method is 'ema'; allowed"):
        ops.update_range(x, good, good.clone(), [1, 12], "ema")
    with pytest.raises(TypeError, match=r"running_min has dtype .*must be"):
        ops.update_range(x, good.double(), good, [1, 12], "static")
    with pytest.raises(ValueError, match=r"running_max has shape .*block sizes give"):
        ops.update_range(x, good, torch.zeros(1, 8), [1, 12], "static")
    with pytest.raises(ValueError, match=r"running_min must be contiguous"):
        ops.update_range(x, torch.zeros(8, 2)[:, :1], good, [1, 12], "static")
    with pytest.raises(TypeError, match="x has dtype"):
        ops.minmax(torch.ones(8, 12, dtype=torch.int32), [1, 12])


def test_fused_checks() -> None:
    x = torch.randn(4, 8)
    t = torch.tensor(True)
    with pytest.raises(ValueError, match=r"\[-128, 127\] does not fit torch.int4|Int4"):
        ops.fused_fake_quantize(
            **fused_kwargs(
                x,
                t,
                t,
                fresh_fused_state((4, 1)),
                [1, 8],
                replace(INT8, dtype=torch.int4),
                "static",
            )
        )
    with pytest.raises(ValueError, match="observer_on must hold exactly one element"):
        ops.fused_fake_quantize(
            **fused_kwargs(
                x,
                torch.ones(2, dtype=torch.bool),
                t,
                fresh_fused_state((4, 1)),
                [1, 8],
                INT8,
                "static",
            )
        )
    st = fresh_fused_state((4, 1))
    st[3] = st[3].float()
    with pytest.raises(TypeError, match=r"zero_point has dtype .*must be"):
        ops.fused_fake_quantize(**fused_kwargs(x, t, t, st, [1, 8], INT8, "static"))
    with pytest.raises(ValueError, match=r"running_min has shape \[4, 1\] but the block sizes"):
        ops.fused_fake_quantize(
            **fused_kwargs(x, t, t, fresh_fused_state((4, 1)), [4, 8], INT8, "static")
        )
    with pytest.raises(ValueError, match=r"range_min is 1.*must be <= 0"):
        ops.fused_fake_quantize(
            **fused_kwargs(
                x, t, t, fresh_fused_state((4, 1)), [1, 8], INT8, "static", 0.01, 1.0, 2.0
            )
        )
    with pytest.raises(ValueError, match=r"allowed: torch\.int8"):
        ops.fused_fake_quantize(
            **fused_kwargs(
                x,
                t,
                t,
                fresh_fused_state((4, 1)),
                [1, 8],
                replace(INT8, dtype=torch.float32),
                "static",
            )
        )


def test_choose_qparams_checks() -> None:
    lo, hi = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match=r"max has shape \[4\] but min has shape \[3\]"):
        ops.choose_qparams_int(lo, torch.ones(4), -128, 127, True)
    with pytest.raises(ValueError, match=r"range_max is -1.*must be >= 0"):
        ops.choose_qparams_int(lo, hi, -128, 127, True, None, -1.0)
    with pytest.raises(ValueError, match=r"range_min \(0\) must be smaller than range_max \(0\)"):
        ops.choose_qparams_float(lo, hi, torch.float8_e4m3fn, False, 0.0, 0.0)
    with pytest.raises(ValueError, match="choose_qparams_float: dtype is"):
        ops.choose_qparams_float(lo, hi, torch.int8, False)
    with pytest.raises(TypeError, match="min has dtype"):
        ops.choose_qparams_int(lo.int(), hi, -128, 127, True)
