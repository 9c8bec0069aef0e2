"""_bind_fused_fake_quantize / _fused_fake_quantize_bound: fused_fake_quantize with its
arguments after x bound once in C++, and FakeQuantize's eager path that calls it."""

from __future__ import annotations

import copy
import gc
import io
import pickle

import pytest
import torch
from ops_cases import FusedFormat, fresh_fused_state, fused_kwargs, schema_args

from coreai_opt import _ops
from coreai_opt.quantization.spec import (
    QuantizationComponentFactory,
    QuantizationSpec,
    _state_epoch,
)

ops = torch.ops.coreai_opt
INT8 = FusedFormat(torch.int8, -128, 127)
UINT4_MINVAL = FusedFormat(torch.uint4, 0, 15, symmetric=False, use_minval=True)
FP8 = FusedFormat(torch.float8_e4m3fn)


def _args(x: torch.Tensor, q_shape: list[int], fmt: FusedFormat, method: str) -> tuple:
    """Fresh state and the fused op's arguments after x, in schema order."""
    on = torch.ones(1, dtype=torch.uint8)
    kwargs = fused_kwargs(
        x, on, on.clone(), fresh_fused_state(q_shape), [1, x.shape[1]], fmt, method
    )
    return schema_args(ops.fused_fake_quantize.default, kwargs)[1:]


@pytest.mark.parametrize("fmt", [INT8, UINT4_MINVAL, FP8], ids=["int8", "uint4-minval", "fp8"])
@pytest.mark.parametrize("method", ["moving_average", "static"])
def test_bound_call_matches_the_op(fmt: FusedFormat, method: str) -> None:
    """Output, gradient and every state tensor after three calls equal the direct op's."""
    torch.manual_seed(0)
    xs = [torch.randn(6, 8) * (i + 1) for i in range(3)]
    direct = _args(xs[0], [6, 1], fmt, method)
    bound_args = _args(xs[0], [6, 1], fmt, method)
    owner, handle = _ops.bind_fused_fake_quantize(bound_args)
    for x in xs:
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya = ops.fused_fake_quantize(xa, *direct)
        yb = _ops.fused_fake_quantize_bound(xb, handle)
        torch.testing.assert_close(yb, ya, rtol=0, atol=0)
        g = torch.randn_like(x)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(xb.grad, xa.grad, rtol=0, atol=0)
    for a, b in zip(direct[2:7], bound_args[2:7], strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    del owner


def test_bound_arguments_follow_the_switch_tensors_in_place() -> None:
    """The switches are bound by reference: turning fake-quant off in place is seen."""
    x = torch.randn(6, 8)
    args = _args(x, [6, 1], INT8, "moving_average")
    owner, handle = _ops.bind_fused_fake_quantize(args)
    assert not torch.equal(_ops.fused_fake_quantize_bound(x, handle), x)
    args[1][0] = 0  # fake_quant_on
    torch.testing.assert_close(_ops.fused_fake_quantize_bound(x, handle), x, rtol=0, atol=0)
    del owner


def test_a_freed_binding_is_refused_by_handle() -> None:
    x = torch.randn(6, 8)
    owner, handle = _ops.bind_fused_fake_quantize(_args(x, [6, 1], INT8, "static"))
    del owner
    gc.collect()
    with pytest.raises(RuntimeError, match=rf"no bound arguments with handle {handle} "):
        _ops.fused_fake_quantize_bound(x, handle)


def _fake_quantizer() -> torch.nn.Module:
    spec = QuantizationSpec(dtype="int8", qscheme="symmetric")
    return QuantizationComponentFactory.create_fake_quantizer(spec, "activation")


def test_fake_quantizer_calls_the_bound_form_and_rebinds_on_new_shapes() -> None:
    fq = _fake_quantizer()
    x = torch.randn(4, 8)
    fq(x)  # the first call sizes the state
    y = fq(x)
    assert fq._bound_args is not None
    first = fq._bound_args[1]
    fq(torch.randn(2, 8))  # another shape: other block sizes, a new binding
    assert fq._bound_args[1] != first
    fresh = _fake_quantizer()
    fresh.load_state_dict(fq.state_dict())
    fresh.enable_observer(False)
    fq.enable_observer(False)
    torch.testing.assert_close(fresh(x), fq(x), rtol=0, atol=0)
    assert y.shape == x.shape


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_bind_their_own_arguments(how: str) -> None:
    """A copy never uses the original's binding (its handle would point at the original's
    state tensors, or at nothing in another process)."""
    fq = _fake_quantizer()
    x = torch.randn(4, 8)
    fq(x)
    fq(x)
    if how == "deepcopy":
        copied = copy.deepcopy(fq)
    elif how == "pickle":
        copied = pickle.loads(pickle.dumps(fq))
    else:
        buffer = io.BytesIO()
        torch.save(fq, buffer)
        buffer.seek(0)
        copied = torch.load(buffer, weights_only=False)
    assert copied._bound_args is None
    fq.enable_observer(False)
    copied.enable_observer(False)
    torch.testing.assert_close(copied(x), fq(x), rtol=0, atol=0)
    assert copied._bound_args is not None and copied._bound_args[1] != fq._bound_args[1]
    # The copy's state is its own: observing on the copy leaves the original's range.
    before = fq.qparams_calculator.running_max.clone()
    copied.enable_observer(True)
    copied(x * 10)
    torch.testing.assert_close(fq.qparams_calculator.running_max, before, rtol=0, atol=0)


def test_jit_trace_records_the_op_with_its_tensors() -> None:
    """torch.jit.trace would keep a handle as a constant: the traced call is the plain op."""
    fq = _fake_quantizer()
    x = torch.randn(4, 8)
    fq(x)
    fq.enable_observer(False)
    traced = torch.jit.trace(fq, (x,), check_trace=False)
    graph = str(traced.inlined_graph)
    assert "coreai_opt::fused_fake_quantize(" in graph
    assert "_fused_fake_quantize_bound" not in graph
    torch.testing.assert_close(traced(x), fq(x), rtol=0, atol=0)


def test_a_fake_quantizer_saved_before_bindings_existed_still_runs() -> None:
    """A whole-model save from before this attribute existed unpickles without it."""
    fq = _fake_quantizer()
    x = torch.randn(4, 8)
    fq(x)
    state = fq.__getstate__()
    del state["_bound_args"]
    old = type(fq).__new__(type(fq))
    old.__setstate__(state)
    old._args_key = (x.shape, x.dtype, _state_epoch.EPOCH[0])  # as if the key still matched
    old._packed_args = old._fused_args(x)
    old.enable_observer(False)
    fq.enable_observer(False)
    torch.testing.assert_close(old(x), fq(x), rtol=0, atol=0)
