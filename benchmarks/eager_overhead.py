"""Eager mode's cost: host time per intercepted op and module, W8A8 forward / QAT step.

Run with ``.venv/bin/python benchmarks/eager_overhead.py`` (CPU, 2 threads, median of
interleaved rounds, GLIBC_TUNABLES as in ops_cpu.py). Prints tables and appends them to
benchmarks/RESULTS.md (unless ``--no-save``, ``--quick`` or ``--python-only``).

a) Interception cost. A module doing N tiny ``torch.add`` calls (4-element tensors, under
   ``no_grad``) after one ``torch.mul``, prepared in eager mode with the adds not quantized,
   minus the same float module: added µs per intercepted op is the slope between N adds
   and 0 adds, so the module's own frame and the mul do not count. Two configs:
   ``global_config=None`` (nothing quantized; the op names are still counted) and W8A8 with
   ``op_type_config={"add": None}`` (the mul is quantized, so the module is surely
   instrumented). Added µs per hooked module: a chain of 64 modules each doing one add,
   (prepared - float) / 64, and the same minus one op's cost ("frame only": eager mode's
   FramedForward around the module's forward, the Python interceptor's two hooks).
b) W8A8 (``QuantizerConfig.presets.w8a8(execution_mode=EAGER)``) forward (eval,
   ``no_grad``; observers off, fake-quant on) and QAT step (train, forward + backward + SGD,
   inside ``quantizer.training_mode()``) against the float model, on
   - a small CNN: two conv-bn-relu blocks (3→16→32 channels, 3x3), max pooling, linears
     512→64→10; batch 32 of 3x16x16;
   - a pre-LN transformer block: d=256, 4 heads, MLP 1024, attention by
     ``F.scaled_dot_product_attention`` between ``nn.Linear`` projections (not
     ``nn.MultiheadAttention``, whose Python body the dispatcher sees op by op while a
     TorchFunctionMode sees one ``multi_head_attention_forward`` call: with SDPA both
     interceptors quantize the same ops); batch 16 of 64 tokens.
   These are the models of the eager-mode issue; bench_models.py (graph_overhead.py) has a
   wider CNN and an nn.MultiheadAttention block, so the ratios are not comparable one to
   one with the graph-mode table.
c) The same models under :class:`PythonInterceptor`, a Python TorchFunctionMode written
   here after the reference's design (its op naming comes from the test oracle,
   tests/quantization/eager/oracle.py): fake-quantizers built by
   ``QuantizationComponentFactory`` from the same preset specs on every quantizable input
   and output of the registry ops and on the weights they read.

d) The same models with the same fake-quantizers called by the model's own forward code
   (:class:`HandPlacedCNN`, :class:`HandPlacedPreLN`): no interceptor, no hooks, FQs where
   both interceptors put them (checked: the output equals the Python interceptor's). Its
   added time is what the fake-quantizers cost by themselves, so ``Python added / FQs in
   forward added`` bounds the ratio any interceptor applying them can reach, and each
   interceptor's time minus this model's is what the interception itself costs.

Targets: ≤ 5 µs per intercepted op; forward and QAT step ≤ 1.3x float on both models;
eager's added time (over float) at least 2x less than the Python interceptor's. The
reference (coreai-opt 0.3.0, same kind of machine) measured forward 3.1x (CNN) / 3.4x
(transformer) and QAT step 2.2x / 2.3x.

If ``Quantizer.prepare`` fails in eager mode the script stops with its own message;
``--python-only`` then measures the float and Python-interceptor parts alone.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from graph_overhead import medians, qat_step
from ops_cpu import TUNABLES
from torch import nn
from torch.overrides import TorchFunctionMode

from coreai_opt.quantization import (
    ExecutionMode,
    ModuleQuantizerConfig,
    QuantizationSpec,
    Quantizer,
    QuantizerConfig,
)
from coreai_opt.quantization.spec import (
    FakeQuantizeImplBase,
    PerBlockGranularity,
    PerChannelGranularity,
    QuantizationComponentFactory,
)
from coreai_opt.quantization.spec.axis_defaults import default_weight_axes

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
sys.path.insert(0, str(HERE.parent / "tests" / "quantization" / "eager"))
from oracle import (  # noqa: E402
    DEFAULT_OP_TYPES,
    FUNC_TABLE,
    classify,
    normalize_arguments,
    record_ops,
)

US_PER_OP_TARGET = 5.0
RATIO_TARGET = 1.3
ADDED_TARGET = 2.0
REFERENCE = {  # coreai-opt 0.3.0: (forward, QAT step) over float
    "CNN": (3.1, 2.2),
    "PreLN": (3.4, 2.3),
}


# -- models ------------------------------------------------------------------------------


class CNN(nn.Module):
    """conv(3→16)-bn-relu → pool → conv(16→32)-bn-relu → pool → linear 512→64 → relu → 10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    @staticmethod
    def example_input() -> torch.Tensor:
        """A batch of 32 3 x 16 x 16 images."""
        return torch.randn(32, 3, 16, 16)


class PreLN(nn.Module):
    """x + proj(sdpa(qkv(ln1(x)))), then + fc2(gelu(fc1(ln2(x)))); d=256, 4 heads, MLP 1024."""

    def __init__(self, d: int = 256, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    @staticmethod
    def example_input() -> torch.Tensor:
        """16 sequences of 64 tokens of width 256."""
        return torch.randn(16, 64, 256)


class AddLoop(nn.Module):
    """One ``torch.mul``, then *n* ``torch.add`` calls on the same tiny tensors."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = torch.mul(x, y)
        for _ in range(self.n):
            x = torch.add(x, y)
        return x


class AddOne(nn.Module):
    """One ``torch.add``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.add(x, x)


# -- the Python interceptor -------------------------------------------------------------


@dataclass
class _OpPlan:
    """The fake-quantizers of one named op: inputs / states by argument name, outputs."""

    inputs: list[tuple[str, nn.Module]] = field(default_factory=list)
    outputs: list[tuple[int, nn.Module]] = field(default_factory=list)
    # (func, number of positional args, keyword names) → [(position, list index, kw, fq)]
    where: dict[tuple[Any, int, tuple[str, ...]], list[tuple[int, int, str, nn.Module]]] = field(
        default_factory=dict
    )


def _resolve_weight_spec(spec: QuantizationSpec, owner: nn.Module) -> QuantizationSpec:
    """*spec* with ``axis=None`` filled in from the owner's module type (as prepare does)."""
    granularity = spec.granularity
    if not isinstance(granularity, (PerChannelGranularity, PerBlockGranularity)):
        return spec
    if granularity.axis is not None:
        return spec
    axes = default_weight_axes(type(owner))
    if axes is None:
        axis = 0
    elif isinstance(granularity, PerChannelGranularity):
        axis = axes.per_channel_axis
    else:
        axis = axes.per_block_axis
    return spec.model_copy(update={"granularity": granularity.model_copy(update={"axis": axis})})


class PythonInterceptor(TorchFunctionMode):
    """A Python eager quantizer after the reference's design, for comparison.

    ``prepare`` records the ops with the test oracle (op names, quantizable inputs and
    outputs, states), registers activation fake-quantizers on the module that ran each op
    of a quantized type (``<op>_quantize_<arg>``, ``<op>_quantize_output_<i>``) and one
    weight fake-quantizer per weight tensor on its owner (``<param>_fake_quantize``), puts
    forward pre/post hooks on every module (a stack of per-call op counters), and runs one
    calibration forward. At run time (call the interceptor like the model) the mode counts
    the registry functions per module call, names each call, and applies the op's
    fake-quantizers to its inputs, weights and outputs; everything else passes through.
    The weight fake-quantizer runs where the op reads the weight (the reference uses a
    parametrization, which runs it on every read: the same work per forward here) so that
    its own torch calls are never seen by the mode.
    Argument positions are resolved once per call signature. ``act_spec`` / ``weight_spec``
    None leaves those tensors alone (with both None only the naming runs).
    """

    def __init__(
        self,
        model: nn.Module,
        act_spec: QuantizationSpec | None,
        weight_spec: QuantizationSpec | None,
        op_types: Iterable[str] = DEFAULT_OP_TYPES,
    ) -> None:
        """Bind *model* (modified in place by :meth:`prepare`)."""
        super().__init__()
        self.model = model
        self.act_spec = act_spec
        self.weight_spec = weight_spec
        self.op_types = frozenset(op_types)
        self._plans: dict[int, dict[str, _OpPlan]] = {}
        self._stack: list[tuple[dict[str, _OpPlan], dict[str, int]]] = []

    def _act_fq(self) -> nn.Module:
        assert self.act_spec is not None
        return QuantizationComponentFactory.create_fake_quantizer(self.act_spec, "activation")

    def prepare(self, example_inputs: tuple[Any, ...]) -> PythonInterceptor:
        """Insert the fake-quantizers, install the hooks, calibrate once.

        As eager prepare (behaviour.md §5): the recording and the calibration run in eval
        mode without gradients, the calibration with observers on and fake-quant off.
        """
        training = self.model.training
        self.model.eval()
        with torch.no_grad():
            ops = record_ops(self.model, example_inputs)
        originals = list(self.model.modules())
        weight_fqs: dict[str, nn.Module] = {}
        for op in ops:
            if op.op_type not in self.op_types:
                continue
            module = self.model.get_submodule(op.module_path)
            plan = _OpPlan()
            if self.act_spec is not None:
                for arg in op.quantizable_inputs:
                    fq = self._act_fq()
                    module.add_module(f"{op.local_name}_quantize_{arg}", fq)
                    plan.inputs.append((arg, fq))
                for i in op.quantizable_outputs:
                    fq = self._act_fq()
                    module.add_module(f"{op.local_name}_quantize_output_{i}", fq)
                    plan.outputs.append((i, fq))
            if self.weight_spec is not None:
                for local, fqn, arg in zip(op.states, op.state_fqns, op.state_args, strict=True):
                    if local != "weight":
                        continue
                    if fqn not in weight_fqs:
                        owner_path, _, name = fqn.rpartition(".")
                        owner = self.model.get_submodule(owner_path)
                        spec = _resolve_weight_spec(self.weight_spec, owner)
                        fq = QuantizationComponentFactory.create_fake_quantizer(spec, "weight")
                        owner.add_module(f"{name}_fake_quantize", fq)
                        weight_fqs[fqn] = fq
                    plan.inputs.append((arg, weight_fqs[fqn]))
            if plan.inputs or plan.outputs:
                self._plans.setdefault(id(module), {})[op.local_name] = plan
        for module in originals:
            module.register_forward_pre_hook(self._pre_hook)
            module.register_forward_hook(self._post_hook, always_call=True)
        calibrate(self, self.model, example_inputs)
        self.model.train(training)
        return self

    def _pre_hook(self, module: nn.Module, args: Any) -> None:
        self._stack.append((self._plans.get(id(module), {}), {}))

    def _post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self._stack.pop()

    def __call__(self, *inputs: Any) -> Any:
        """Run the model with the mode on."""
        with self:
            return self.model(*inputs)

    def _locate(
        self, plan: _OpPlan, func: Any, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> list[tuple[int, int, str, nn.Module]]:
        info = FUNC_TABLE[func]
        names = [name for name, _ in normalize_arguments(func, info, args, kwargs)]
        if info.swap and len(args) >= 2:
            names[0], names[1] = names[1], names[0]
        where = []
        for arg, fq in plan.inputs:
            # The oracle names the elements of a tensor-list argument "<name>_<i>".
            name, list_index = arg, -1
            if arg not in names:
                stem, _, index = arg.rpartition("_")
                name, list_index = stem, int(index)
            position = names.index(name)
            if position < len(args):
                where.append((position, list_index, "", fq))
            else:
                where.append((-1, list_index, name, fq))
        return where

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Name the call if it is a registry function and apply its fake-quantizers."""
        kwargs = kwargs or {}
        info = FUNC_TABLE.get(func)
        if info is None or not self._stack:
            return func(*args, **kwargs)
        plans, counts = self._stack[-1]
        base = info.base if info.inplace_base is None else classify(func, args, kwargs)[0]
        k = counts.get(base, 0)
        counts[base] = k + 1
        plan = plans.get(base if k == 0 else f"{base}_{k}")
        if plan is None:
            return func(*args, **kwargs)
        key = (func, len(args), tuple(kwargs))
        where = plan.where.get(key)
        if where is None:
            where = plan.where[key] = self._locate(plan, func, args, kwargs)
        if where:
            args = list(args)
            for position, list_index, kw, fq in where:
                if position >= 0:
                    if list_index >= 0:
                        seq = list(args[position])
                        seq[list_index] = fq(seq[list_index])
                        args[position] = seq
                    else:
                        args[position] = fq(args[position])
                elif list_index >= 0:
                    seq = list(kwargs[kw])
                    seq[list_index] = fq(seq[list_index])
                    kwargs[kw] = seq
                else:
                    kwargs[kw] = fq(kwargs[kw])
        out = func(*args, **kwargs)
        if not plan.outputs:
            return out
        if isinstance(out, torch.Tensor):
            return plan.outputs[0][1](out)
        items = list(out)
        for i, fq in plan.outputs:
            items[i] = fq(items[i])
        return type(out)(items)


# -- the floor: fake-quantizers written into the model's code ----------------------------


class _HandPlaced(nn.Module):
    """A benchmark model whose forward calls its W8A8 fake-quantizers itself.

    No interceptor and no hooks: the FQs sit where eager mode and the Python interceptor
    put them (each quantized op's inputs and outputs, the weights it reads), built from
    the same specs and calibrated on one forward as both do. What this model adds over
    float is the fake-quantizers' own cost, the least any interceptor that applies them
    can add; ``Python added / this added`` is then the most "less added time than the
    Python interceptor" that any interceptor can reach.
    """

    def __init__(
        self,
        model: nn.Module,
        act_spec: QuantizationSpec,
        weight_spec: QuantizationSpec,
        acts: Iterable[str],
        weights: Iterable[str],
    ) -> None:
        super().__init__()
        self.model = model
        self.act = nn.ModuleDict(
            {
                name: QuantizationComponentFactory.create_fake_quantizer(act_spec, "activation")
                for name in acts
            }
        )
        self.weight = nn.ModuleDict()
        for name in weights:
            owner = model.get_submodule(name)
            spec = _resolve_weight_spec(weight_spec, owner)
            self.weight[name] = QuantizationComponentFactory.create_fake_quantizer(spec, "weight")
        # Per op, what its forward code needs, found with one dict lookup per call:
        # (owning module or None, weight FQ or None, input FQs..., output FQ).
        self._sites: dict[str, tuple[Any, ...]] = {}
        for key in self.act:
            op = key.rsplit("_", 1)[0]
            if op not in self._sites:
                fqs = tuple(self.act[k] for k in self.act if k.rsplit("_", 1)[0] == op)
                weighted = op in self.weight
                owner = model.get_submodule(op) if weighted else None
                self._sites[op] = (owner, self.weight[op] if weighted else None, *fqs)

    def calibrate(self, x: torch.Tensor) -> _HandPlaced:
        """Initialise the qparams as eager prepare does (:func:`calibrate`)."""
        training = self.training
        self.eval()
        calibrate(self, self, (x,))
        return self.train(training)

    def linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``model.<name>`` (an nn.Linear) with input, weight and output fake-quantized."""
        m, w, fq_in, fq_out = self._sites[name]
        return fq_out(F.linear(fq_in(x), w(m.weight), m.bias))

    def add(self, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x + y`` with both inputs and the output fake-quantized."""
        _, _, fq_x, fq_y, fq_out = self._sites[name]
        return fq_out(fq_x(x) + fq_y(y))


class HandPlacedCNN(_HandPlaced):
    """:class:`CNN` with its 12 activation and 4 weight fake-quantizers in its forward."""

    ACTS = tuple(
        f"{op}_{end}"
        for op in ("conv1", "pool1", "conv2", "pool2", "fc1", "fc2")
        for end in ("in", "out")
    )
    WEIGHTS = ("conv1", "conv2", "fc1", "fc2")

    def __init__(self, model: CNN, act_spec: QuantizationSpec, weight_spec: QuantizationSpec):
        """FQs for *model* (used, not copied) from the two specs."""
        super().__init__(model, act_spec, weight_spec, self.ACTS, self.WEIGHTS)

    def conv(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``model.<name>`` (a 3x3 conv, padding 1) with input, weight and output FQs."""
        m, w, fq_in, fq_out = self._sites[name]
        return fq_out(F.conv2d(fq_in(x), w(m.weight), m.bias, padding=1))

    def pool(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """2x2 max pooling with input and output fake-quantized."""
        _, _, fq_in, fq_out = self._sites[name]
        return fq_out(F.max_pool2d(fq_in(x), 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """CNN.forward with the fake-quantizers."""
        m = self.model
        x = self.pool("pool1", torch.relu(m.bn1(self.conv("conv1", x))))
        x = self.pool("pool2", torch.relu(m.bn2(self.conv("conv2", x))))
        return self.linear("fc2", torch.relu(self.linear("fc1", x.flatten(1))))


class HandPlacedPreLN(_HandPlaced):
    """:class:`PreLN` with its 14 activation and 4 weight fake-quantizers in its forward."""

    ACTS = tuple(
        f"{op}_{end}" for op in ("qkv", "proj", "fc1", "fc2") for end in ("in", "out")
    ) + tuple(f"{op}_{end}" for op in ("add1", "add2") for end in ("in0", "in1", "out"))
    WEIGHTS = ("qkv", "proj", "fc1", "fc2")

    def __init__(self, model: PreLN, act_spec: QuantizationSpec, weight_spec: QuantizationSpec):
        """FQs for *model* (used, not copied) from the two specs."""
        super().__init__(model, act_spec, weight_spec, self.ACTS, self.WEIGHTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """PreLN.forward with the fake-quantizers."""
        m = self.model
        assert isinstance(m, PreLN)
        b, t, d = x.shape
        qkv = self.linear("qkv", m.ln1(x)).view(b, t, 3, m.heads, d // m.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = self.add("add1", x, self.linear("proj", a))
        h = self.linear("fc2", F.gelu(self.linear("fc1", m.ln2(x))))
        return self.add("add2", x, h)


HAND_PLACED: dict[str, Callable[[Any, QuantizationSpec, QuantizationSpec], _HandPlaced]] = {
    "CNN": HandPlacedCNN,
    "PreLN": HandPlacedPreLN,
}


def calibrate(run: Callable[..., Any], model: nn.Module, inputs: tuple[Any, ...]) -> None:
    """One ``run(*inputs)`` without gradients, observers on and fake-quant off, as eager
    prepare's pass (behaviour.md §5); then observers off and fake-quant on."""
    set_switches(model, observer=True, fake_quant=False)
    with torch.no_grad():
        run(*inputs)
    set_switches(model, observer=False, fake_quant=True)


def set_switches(model: nn.Module, observer: bool, fake_quant: bool) -> None:
    """Observers and fake-quant on or off for every fake-quantizer of *model*."""
    for module in model.modules():
        if isinstance(module, FakeQuantizeImplBase):
            module.enable_observer(observer)
            module.enable_fake_quant(fake_quant)


# -- eager mode ---------------------------------------------------------------------------


class EagerUnavailableError(RuntimeError):
    """Eager mode could not prepare a benchmark model."""


def eager_prepare(
    model: nn.Module, config: QuantizerConfig, inputs: tuple[Any, ...]
) -> tuple[Quantizer, nn.Module]:
    """``Quantizer(model, config).prepare(inputs)``, any failure turned into one message."""
    try:
        quantizer = Quantizer(model, config)
        return quantizer, quantizer.prepare(example_inputs=inputs)
    except Exception as exc:
        raise EagerUnavailableError(
            f"Quantizer.prepare failed in execution_mode='eager' on {type(model).__name__} "
            f"({type(exc).__name__}: {str(exc)[:400]})"
        ) from exc


def w8a8_eager() -> QuantizerConfig:
    """The W8A8 preset in eager mode."""
    return QuantizerConfig.presets.w8a8(execution_mode=ExecutionMode.EAGER)


# -- measurements ---------------------------------------------------------------------------


@dataclass
class Settings:
    """What one run measures."""

    rounds: int
    warmup: int
    adds: int
    chain: int
    eager: bool


def _nograd(fn: Callable[..., Any], *inputs: Any) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            fn(*inputs)

    return run


def _us(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:.2f} µs"


def _interception_table(label: str, t: dict[str, float], s: Settings) -> list[str]:
    """The two rows of table (a) for one config, from the median times *t*."""
    kinds = [k for k in ("float", "eager", "python") if f"{k}0" in t]
    slope = {k: (t[f"{k}{s.adds}"] - t[f"{k}0"]) / s.adds for k in kinds}
    module = {k: t[f"{k}_chain"] / s.chain for k in kinds}
    op_added = {k: slope[k] - slope["float"] for k in kinds}
    module_added = {k: module[k] - module["float"] for k in kinds}
    verdict = "n/a"
    if "eager" in kinds:
        verdict = "PASS" if op_added["eager"] * 1e6 <= US_PER_OP_TARGET else "FAIL"

    def hooks(kind: str) -> str:
        if kind not in kinds:
            return "n/a"
        frame_only = module_added[kind] - op_added[kind]
        return f"{_us(module_added[kind])} ({_us(frame_only)} frame only)"

    return [
        f"| per intercepted op ({s.adds} adds, slope) | {label} | {_us(slope['float'])} "
        f"| {_us(slope.get('eager'))} | {_us(op_added.get('eager'))} | {verdict} "
        f"| {_us(op_added['python'])} |",
        f"| per hooked module ({s.chain} modules, one add each) | {label} "
        f"| {_us(module['float'])} | {_us(module.get('eager'))} | {hooks('eager')} | "
        f"| {hooks('python')} |",
    ]


def interception_rows(s: Settings) -> list[str]:
    """Table (a): added µs per intercepted op and per hooked module."""
    x, y = torch.randn(4), torch.randn(4)
    no_quant = QuantizerConfig(global_config=None, execution_mode=ExecutionMode.EAGER)
    add_off = QuantizerConfig(
        global_config=ModuleQuantizerConfig(op_type_config={"add": None}),
        execution_mode=ExecutionMode.EAGER,
    )
    configs: list[tuple[str, QuantizerConfig | None]] = [
        ("global_config=None", no_quant),
        ('W8A8, op_type_config={"add": None}', add_off),
    ]
    rows = [
        "| measure | eager config | float | eager | added by eager | ≤ 5 µs/op "
        "| added by Python interceptor (no FQs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, config in configs:
        fns: dict[str, Callable[[], None]] = {}
        for n in (0, s.adds):
            fns[f"float{n}"] = _nograd(AddLoop(n), x, y)
            fns[f"python{n}"] = _nograd(
                PythonInterceptor(AddLoop(n), None, None).prepare((x, y)), x, y
            )
            if s.eager:
                _, prepared = eager_prepare(AddLoop(n), config, (x, y))
                fns[f"eager{n}"] = _nograd(prepared, x, y)
        chain = nn.Sequential(*[AddOne() for _ in range(s.chain)])
        fns["float_chain"] = _nograd(chain, x)
        fns["python_chain"] = _nograd(
            PythonInterceptor(copy.deepcopy(chain), None, None).prepare((x,)), x
        )
        if s.eager:
            _, prepared_chain = eager_prepare(copy.deepcopy(chain), config, (x,))
            fns["eager_chain"] = _nograd(prepared_chain, x)
        rows += _interception_table(label, medians(fns, s.rounds, s.warmup), s)
    return rows


def check_same_outputs(
    name: str, x: torch.Tensor, **models: Callable[[torch.Tensor], torch.Tensor] | None
) -> None:
    """Raise unless the given models (eval, observers off) give bit-identical outputs.

    All three quantize the same tensors with qparams from the same calibration, so any
    difference means that their fake-quantizers are not placed alike.
    """
    with torch.no_grad():
        outputs = {label: m(x) for label, m in models.items() if m is not None}
    (first, y), *rest = outputs.items()
    for label, other in rest:
        if not torch.equal(y, other):
            diff = (y - other).abs().max().item()
            raise AssertionError(
                f"{name}: {first} and {label} differ (max |difference| {diff:.3g}); "
                "their fake-quantizers are not placed alike"
            )


def model_rows(name: str, make: Callable[[], nn.Module], x: torch.Tensor, s: Settings) -> list[str]:
    """Tables (b) and (c) for one model: forward and QAT step of float, eager, Python."""
    torch.manual_seed(0)
    base = make()
    preset = w8a8_eager().global_config
    assert preset is not None
    act_spec = preset.op_input_spec["*"]
    weight_spec = preset.op_state_spec["weight"]
    python = PythonInterceptor(copy.deepcopy(base), act_spec, weight_spec).prepare((x,))
    bare = PythonInterceptor(copy.deepcopy(base), None, None).prepare((x,))
    hand = HAND_PLACED[name](copy.deepcopy(base), act_spec, weight_spec).calibrate(x)
    quantizer, prepared = (None, None)
    if s.eager:
        quantizer, prepared = eager_prepare(copy.deepcopy(base), w8a8_eager(), (x,))

    # Forward: eval, no_grad, observers off, fake-quant on.
    f_model = copy.deepcopy(base).eval()
    python.model.eval()
    bare.model.eval()
    set_switches(python.model, observer=False, fake_quant=True)
    hand.eval()
    set_switches(hand, observer=False, fake_quant=True)
    fwd: dict[str, Callable[[], None]] = {
        "float": _nograd(f_model, x),
        "python": _nograd(python, x),
        "bare": _nograd(bare, x),
        "hand": _nograd(hand, x),
    }
    if quantizer is not None and prepared is not None:
        prepared.eval()
        quantizer.disable_observer()
        quantizer.enable_fake_quant()
        fwd["eager"] = _nograd(prepared, x)
    check_same_outputs(name, x, hand=hand, python=python, eager=prepared)
    t_fwd = medians(fwd, s.rounds, s.warmup)

    # QAT step: train mode, observers and fake-quant on.
    f_train = copy.deepcopy(base).train()
    python.model.train()
    set_switches(python.model, observer=True, fake_quant=True)
    steps: dict[str, Callable[[], None]] = {}
    f_opt = torch.optim.SGD(f_train.parameters(), lr=1e-3)
    steps["float"] = lambda: qat_step(f_train, f_train, x, f_opt)
    py_opt = torch.optim.SGD(python.model.parameters(), lr=1e-3)
    steps["python"] = lambda: qat_step(python.model, python, x, py_opt)
    bare.model.train()
    bare_opt = torch.optim.SGD(bare.model.parameters(), lr=1e-3)
    steps["bare"] = lambda: qat_step(bare.model, bare, x, bare_opt)
    hand.train()
    set_switches(hand, observer=True, fake_quant=True)
    hand_opt = torch.optim.SGD(hand.parameters(), lr=1e-3)
    steps["hand"] = lambda: qat_step(hand, hand, x, hand_opt)
    context: AbstractContextManager[Any] = nullcontext()
    if quantizer is not None and prepared is not None:
        p_opt = torch.optim.SGD(prepared.parameters(), lr=1e-3)
        steps["eager"] = lambda: qat_step(prepared, prepared, x, p_opt)
        context = quantizer.training_mode(prepared)
    with context:
        t_step = medians(steps, s.rounds, s.warmup)

    rows = []
    for label, t, ref in (
        ("forward", t_fwd, REFERENCE[name][0]),
        ("QAT step", t_step, REFERENCE[name][1]),
    ):
        py_added = t["python"] - t["float"]
        hand_added = t["hand"] - t["float"]
        reachable = py_added / hand_added if hand_added > 0 else float("inf")
        # What each interceptor adds beyond the fake-quantizers' own cost (negative: its
        # calls of them cost less than the forward code's Python module calls).
        own = {k: (t[k] - t["hand"]) * 1e6 for k in ("eager", "python") if k in t}
        beyond = " / ".join(f"{own[k]:+.0f} µs" if k in own else "n/a" for k in ("eager", "python"))
        if "eager" in t:
            ratio = t["eager"] / t["float"]
            added = t["eager"] - t["float"]
            less = py_added / added if added > 0 else float("inf")
            eager_cells = (
                f"{t['eager'] * 1e3:.2f} ms | {ratio:.2f}x | "
                f"{'PASS' if ratio <= RATIO_TARGET else 'FAIL'} "
            )
            less_cells = f"{less:.1f}x | {'PASS' if less >= ADDED_TARGET else 'FAIL'} "
        else:
            eager_cells, less_cells = "n/a | n/a | n/a ", "n/a | n/a "
        rows.append(
            f"| {name} | {label} | {t['float'] * 1e3:.2f} ms | {eager_cells}"
            f"| {t['python'] * 1e3:.2f} ms | {t['python'] / t['float']:.2f}x "
            f"| {t['bare'] / t['float']:.2f}x | {less_cells}"
            f"| {t['hand'] / t['float']:.2f}x | {reachable:.1f}x | {beyond} "
            f"| {ref:.1f}x |"
        )
    return rows


def main() -> None:
    """Runs the measurements and prints / saves the tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--adds", type=int, default=2000, help="adds in the per-op loop")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true", help="short smoke run (not saved)")
    parser.add_argument(
        "--python-only",
        action="store_true",
        help="skip eager mode: float and the Python interceptor only (not saved)",
    )
    args = parser.parse_args()
    if os.environ.get("GLIBC_TUNABLES") != TUNABLES:  # the allocator of ops_cpu.py, see there
        os.environ["GLIBC_TUNABLES"] = TUNABLES
        os.execv(sys.executable, [sys.executable, *sys.argv])
    torch.set_num_threads(args.threads)
    settings = Settings(
        rounds=5 if args.quick else args.rounds,
        warmup=3 if args.quick else 15,
        adds=200 if args.quick else args.adds,
        chain=64,
        eager=not args.python_only,
    )
    try:
        if settings.eager:  # fail before measuring anything
            eager_prepare(CNN(), w8a8_eager(), (CNN.example_input(),))
        part_a = interception_rows(settings)
        part_bc = [
            "| model | measure | float | W8A8 eager | eager/float | ≤ 1.3x | Python interceptor "
            "| Python/float | Python without FQs/float | Python added / eager added | ≥ 2x "
            "| FQs in forward/float | Python added / FQs in forward added "
            "| added beyond FQs in forward: eager / Python | 0.3.0 reference |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        part_bc += model_rows("CNN", CNN, CNN.example_input(), settings)
        part_bc += model_rows("PreLN", PreLN, PreLN.example_input(), settings)
    except EagerUnavailableError as exc:
        sys.exit(
            f"eager_overhead.py: {exc}\nEager mode does not work in this build; nothing was "
            f"measured. Use --python-only to time the float and Python-interceptor parts."
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    header = (
        f"\n## Eager mode overhead — {datetime.date.today()} — commit {commit}\n\n"
        f"{platform.processor() or platform.machine()}, {args.threads} threads, torch "
        f"{torch.__version__}, CPU kernels {torch.ops.coreai_opt.cpu_kernel_isa()}, median of "
        f"{settings.rounds} interleaved rounds after {settings.warmup} warm-up calls, "
        f"GLIBC_TUNABLES={TUNABLES} (`python benchmarks/eager_overhead.py"
        f"{' --quick' if args.quick else ''}{' --python-only' if args.python_only else ''}`). "
        f"CNN: 2x conv-bn-relu 3→16→32, max pool, linear 512→64→10, batch 32x3x16x16; "
        f"PreLN: d=256, 4 heads (F.scaled_dot_product_attention), MLP 1024, batch 16x64. "
        f"Forward: eval, no_grad, observers off; QAT step: train, forward + backward + SGD. "
        f"Python interceptor: a TorchFunctionMode with the same W8A8 fake-quantizers. "
        f"FQs in forward: the same fake-quantizers called by the model's forward code, no "
        f"interceptor; Python added / FQs in forward added is the most any interceptor "
        f"applying these fake-quantizers can reach against the Python one; added beyond FQs "
        f"in forward: each interceptor's time minus that model's (its own cost).\n"
    )
    text = header + "\n" + "\n".join(part_a) + "\n\n" + "\n".join(part_bc) + "\n"
    print(text)
    if args.no_save or args.quick or args.python_only:
        return
    with RESULTS.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
