"""Trace plans: under torch.compile a prepared model's fake-quantizers read their constant
arguments from one tuple built at prepare (FakeQuantize.refresh_trace_plan, called last by
graph mode's prepare), keyed on the attribute versions of the fake-quantizer and its
calculator."""

from __future__ import annotations

import copy
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
