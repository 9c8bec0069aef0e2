"""_bind_fused_fake_quantize / _fused_fake_quantize_bound: fused_fake_quantize with its
arguments after x bound once in C++, and FakeQuantize's eager path that calls it."""

from __future__ import annotations

import copy
import gc
import io
import pickle
from collections.abc import Callable

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


def _assert_calls_match_the_op(
    xs: list[torch.Tensor], direct: tuple, call: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    """call(x) for each x in turn gives the output and gradient of fused_fake_quantize with
    the arguments *direct* (each side updating its own state)."""
    for x in xs:
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya = ops.fused_fake_quantize(xa, *direct)
        yb = call(xb)
        torch.testing.assert_close(yb, ya, rtol=0, atol=0)
        g = torch.randn_like(x)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(xb.grad, xa.grad, rtol=0, atol=0)


@pytest.mark.parametrize("fmt", [INT8, UINT4_MINVAL, FP8], ids=["int8", "uint4-minval", "fp8"])
@pytest.mark.parametrize("method", ["moving_average", "static"])
def test_bound_call_matches_the_op(fmt: FusedFormat, method: str) -> None:
    """Output, gradient and every state tensor after three calls equal the direct op's."""
    torch.manual_seed(0)
    xs = [torch.randn(6, 8) * (i + 1) for i in range(3)]
    direct = _args(xs[0], [6, 1], fmt, method)
    bound_args = _args(xs[0], [6, 1], fmt, method)
    owner, handle = _ops.bind_fused_fake_quantize(bound_args)
    _assert_calls_match_the_op(xs, direct, lambda x: _ops.fused_fake_quantize_bound(x, handle))
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


# ---- the traced form: _fused_fake_quantize_bound_traced(x, handle, block_size) -------------


def _bind_for_tracing(args: tuple) -> tuple[torch.ScriptObject, int]:
    """Bind *args* (schema order after x) with the block size left to each call."""
    return _ops.bind_fused_fake_quantize((*args[:7], [], *args[8:]))


@pytest.mark.parametrize("fmt", [INT8, UINT4_MINVAL, FP8], ids=["int8", "uint4-minval", "fp8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_traced_form_matches_the_op(fmt: FusedFormat, dtype: torch.dtype) -> None:
    """Output, gradient, every state tensor after three calls, and the state's version
    counters (a write is seen by readers that compare versions) equal the direct op's."""
    torch.manual_seed(0)
    xs = [(torch.randn(6, 8) * (i + 1)).to(dtype) for i in range(3)]
    direct = _args(xs[0], [6, 1], fmt, "moving_average")
    bound = _args(xs[0], [6, 1], fmt, "moving_average")
    owner, handle = _bind_for_tracing(bound)
    _assert_calls_match_the_op(
        xs, direct, lambda x: _ops.fused_fake_quantize_bound_traced(x, handle, [1, 8])
    )
    for a, b in zip(direct[2:7], bound[2:7], strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
        assert b._version == a._version
    with torch.no_grad():
        torch.testing.assert_close(
            _ops.fused_fake_quantize_bound_traced(xs[0], handle, [1, 8]),
            ops.fused_fake_quantize(xs[0], *direct),
            rtol=0,
            atol=0,
        )
    del owner


def test_traced_form_takes_the_block_size_per_call() -> None:
    """One binding of a per-tensor state serves inputs of any batch size."""
    on = torch.ones(1, dtype=torch.uint8)
    state = fresh_fused_state([1, 1])
    kwargs = fused_kwargs(torch.empty(1, 8), on, on.clone(), state, [1, 8], INT8, "static")
    args = schema_args(ops.fused_fake_quantize.default, kwargs)[1:]
    owner, handle = _bind_for_tracing(args)
    for batch in (3, 5):
        x = torch.randn(batch, 8)
        expected = ops.fused_fake_quantize(x, *(*args[:7], [batch, 8], *args[8:]))
        got = _ops.fused_fake_quantize_bound_traced(x, handle, [batch, 8])
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="the block sizes give"):
        _ops.fused_fake_quantize_bound_traced(torch.randn(3, 8), handle, [1, 8])
    del owner


def test_traced_forms_are_tagged_for_inductor() -> None:
    for op in (ops._fused_fake_quantize_bound_traced, ops._fused_fake_quantize_bound_cachemask):
        tags = op.default.tags
        assert torch.Tag.pt2_compliant_tag in tags and torch.Tag.flexible_layout in tags


@pytest.mark.parametrize(
    "op", ["_fused_fake_quantize_bound_traced", "_fused_fake_quantize_bound_cachemask"]
)
def test_traced_forms_pass_opcheck(op: str) -> None:
    """Schema, fake tensors, autograd registration and AOT dispatch (observer off, so the
    repeated calls opcheck makes all see the same qparams)."""
    x = torch.randn(6, 8)
    args = _args(x, [6, 1], INT8, "moving_average")
    ops.fused_fake_quantize(x, *args)  # one observation
    args[0].zero_()  # observer_on
    owner, handle = _bind_for_tracing(args)
    torch.library.opcheck(getattr(ops, op).default, (x.requires_grad_(), handle, [1, 8]))
    del owner


class _BoundFakeQuant(torch.nn.Module):
    """A module whose forward is one traced bound call (what a planned FakeQuantize
    records), or the fused op with its tensors (direct=True)."""

    def __init__(self, direct: bool) -> None:
        super().__init__()
        self.args = _args(torch.empty(4, 16), [4, 1], INT8, "moving_average")
        self.owner, self.handle = _bind_for_tracing(self.args)
        self.direct = direct

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Observe and fake-quantize x (rows as channels)."""
        if self.direct:
            return ops.fused_fake_quantize(x, *self.args)
        return _ops.fused_fake_quantize_bound_traced(x, self.handle, [1, x.shape[1]])


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_traced_form_compiles_and_updates_the_bound_state(backend: str) -> None:
    """fullgraph, same outputs, gradients and state as the uncompiled op, over steps that
    change the range; the compiled graph takes x alone."""
    eager, comp = _BoundFakeQuant(direct=True), _BoundFakeQuant(direct=False)
    graphs: list[torch.fx.GraphModule] = []

    def count_inputs(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return torch._dynamo.backends.registry.lookup_backend(backend)(gm, example_inputs)

    torch._dynamo.reset()
    step = torch.compile(comp, backend=count_inputs, fullgraph=True)
    for i in range(3):
        x = torch.randn(4, 16) * (i + 1)
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        ye, yc = eager(xe), step(xc)
        torch.testing.assert_close(yc, ye, rtol=0, atol=0)
        g = torch.randn(4, 16)
        ye.backward(g)
        yc.backward(g)
        torch.testing.assert_close(xc.grad, xe.grad, rtol=0, atol=0)
        for a, b in zip(eager.args[2:7], comp.args[2:7], strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
    assert len(graphs) == 1
    assert len([n for n in graphs[0].graph.nodes if n.op == "placeholder"]) == 1


def test_traced_form_with_a_freed_handle_fails_while_tracing() -> None:
    x = torch.randn(6, 8)
    owner, handle = _bind_for_tracing(_args(x, [6, 1], INT8, "static"))
    del owner
    gc.collect()

    def f(x: torch.Tensor) -> torch.Tensor:
        return _ops.fused_fake_quantize_bound_traced(x, handle, [1, 8])

    torch._dynamo.reset()
    with pytest.raises(Exception, match=rf"no bound arguments with handle {handle} "):
        torch.compile(f, backend="aot_eager", fullgraph=True)(x)


def test_traced_form_treats_inference_state_as_the_op_does() -> None:
    """State created under torch.inference_mode cannot be written outside it: the traced
    form raises the op's own error there, and runs inside inference mode."""
    x = torch.randn(6, 8)
    with torch.inference_mode():
        direct = _args(x, [6, 1], INT8, "moving_average")
        bound = _args(x, [6, 1], INT8, "moving_average")
    owner, handle = _bind_for_tracing(bound)
    with pytest.raises(RuntimeError, match="inference tensor outside InferenceMode"):
        ops.fused_fake_quantize(x, *direct)
    with pytest.raises(RuntimeError, match="inference tensor outside InferenceMode"):
        _ops.fused_fake_quantize_bound_traced(x, handle, [1, 8])
    with torch.inference_mode():
        torch.testing.assert_close(
            _ops.fused_fake_quantize_bound_traced(x, handle, [1, 8]),
            ops.fused_fake_quantize(x, *direct),
            rtol=0,
            atol=0,
        )
    del owner
