"""Trace plans: under torch.compile a prepared model's fake-quantizers read one tuple built
at prepare (FakeQuantize.refresh_trace_plan, called last by graph mode's prepare), keyed on
the attribute versions of the fake-quantizer and its calculator, and record the fused op
with its other arguments bound in C++ under the plan's handle
(_fused_fake_quantize_bound_traced), so the compiled graph takes no state tensor."""

from __future__ import annotations

import copy
import gc
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch._dynamo.testing
from models import TwoBlocks
from torch import nn

from coreai_opt.quantization import Quantizer, QuantizerConfig
from coreai_opt.quantization.spec.fake_quantize import FakeQuantize


class ConvBnHead(nn.Module):
    """conv-bn-relu (the QAT conv-bn form: its weight FQ reads a node prepare inserted),
    max-pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(y.flatten(1))


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor]]] = {
    "linears": (TwoBlocks, lambda: torch.randn(4, 16)),
    "conv-bn": (ConvBnHead, lambda: torch.randn(2, 3, 8, 8)),
}


def _fqs(model: nn.Module) -> list[FakeQuantize]:
    return [m for m in model.modules() if isinstance(m, FakeQuantize)]


def _fq_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict entries of the model's fake-quantizers."""
    return {
        f"{name}.{key}": value
        for name, module in model.named_modules()
        if isinstance(module, FakeQuantize)
        for key, value in module.state_dict().items()
    }


def _plan_is_valid(fq: FakeQuantize, dtype: torch.dtype = torch.float32) -> bool:
    plan = fq._trace_plan
    return plan is not None and plan[0] == (
        dtype,
        fq._attr_version,
        fq.qparams_calculator._attr_version,
    )


def _prepared(name: str) -> tuple[Quantizer, torch.fx.GraphModule, torch.Tensor]:
    make, inputs = MODELS[name]
    torch.manual_seed(0)
    x = inputs()
    q = Quantizer(make(), QuantizerConfig())
    return q, q.prepare((x,)), x


def _guard_sources(model: nn.Module, x: torch.Tensor) -> set[str]:
    """The sources Dynamo guards when compiling *model* (one forward, aot_eager)."""
    torch._dynamo.reset()
    names: set[str] = set()

    def collect(guards: Any) -> None:
        names.update(g.name for g in guards)

    compiled = torch._dynamo.optimize("aot_eager", guard_export_fn=collect)(model)
    compiled(x)
    return names


@pytest.mark.parametrize("name", MODELS)
def test_prepare_leaves_every_fake_quantizer_a_valid_plan(name: str) -> None:
    _, gm, _ = _prepared(name)
    assert _fqs(gm) and all(_plan_is_valid(fq) for fq in _fqs(gm))


def test_copies_keep_a_valid_plan_and_a_changed_attribute_invalidates_it() -> None:
    """A copy has the same attribute values (its versions are copied with them), a moved
    model the same attributes; setting any watched attribute to another value, on the
    fake-quantizer or on its calculator, moves a version on."""
    _, gm, _ = _prepared("conv-bn")
    for copied in (copy.deepcopy(gm), pickle.loads(pickle.dumps(gm)), gm.to(torch.float64)):
        assert all(_plan_is_valid(fq) for fq in _fqs(copied))
    fq, other = _fqs(gm)[:2]
    fq.qparams_calculator.averaging_constant = 0.5
    assert not _plan_is_valid(fq) and _plan_is_valid(other)
    fq.refresh_trace_plan()
    assert _plan_is_valid(fq)
    fq.quant_max = 63
    assert not _plan_is_valid(fq)
    fq.refresh_trace_plan()
    # Loading values of the same shapes changes no attribute: the plans stay valid, also in
    # a freshly prepared model given a checkpoint.
    gm.load_state_dict(gm.state_dict())
    assert all(_plan_is_valid(f) for f in _fqs(gm))
    _, fresh, _ = _prepared("conv-bn")
    fresh.load_state_dict(copy.deepcopy(gm).state_dict())
    assert all(_plan_is_valid(f) for f in _fqs(fresh))


def test_dynamo_guards_the_plan_instead_of_the_attributes() -> None:
    _, gm, x = _prepared("linears")
    planned = _guard_sources(gm, x)
    for fq in _fqs(gm):
        fq._trace_plan = None
    unplanned = _guard_sources(gm, x)
    covered = ("averaging_constant", "quant_min", "quant_max", "_method", "float_range")
    assert not [s for s in planned if s.endswith(covered)]
    assert [s for s in unplanned if s.endswith(covered)]
    assert [s for s in planned if s.endswith("_trace_plan")]
    assert len(planned) < len(unplanned)
    # No switch or state tensor of a planned fake-quantizer is guarded (or a graph input).
    assert not [s for s in planned if "activation_post_process" in s and "_buffers" in s]
    assert [s for s in unplanned if "activation_post_process" in s and "_buffers" in s]


def _graph_inputs(model: nn.Module, x: torch.Tensor) -> int:
    """Placeholders of the FX graph Dynamo hands its backend."""
    counts: list[int] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        counts.append(len([n for n in gm.graph.nodes if n.op == "placeholder"]))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(model, backend=backend, fullgraph=True)(x)
    return counts[0]


def test_the_compiled_graph_takes_no_fake_quantizer_state() -> None:
    """Planned: x and the model's parameters and buffers that are not fake-quantizer state;
    unplanned: also the seven switch and state tensors of each activation fake-quantizer."""
    _, gm, x = _prepared("linears")
    fqs = _fqs(gm)
    planned = _graph_inputs(gm, x)
    for fq in fqs:
        fq._trace_plan = None
    assert _graph_inputs(gm, x) == planned + 7 * len(fqs)


@pytest.mark.parametrize("name", MODELS)
def test_planned_and_unplanned_compiled_steps_are_identical(name: str) -> None:
    """Forward, gradients and state after a compiled QAT step (observers on)."""
    q, gm, x = _prepared(name)
    results = []
    for planned in (True, False):
        model = copy.deepcopy(gm)
        if not planned:
            for fq in _fqs(model):
                fq._trace_plan = None
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        with q.training_mode(model):
            y = compiled(x)
            y.square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((y.detach(), grads, model.state_dict()))
    (y_p, g_p, s_p), (y_u, g_u, s_u) = results
    assert torch.equal(y_p, y_u)
    assert all(torch.equal(a, b) for a, b in zip(g_p, g_u, strict=True))
    assert all(torch.equal(s_p[k], s_u[k]) for k in s_p)


def test_a_changed_attribute_is_honoured_after_compiling() -> None:
    """The averaging constant changed after compiling: the compiled model recompiles and
    folds this batch's range as the uncompiled one does."""
    q, gm, x = _prepared("linears")
    reference = copy.deepcopy(gm)
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    compiled = torch.compile(gm, backend=counter)
    q_reference = Quantizer(TwoBlocks(), QuantizerConfig())  # one training_mode per quantizer
    with q.training_mode(gm), q_reference.training_mode(reference):
        compiled(x)
        reference(x)
        for model in (gm, reference):
            for fq in _fqs(model):
                fq.qparams_calculator.averaging_constant = 0.5
        compiled(x * 3)
        reference(x * 3)
    assert counter.frame_count == 2
    state, expected = gm.state_dict(), reference.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_a_change_to_another_model_does_not_recompile() -> None:
    """The plan is keyed on its own module's versions, not on the process-wide epoch that
    every fake-quantizer bumps: copying, loading or editing another model leaves this
    compiled model's guards alone."""
    q, gm, x = _prepared("linears")
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    compiled = torch.compile(gm, backend=counter)
    with q.training_mode(gm):
        compiled(x)
        other = copy.deepcopy(gm)
        other.load_state_dict(gm.state_dict())
        _fqs(other)[0].qparams_calculator.averaging_constant = 0.5
        compiled(x)
    assert counter.frame_count == 1


def test_a_planned_model_compiles_with_dynamic_shapes() -> None:
    """The block size comes from the plan's pattern and x's (symbolic) shape: one compiled
    model serves every batch size, as the uncompiled one does."""
    torch.manual_seed(0)
    x = torch.randn(4, 16)
    q = Quantizer(TwoBlocks(), QuantizerConfig())
    gm = q.prepare((x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert all(_plan_is_valid(fq) for fq in _fqs(gm))
    reference = copy.deepcopy(gm)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(gm, backend=counter, dynamic=True)
    with torch.no_grad():
        for batch in (4, 7, 9):
            xb = torch.randn(batch, 16)
            assert torch.equal(compiled(xb), reference(xb))
    assert counter.frame_count == 1


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_binds_its_own_state(how: str) -> None:
    """A copy's plan names its own state tensors: compiling and stepping the copy updates
    the copy as the uncompiled model updates itself, and leaves the original alone."""
    _, gm, x = _prepared("conv-bn")
    copied = copy.deepcopy(gm) if how == "deepcopy" else pickle.loads(pickle.dumps(gm))
    original_handles = {fq._trace_plan[-1] for fq in _fqs(gm)}  # type: ignore[index]
    copied_handles = {fq._trace_plan[-1] for fq in _fqs(copied)}  # type: ignore[index]
    assert all(_plan_is_valid(fq) for fq in _fqs(copied))
    assert not original_handles & copied_handles
    reference = copy.deepcopy(gm)
    before = copy.deepcopy(gm.state_dict())
    torch._dynamo.reset()
    compiled = torch.compile(copied, backend="aot_eager", fullgraph=True)
    q_copy = Quantizer(ConvBnHead(), QuantizerConfig())
    q_reference = Quantizer(ConvBnHead(), QuantizerConfig())
    with q_copy.training_mode(copied), q_reference.training_mode(reference):
        for scale in (1.0, 3.0):
            torch.testing.assert_close(compiled(x * scale), reference(x * scale), rtol=0, atol=0)
    # The fake-quantizers' state (batch norm's running statistics are summed in another
    # order by the compiled graph).
    state, expected = _fq_state(copied), _fq_state(reference)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert all(torch.equal(gm.state_dict()[k], before[k]) for k in before)
    assert not all(torch.equal(state[k], before[k]) for k in state)


def test_moving_the_state_rebinds_the_plan() -> None:
    """A move that replaces the state tensors (as .to(device) does) binds the new ones: the
    plans stay valid, with new handles, and the compiled model updates the moved state."""
    q, gm, x = _prepared("linears")
    handles = [fq._trace_plan[-1] for fq in _fqs(gm)]  # type: ignore[index]
    reference = copy.deepcopy(gm)
    gm._apply(lambda t: t.clone())
    assert all(_plan_is_valid(fq) for fq in _fqs(gm))
    assert not set(handles) & {fq._trace_plan[-1] for fq in _fqs(gm)}  # type: ignore[index]
    _assert_compiled_matches(q, gm, reference, x)


def test_a_state_tensor_replaced_behind_the_plan_is_read_not_bound() -> None:
    """The calculator's tensors replaced on their own (the fake-quantizer's plan cannot
    rebind them): the plan is stale, and the compiled model reads the new tensors."""
    q, gm, x = _prepared("linears")
    reference = copy.deepcopy(gm)
    for fq in _fqs(gm):
        fq.qparams_calculator._apply(lambda t: t.clone())
    assert not any(_plan_is_valid(fq) for fq in _fqs(gm))
    _assert_compiled_matches(q, gm, reference, x)
    for fq in _fqs(gm):
        fq.refresh_trace_plan()
    assert all(_plan_is_valid(fq) for fq in _fqs(gm))


def _assert_compiled_matches(
    q: Quantizer, gm: torch.fx.GraphModule, reference: torch.fx.GraphModule, x: torch.Tensor
) -> None:
    """A compiled step of gm and an uncompiled one of reference (same float model) give the
    same output and fake-quantizer state."""
    torch._dynamo.reset()
    compiled = torch.compile(gm, backend="aot_eager", fullgraph=True)
    q_reference = Quantizer(TwoBlocks(), QuantizerConfig())
    with q.training_mode(gm), q_reference.training_mode(reference):
        torch.testing.assert_close(compiled(x * 2), reference(x * 2), rtol=0, atol=0)
    state, expected = _fq_state(gm), _fq_state(reference)
    assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_eager_calls_of_another_shape_keep_the_plan_and_the_compiled_model() -> None:
    """Rebinding the eager arguments for a new input shape leaves the trace plan (and its
    handle) alone, so the compiled model is not recompiled."""
    _, gm, x = _prepared("linears")
    handles = [fq._trace_plan[-1] for fq in _fqs(gm)]  # type: ignore[index]
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    compiled = torch.compile(gm, backend=counter)
    with torch.no_grad():
        expected = gm(x)
        torch.testing.assert_close(compiled(x), expected, rtol=0, atol=0)
        gm(torch.randn(7, 16))
        torch.testing.assert_close(compiled(x), expected, rtol=0, atol=0)
    assert counter.frame_count == 1
    assert [fq._trace_plan[-1] for fq in _fqs(gm)] == handles  # type: ignore[index]


def test_a_plan_saved_in_the_older_layout_is_rebuilt_on_load() -> None:
    """A fake-quantizer pickled with the six-field plan of earlier releases (constants
    instead of a handle) gets a current plan when it is unpickled."""
    _, gm, _ = _prepared("linears")
    fq = _fqs(gm)[0]
    state = fq.__getstate__()
    key, pattern, channels_last, _ = fq._trace_plan  # type: ignore[misc]
    state["_trace_plan"] = (
        key,
        fq._constant_args(torch.float32),
        pattern,
        channels_last,
        False,
        False,
    )
    old = type(fq).__new__(type(fq))
    old.__setstate__(state)
    assert _plan_is_valid(old) and len(old._trace_plan) == 4  # type: ignore[arg-type]
    assert old._trace_plan[-1] != fq._trace_plan[-1]  # type: ignore[index]


def test_switches_flipped_after_compiling_are_seen_without_recompiling() -> None:
    """The bound switches are the fake-quantizers' own tensors: turning the observers off
    (in place, as calibration_mode / training_mode / a QAT schedule do) freezes the state
    of the compiled model, and turning fake-quant off gives what the uncompiled model gives
    with the same switches."""
    _, gm, x = _prepared("linears")
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(gm, backend=counter)
    with torch.no_grad():
        compiled(x * 2)
        for fq in _fqs(gm):
            fq.disable_observer()
        frozen = copy.deepcopy(_fq_state(gm))
        compiled(x * 5)
        state = _fq_state(gm)
        assert all(torch.equal(state[k], frozen[k]) for k in frozen)
        quantized = compiled(x)
        for fq in _fqs(gm):
            fq.disable_fake_quant()
        unquantized = compiled(x)
    assert counter.frame_count == 1
    assert not torch.equal(quantized, unquantized)
    with torch.no_grad():
        torch.testing.assert_close(unquantized, copy.deepcopy(gm)(x), rtol=0, atol=0)


def test_a_rebound_plan_recompiles_instead_of_calling_a_freed_handle() -> None:
    """A compiled graph holds its plan's handle; rebinding (as a copy's __setstate__ does)
    frees it. Dynamo guards the handle with the plan, so the compiled model recompiles with
    the new one. A refresh of a current plan keeps the handle and the compiled graph."""
    _, gm, x = _prepared("linears")
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(gm, backend=counter)
    with torch.no_grad():
        expected = compiled(x)
        handles = [fq._trace_plan[-1] for fq in _fqs(gm)]  # type: ignore[index]
        for fq in _fqs(gm):
            fq.refresh_trace_plan()
        assert [fq._trace_plan[-1] for fq in _fqs(gm)] == handles  # type: ignore[index]
        torch.testing.assert_close(compiled(x), expected, rtol=0, atol=0)
        assert counter.frame_count == 1
        for fq in _fqs(gm):
            fq._set_trace_plan(torch.float32)
        gc.collect()
        torch.testing.assert_close(compiled(x), expected, rtol=0, atol=0)
    assert counter.frame_count == 2
