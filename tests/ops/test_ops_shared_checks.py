"""Every op refuses bad arguments on CPU, Meta and the CompositeExplicitAutograd reference
with the same exception type and the same message: one check function per op
(csrc/ops/checks.cpp) is called first by every device's kernel. torch.compile runs the
Meta kernel first, so a compiled call fails exactly as an eager one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from ops_cases import (
    TENSOR_OPS,
    FusedFormat,
    fresh_fused_state,
    fused_backward_kwargs,
    fused_kwargs,
)
from ops_cases import schema_args as positional
from torch._C import DispatchKey, DispatchKeySet

ops = torch.ops.coreai_opt

PATHS = ["cpu", "meta", "reference"]
_REFERENCE = DispatchKeySet(DispatchKey.CompositeExplicitAutograd)


def _x() -> torch.Tensor:
    return torch.randn(4, 8)


def _fq_int() -> dict:
    return {
        "x": _x(),
        "scale": torch.full((4, 1), 0.1),
        "zero_point": None,
        "minval": None,
        "quant_min": -128,
        "quant_max": 127,
    }


def _fq_float() -> dict:
    return {"x": _x(), "scale": torch.full((4, 1), 0.1), "dtype": torch.float8_e4m3fn}


def _lsq() -> dict:
    return {
        "x": _x(),
        "scale": torch.full((4, 1), 0.1),
        "zero_point": torch.zeros(4, 1),
        "quant_min": 0,
        "quant_max": 15,
        "grad_factor": 1.0,
    }


def _backward(base: Callable[[], dict]) -> Callable[[], dict]:
    """The backward op's arguments: a gradient of x's shape, then the forward's."""

    def make() -> dict:
        kw = base()
        return {"grad": torch.ones_like(kw["x"]), **kw}

    return make


def _update_range() -> dict:
    return {
        "x": _x(),
        "running_min": torch.full((4, 1), math.inf),
        "running_max": torch.full((4, 1), -math.inf),
        "block_size": [1, 8],
        "method": "static",
        "averaging_constant": 0.01,
    }


def _qparams_int() -> dict:
    return {
        "min": torch.full((4, 1), -1.0),
        "max": torch.full((4, 1), 1.0),
        "quant_min": -128,
        "quant_max": 127,
        "symmetric": True,
        "range_min": None,
        "range_max": None,
    }


def _qparams_float() -> dict:
    return {
        "min": torch.full((4, 1), -1.0),
        "max": torch.full((4, 1), 1.0),
        "dtype": torch.float8_e4m3fn,
        "e8m0": False,
        "range_min": None,
        "range_max": None,
    }


_ON = torch.ones(1, dtype=torch.uint8)
_INT8 = FusedFormat(torch.int8, -128, 127)


def _fused(fmt: FusedFormat = _INT8, block: tuple[int, ...] = (1, 8), **kw: object) -> dict:
    return fused_kwargs(_x(), _ON, _ON, fresh_fused_state((4, 1)), block, fmt, "static") | kw


def _fused_backward(fmt: FusedFormat = _INT8) -> dict:
    qparams = fresh_fused_state((4, 1))[2:]
    return fused_backward_kwargs(torch.ones(4, 8), _x(), _ON, qparams, fmt)


def _mask_backward() -> dict:
    return {"grad": torch.ones(4, 8), "mask": torch.ones(4, 8, dtype=torch.bool)}


def _channel() -> dict:
    return {"x": torch.ones(2, 4, 3), "scale": torch.ones(4), "shift": torch.zeros(4)}


def _channel_backward() -> dict:
    return {"grad": torch.ones(2, 4, 3), "x": torch.ones(2, 4, 3), "scale": torch.ones(4)}


def _quantize() -> dict:
    return {
        "input": _x(),
        "scale": torch.full((4,), 0.1),
        "output_dtype": torch.int8,
        "zero_point": None,
        "minval": None,
        "axis": 0,
    }


def _codes() -> torch.Tensor:
    return torch.zeros(4, 8, dtype=torch.int8)


def _dequantize() -> dict:
    return {
        "input": _codes(),
        "scale": torch.full((4,), 0.1),
        "zero_point": None,
        "minval": None,
        "axis": 0,
        "input_dtype": None,
        "output_dtype": None,
    }


def _blockwise() -> dict:
    return {
        "input": _codes(),
        "scale": torch.full((4, 2), 0.1),
        "zero_point": None,
        "minval": None,
        "input_dtype": None,
        "output_dtype": None,
    }


def _case(op: str, base: Callable[[], dict], **override: object) -> Callable[[], dict]:
    """A call of `op`: the base arguments with some replaced (a callable makes a value)."""

    def make() -> dict:
        kw = base()
        for name, value in override.items():
            kw[name] = value() if callable(value) else value
        return kw

    make.op = op  # type: ignore[attr-defined]
    return make


def _noncontiguous_state() -> dict:
    kw = _update_range()
    kw["block_size"] = [1, 1]
    kw["running_min"] = torch.full((8, 4), math.inf).t()
    kw["running_max"] = torch.full((4, 8), -math.inf)
    return kw


ints = torch.ones(4, 8, dtype=torch.int32)
CASES = {
    # fake_quantize_int
    "fq_int/x_dtype": _case("fake_quantize_int", _fq_int, x=ints),
    "fq_int/scale_dtype": _case(
        "fake_quantize_int", _fq_int, scale=lambda: torch.ones(4, 1, dtype=torch.int32)
    ),
    "fq_int/empty_range": _case("fake_quantize_int", _fq_int, quant_min=5, quant_max=5),
    "fq_int/container": _case("fake_quantize_int", _fq_int, quant_min=-200),
    "fq_int/scale_shape": _case("fake_quantize_int", _fq_int, scale=lambda: torch.ones(3, 1)),
    "fq_int/both_offsets": _case(
        "fake_quantize_int",
        _fq_int,
        zero_point=lambda: torch.zeros(4, 1, dtype=torch.int32),
        minval=lambda: torch.zeros(4, 1),
    ),
    "fq_int/zp_shape": _case(
        "fake_quantize_int", _fq_int, zero_point=lambda: torch.zeros(1, 1, dtype=torch.int32)
    ),
    "fq_int/minval_shape": _case("fake_quantize_int", _fq_int, minval=lambda: torch.zeros(2, 1)),
    # fake_quantize_int_backward
    "fq_int_bw/grad_shape": _case(
        "fake_quantize_int_backward", _backward(_fq_int), grad=lambda: torch.ones(4, 4)
    ),
    "fq_int_bw/grad_dtype": _case("fake_quantize_int_backward", _backward(_fq_int), grad=ints),
    "fq_int_bw/scale_dtype": _case(
        "fake_quantize_int_backward",
        _backward(_fq_int),
        scale=lambda: torch.ones(4, 1, dtype=torch.int64),
    ),
    "fq_int_bw/zp_shape": _case(
        "fake_quantize_int_backward", _backward(_fq_int), zero_point=lambda: torch.zeros(4, 2)
    ),
    # fake_quantize_float
    "fq_float/x_dtype": _case("fake_quantize_float", _fq_float, x=ints),
    "fq_float/scale_dtype": _case(
        "fake_quantize_float", _fq_float, scale=lambda: torch.ones(4, 1, dtype=torch.int32)
    ),
    "fq_float/format": _case("fake_quantize_float", _fq_float, dtype=torch.int8),
    "fq_float/scale_shape": _case("fake_quantize_float", _fq_float, scale=lambda: torch.ones(1, 3)),
    # fake_quantize_float_backward
    "fq_float_bw/grad_shape": _case(
        "fake_quantize_float_backward", _backward(_fq_float), grad=lambda: torch.ones(8, 4)
    ),
    "fq_float_bw/scale_dtype": _case(
        "fake_quantize_float_backward",
        _backward(_fq_float),
        scale=lambda: torch.ones(4, 1, dtype=torch.int32),
    ),
    # fake_quantize_lsq
    "lsq/zp_dtype": _case(
        "fake_quantize_lsq", _lsq, zero_point=lambda: torch.zeros(4, 1, dtype=torch.int32)
    ),
    "lsq/zp_shape": _case("fake_quantize_lsq", _lsq, zero_point=lambda: torch.zeros(1, 1)),
    "lsq/scale_dtype": _case(
        "fake_quantize_lsq", _lsq, scale=lambda: torch.ones(4, 1, dtype=torch.int32)
    ),
    "lsq/empty_range": _case("fake_quantize_lsq", _lsq, quant_min=3, quant_max=1),
    "lsq/scale_shape": _case("fake_quantize_lsq", _lsq, scale=lambda: torch.ones(4, 3)),
    # fake_quantize_lsq_backward
    "lsq_bw/grad_shape": _case(
        "fake_quantize_lsq_backward", _backward(_lsq), grad=lambda: torch.ones(4, 1)
    ),
    "lsq_bw/scale_dtype": _case(
        "fake_quantize_lsq_backward",
        _backward(_lsq),
        scale=lambda: torch.ones(4, 1, dtype=torch.int32),
    ),
    "lsq_bw/zp_shape": _case(
        "fake_quantize_lsq_backward", _backward(_lsq), zero_point=lambda: torch.zeros(2, 1)
    ),
    # minmax
    "minmax/x_dtype": _case("minmax", lambda: {"x": ints, "block_size": [1, 8]}),
    "minmax/block_rank": _case("minmax", lambda: {"x": _x(), "block_size": [8]}),
    "minmax/block_divides": _case("minmax", lambda: {"x": _x(), "block_size": [1, 3]}),
    # update_range
    "update_range/method": _case("update_range", _update_range, method="median"),
    "update_range/averaging": _case(
        "update_range", _update_range, method="moving_average", averaging_constant=0.0
    ),
    "update_range/state_dtype": _case(
        "update_range",
        _update_range,
        running_min=lambda: torch.full((4, 1), math.inf, dtype=torch.float64),
    ),
    "update_range/state_shape": _case(
        "update_range", _update_range, running_max=lambda: torch.zeros(4, 2)
    ),
    "update_range/state_contiguous": _case("update_range", _noncontiguous_state),
    "update_range/block_rank": _case("update_range", _update_range, block_size=[1, 8, 1]),
    # choose_qparams_int
    "qparams_int/shapes": _case("choose_qparams_int", _qparams_int, max=lambda: torch.ones(4, 2)),
    "qparams_int/min_dtype": _case(
        "choose_qparams_int", _qparams_int, min=lambda: torch.zeros(4, 1, dtype=torch.int32)
    ),
    "qparams_int/empty_range": _case("choose_qparams_int", _qparams_int, quant_max=-128),
    "qparams_int/range_min": _case("choose_qparams_int", _qparams_int, range_min=0.5),
    "qparams_int/range_order": _case(
        "choose_qparams_int", _qparams_int, range_min=0.0, range_max=0.0
    ),
    # choose_qparams_float
    "qparams_float/format": _case("choose_qparams_float", _qparams_float, dtype=torch.int8),
    "qparams_float/shapes": _case(
        "choose_qparams_float", _qparams_float, min=lambda: torch.ones(1, 1)
    ),
    "qparams_float/range_max": _case("choose_qparams_float", _qparams_float, range_max=-1.0),
    # fused_fake_quantize
    "fused/x_dtype": _case("fused_fake_quantize", _fused, x=ints),
    "fused/dtype": _case("fused_fake_quantize", _fused, dtype=torch.float32),
    "fused/range_fits": _case("fused_fake_quantize", _fused, dtype=torch.int4),
    "fused/float_range": _case("fused_fake_quantize", _fused, range_min=0.5),
    "fused/method": _case("fused_fake_quantize", _fused, method="ema"),
    "fused/averaging": _case(
        "fused_fake_quantize", _fused, method="moving_average", averaging_constant=1.5
    ),
    "fused/switch_numel": _case(
        "fused_fake_quantize", _fused, observer_on=lambda: torch.ones(2, dtype=torch.bool)
    ),
    "fused/switch_dtype": _case(
        "fused_fake_quantize", _fused, fake_quant_on=lambda: torch.ones(1, dtype=torch.complex64)
    ),
    "fused/block_rank": _case("fused_fake_quantize", _fused, block_size=[8]),
    "fused/block_divides": _case("fused_fake_quantize", _fused, block_size=[1, 3]),
    "fused/state_dtype": _case(
        "fused_fake_quantize", _fused, scale=lambda: torch.ones(4, 1, dtype=torch.float64)
    ),
    "fused/zero_point_dtype": _case(
        "fused_fake_quantize", _fused, zero_point=lambda: torch.zeros(4, 1)
    ),
    "fused/state_shape": _case("fused_fake_quantize", _fused, running_min=lambda: torch.ones(4, 2)),
    # fused_fake_quantize_backward
    "fused_bw/dtype": _case("fused_fake_quantize_backward", _fused_backward, dtype=torch.int32),
    "fused_bw/grad_shape": _case(
        "fused_fake_quantize_backward", _fused_backward, grad=lambda: torch.ones(4, 7)
    ),
    "fused_bw/switch_numel": _case(
        "fused_fake_quantize_backward", _fused_backward, fake_quant_on=lambda: torch.ones(3)
    ),
    "fused_bw/scale_shape": _case(
        "fused_fake_quantize_backward", _fused_backward, scale=lambda: torch.ones(3, 1)
    ),
    "fused_bw/float_scale_dtype": _case(
        "fused_fake_quantize_backward",
        lambda: _fused_backward(FusedFormat(torch.float8_e4m3fn)),
        scale=lambda: torch.ones(4, 1, dtype=torch.int32),
    ),
    # fused_fake_quantize_cachemask: fused_fake_quantize's checks under its own name
    "fused_cm/x_dtype": _case("fused_fake_quantize_cachemask", _fused, x=ints),
    "fused_cm/range_fits": _case("fused_fake_quantize_cachemask", _fused, dtype=torch.int4),
    "fused_cm/method": _case("fused_fake_quantize_cachemask", _fused, method="ema"),
    "fused_cm/block_divides": _case("fused_fake_quantize_cachemask", _fused, block_size=[1, 3]),
    "fused_cm/state_shape": _case(
        "fused_fake_quantize_cachemask", _fused, running_min=lambda: torch.ones(4, 2)
    ),
    # fake_quantize_mask_backward
    "mask_bw/mask_dtype": _case(
        "fake_quantize_mask_backward", _mask_backward, mask=lambda: torch.ones(4, 8)
    ),
    "mask_bw/grad_dtype": _case("fake_quantize_mask_backward", _mask_backward, grad=ints),
    "mask_bw_/mask_dtype": _case(
        "fake_quantize_mask_backward_", _mask_backward, mask=lambda: torch.ones(4, 8)
    ),
    "mask_bw_/grad_shape": _case(
        "fake_quantize_mask_backward_", _mask_backward, grad=lambda: torch.ones(4, 7)
    ),
    "mask_bw/shape": _case(
        "fake_quantize_mask_backward", _mask_backward, grad=lambda: torch.ones(4, 7)
    ),
    # pack / unpack
    "pack/dtype": _case(
        "pack", lambda: {"q": torch.zeros(4, 8, dtype=torch.int8), "dtype": torch.int8}
    ),
    "pack/int_codes_float": _case("pack", lambda: {"q": _x(), "dtype": torch.int4}),
    "pack/fp4_values_int": _case(
        "pack", lambda: {"q": torch.zeros(4, 8, dtype=torch.int8), "dtype": torch.float4_e2m1fn_x2}
    ),
    "pack/last_dim": _case(
        "pack", lambda: {"q": torch.zeros(4, 7, dtype=torch.int8), "dtype": torch.int2}
    ),
    "unpack/packed_dtype": _case(
        "unpack", lambda: {"packed": torch.zeros(4, 4, dtype=torch.int8), "dtype": torch.int4}
    ),
    "unpack/dtype": _case(
        "unpack",
        lambda: {"packed": torch.zeros(4, 4, dtype=torch.uint8), "dtype": torch.float8_e4m3fn},
    ),
    # quantize / dequantize / blockwise_shift_scale (the Core AI export ops)
    "quantize/output_dtype": _case("quantize", _quantize, output_dtype=torch.float32),
    "quantize/input_dtype": _case("quantize", _quantize, input=ints),
    "quantize/scale_rank": _case("quantize", _quantize, scale=lambda: torch.ones(4, 1)),
    "quantize/axis": _case("quantize", _quantize, axis=2),
    "quantize/channels": _case("quantize", _quantize, axis=-1),
    "quantize/both_offsets": _case(
        "quantize",
        _quantize,
        zero_point=lambda: torch.zeros(4, dtype=torch.int8),
        minval=lambda: torch.zeros(4),
    ),
    "quantize/zp_dtype": _case("quantize", _quantize, zero_point=lambda: torch.zeros(4)),
    "quantize/e8m0_int": _case(
        "quantize", _quantize, scale=lambda: torch.ones(4).to(torch.float8_e8m0fnu)
    ),
    "quantize/fp4_odd": _case(
        "quantize", _quantize, input=lambda: torch.randn(4, 7), output_dtype=torch.float4_e2m1fn_x2
    ),
    "dequantize/input_dtype_fits": _case("dequantize", _dequantize, input_dtype=torch.uint8),
    "dequantize/minval_input_dtype": _case(
        "dequantize", _dequantize, minval=lambda: torch.zeros(4)
    ),
    "dequantize/zp_dtype": _case(
        "dequantize", _dequantize, zero_point=lambda: torch.zeros(4, dtype=torch.int32)
    ),
    "dequantize/e8m0_output_dtype": _case(
        "dequantize",
        _dequantize,
        input=lambda: _codes().view(torch.float8_e4m3fn),
        scale=lambda: torch.ones(4).to(torch.float8_e8m0fnu),
    ),
    "dequantize/output_dtype": _case("dequantize", _dequantize, output_dtype=torch.int8),
    "channel/x_dtype": _case("channel_scale_shift", _channel, x=lambda: torch.ones(2, 4, 3).int()),
    "channel/x_rank": _case("channel_scale_shift", _channel, x=lambda: torch.ones(4)),
    "channel/scale_channels": _case("channel_scale_shift", _channel, scale=lambda: torch.ones(3)),
    "channel/scale_rank": _case("channel_scale_shift", _channel, scale=lambda: torch.ones(1, 4)),
    "channel/shift_dtype": _case(
        "channel_scale_shift", _channel, shift=lambda: torch.zeros(4, dtype=torch.float16)
    ),
    "channel_bw/grad_shape": _case(
        "channel_scale_shift_backward", _channel_backward, grad=lambda: torch.ones(2, 4, 2)
    ),
    "channel_bw/grad_dtype": _case(
        "channel_scale_shift_backward",
        _channel_backward,
        grad=lambda: torch.ones(2, 4, 3, dtype=torch.bfloat16),
    ),
    "channel_bw/scale_channels": _case(
        "channel_scale_shift_backward", _channel_backward, scale=lambda: torch.ones(5)
    ),
    "blockwise/rank": _case("blockwise_shift_scale", _blockwise, scale=lambda: torch.ones(4)),
    "blockwise/divides": _case("blockwise_shift_scale", _blockwise, scale=lambda: torch.ones(4, 3)),
    "blockwise/fp4_divides": _case(
        "blockwise_shift_scale",
        _blockwise,
        input=lambda: _codes().view(torch.uint8),
        scale=lambda: torch.ones(4, 5),
        input_dtype=torch.float4_e2m1fn_x2,
    ),
}


def _on(kw: dict, device: str) -> dict:
    """The arguments with every tensor moved to `device` (strides kept)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def _outcome(op_name: str, kw: dict, path: str) -> tuple[type, str]:
    """(exception type, message) of one call on one path; fails if the call succeeds."""
    overload = getattr(ops, op_name).default
    args = positional(overload, _on(kw, "meta") if path == "meta" else kw)
    try:
        if path == "reference":
            overload.redispatch(_REFERENCE, *args)
        else:
            overload(*args)
    except (ValueError, TypeError, RuntimeError) as e:
        return type(e), str(e).split("\nException raised from")[0]
    pytest.fail(f"{op_name} accepted the bad arguments on the {path} path")


def test_every_op_has_cases() -> None:
    """Each tensor op of the library is covered by at least one bad-argument case."""
    covered = {make.op for make in CASES.values()}  # type: ignore[attr-defined]
    assert covered == set(TENSOR_OPS)


@pytest.mark.parametrize("case", list(CASES))
def test_every_path_refuses_alike(case: str) -> None:
    """CPU, Meta and the reference raise the same exception type with the same message."""
    make = CASES[case]
    outcomes = {path: _outcome(make.op, make(), path) for path in PATHS}  # type: ignore[attr-defined]
    kind, message = outcomes["cpu"]
    assert kind in (ValueError, TypeError)
    assert message.startswith(f"coreai_opt.{make.op}: "), message  # type: ignore[attr-defined]
    for path in PATHS[1:]:
        assert outcomes[path] == outcomes["cpu"], (path, outcomes[path], outcomes["cpu"])


@pytest.mark.parametrize(
    "case", ["fused/range_fits", "fq_int/scale_shape", "update_range/state_shape"]
)
def test_compiled_call_fails_as_eager(case: str) -> None:
    """torch.compile (Meta kernel first) raises the eager call's message."""
    make = CASES[case]
    op = getattr(ops, make.op)  # type: ignore[attr-defined]
    kw = make()
    _, eager = _outcome(make.op, kw, "cpu")  # type: ignore[attr-defined]
    compiled = torch.compile(lambda k: op(**k), backend="aot_eager", fullgraph=True)
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:  # dynamo wraps the error type
        compiled(make())
    assert eager.split(" (")[0] in str(info.value)
