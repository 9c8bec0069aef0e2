"""Insertion of the fake-quantizers into an annotated graph.

Every FQ is a root submodule ``activation_post_process_<N>`` called by a ``call_module``
node of the same name (its name becomes the Core AI buffer name at finalize).

- State: one FQ per ``get_attr`` node with a spec, read by every consumer of that tensor
  (a shared weight shares one FQ).
- Activations: for each value, each edge to a consumer takes the spec of its
  higher-priority side, the consumer's input slot or the producer's output slot (a decline
  on one side leaves the other side's spec). Edges with equal specs share one FQ placed
  right after the producer, so a producer-output / consumer-input pair is one FQ.
- Values that an op only moves (view, permute, dropout, max pooling, ...) stay on the grid
  of the FQ before them: a consumer asking for the same spec reuses that FQ instead of
  adding one. Averaging shared ops (avg pooling, mean) and cat call the same FQ module
  again for consumers that ask for its spec, so input and output share qparams.
- A shared FQ whose axis an op in between moves or resizes becomes per-tensor; an op with
  a bounded output range (relu, sigmoid, tanh, ...) gives its FQ that range (§12).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from coreai_opt.config.spec.factory import CompressionTargetTensor
from coreai_opt.quantization._graph import op_kinds as k
from coreai_opt.quantization._graph.annotate import Annotations, SlotSpec
from coreai_opt.quantization.spec import (
    PerTensorGranularity,
    QuantizationComponentFactory,
    QuantizationScheme,
    QuantizationSpec,
)
from coreai_opt.quantization.spec._dtype_table import format_info

__all__ = ["FQ_PREFIX", "Placement", "insert_fake_quantizers", "is_fq_node"]

FQ_PREFIX = "activation_post_process_"


def is_fq_node(node: fx.Node) -> bool:
    """True for a call of one of the inserted fake-quantizers."""
    return node.op == "call_module" and str(node.target).startswith(FQ_PREFIX)


@dataclass
class Placement:
    """What was inserted: weight FQs with their consuming aten ops, activation FQs, and
    the module(s) whose QATSchedule each FQ follows."""

    weights: dict[str, list[object]] = field(default_factory=dict)
    activations: list[str] = field(default_factory=list)
    owners: dict[str, list[tuple[str, type | str | None]]] = field(default_factory=dict)


@dataclass
class _Quantized:
    node: fx.Node  # the node whose output holds the fake-quantized value
    spec: QuantizationSpec
    module: str
    moved_axis: bool = False  # reached through an op that moves or resizes dimensions
    rerun: bool = False  # consumers wanting this spec read one more call of the module


class _Inserter:
    def __init__(self, gm: fx.GraphModule, start: int) -> None:
        self.gm = gm
        self.counter = itertools.count(start)
        self.placement = Placement()
        self.specs: dict[str, QuantizationSpec] = {}
        self.force_per_tensor: set[str] = set()

    def new_fq(
        self,
        spec: QuantizationSpec,
        target: CompressionTargetTensor,
        after: fx.Node,
        owner: tuple[str, type | str | None],
    ) -> fx.Node:
        name = f"{FQ_PREFIX}{next(self.counter)}"
        self.gm.add_submodule(
            name, QuantizationComponentFactory.create_fake_quantizer(spec, target)
        )
        node = self.call(name, after)
        self.placement.owners[name] = [owner]
        self.specs[name] = spec
        return node

    def call(self, name: str, after: fx.Node, node_name: str | None = None) -> fx.Node:
        """A call of the FQ module *name* on *after*'s output; the node is named like the
        module, or *node_name* for a repeated call of a shared FQ."""
        with self.gm.graph.inserting_after(after):
            node = self.gm.graph.create_node("call_module", name, (after,), name=node_name or name)
        if "val" in after.meta:
            node.meta["val"] = after.meta["val"]
        node.meta["nn_module_stack"] = after.meta.get("nn_module_stack", {})
        return node


def _next_index(gm: fx.GraphModule) -> int:
    used = [
        int(name[len(FQ_PREFIX) :])
        for name, _ in gm.named_children()
        if name.startswith(FQ_PREFIX) and name[len(FQ_PREFIX) :].isdigit()
    ]
    return max(used, default=-1) + 1


def insert_fake_quantizers(gm: fx.GraphModule, ann: Annotations) -> Placement:
    """Insert the FQs that *ann* asks for into *gm* (in place) and recompile it."""
    ins = _Inserter(gm, _next_index(gm))
    original = list(gm.graph.nodes)
    for node, slot in ann.states.items():
        if slot.spec is None:
            continue
        users = [u for u in node.users if not is_fq_node(u)]
        fq = ins.new_fq(slot.spec, CompressionTargetTensor.WEIGHT, node, slot.owner)
        ins.gm.get_submodule(str(fq.target)).tensor_fqn = _weight_fqn(node)
        for user in users:
            user.replace_input_with(node, fq)
        ins.placement.weights[str(fq.target)] = [u.target for u in users]
    quantized: dict[fx.Node, _Quantized] = {}
    state_inputs = _state_input_slots(ann)
    for value in original:
        if value.op == "get_attr" and value in state_inputs:
            _quantize_edges(ins, ann, value, quantized)
            continue
        if value.op not in ("placeholder", "call_function") or not k.is_float_value(value):
            continue
        _inherit(ins, ann, value, quantized)
        _quantize_edges(ins, ann, value, quantized)
    _force_per_tensor(ins)
    _drop_uncalled(ins)
    gm.graph.lint()
    gm.recompile()
    return ins.placement


def _drop_uncalled(ins: _Inserter) -> None:
    """Remove FQ modules whose every call was replaced (cat inputs now share one FQ)."""
    called = {str(n.target) for n in ins.gm.graph.nodes if is_fq_node(n)}
    for name in [n for n in ins.specs if n not in called]:
        delattr(ins.gm, name)
        ins.specs.pop(name)
        ins.placement.owners.pop(name, None)
        ins.placement.weights.pop(name, None)
        if name in ins.placement.activations:
            ins.placement.activations.remove(name)


def _weight_fqn(node: fx.Node) -> str | None:
    """The parameter a weight FQ reads: its get_attr target, also through the conv-bn fold
    (``weight * gamma / sqrt(var + eps)``, whose first input is the weight)."""
    while node.op == "call_function" and node.args and isinstance(node.args[0], fx.Node):
        node = node.args[0]
    return str(node.target) if node.op == "get_attr" else None


def _written(node: fx.Node, index: int) -> bool:
    """True when *node* writes its tensor input number *index* in place."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return False
    tensor_args = [a for a in node.args if isinstance(a, fx.Node)]
    if index >= len(tensor_args):
        return False
    position = node.args.index(tensor_args[index])
    if position >= len(schema.arguments):
        return False
    alias = schema.arguments[position].alias_info
    return alias is not None and alias.is_write


def _state_input_slots(ann: Annotations) -> set[fx.Node]:
    """Model state (``get_attr``) read by an input slot that has a spec (KV caches).

    A slot on a tensor the op writes in place is refused: fake-quantizing it would make
    the op write into the FQ's output instead of the model's buffer.
    """
    found = set()
    for (user, index), slot in ann.inputs.items():
        if slot.spec is None:
            continue
        inputs = k.tensor_inputs(user)
        if index >= len(inputs) or inputs[index].op != "get_attr":
            continue
        if _written(user, index):
            raise ValueError(
                f"input {index} of op {user.name!r} ({user.target}) is the buffer "
                f"{inputs[index].target!r}, which the op writes in place; it cannot be "
                f"fake-quantized (the write would miss the buffer). Quantize the value "
                f"written into it instead (another input position)"
            )
        found.add(inputs[index])
    return found


def _force_per_tensor(ins: _Inserter) -> None:
    """Shared activation FQs whose axis an op between their calls moves or resizes become
    per-tensor (pooling, mean, transpose, permute, flatten, reshape, view, unsqueeze)."""
    for name in sorted(ins.force_per_tensor):
        fq = ins.gm.get_submodule(name)
        granularity = getattr(fq, "granularity", None)
        if granularity is None or isinstance(granularity, PerTensorGranularity):
            continue
        spec = ins.specs[name].model_copy(update={"granularity": PerTensorGranularity()})
        fresh = QuantizationComponentFactory.create_fake_quantizer(
            spec, CompressionTargetTensor.ACTIVATION
        )
        setattr(ins.gm, name, fresh)


def _source(node: fx.Node, quantized: dict[fx.Node, _Quantized], ins: _Inserter) -> object:
    """The quantization state of a value feeding an op: its FQ or inherited grid."""
    if is_fq_node(node) and str(node.target) in ins.specs:
        return _Quantized(node, ins.specs[str(node.target)], str(node.target))
    return quantized.get(node)


def _fq_axis(ins: _Inserter, module: str) -> int | None:
    """The axis of a per-channel / per-block FQ module (None for per-tensor)."""
    granularity = getattr(ins.gm.get_submodule(module), "granularity", None)
    if granularity is None or isinstance(granularity, PerTensorGranularity):
        return None
    return getattr(granularity, "axis", None)


def _axis_survives(node: fx.Node, axis: int, rank: int) -> bool:
    """True when dimension *axis* of *node*'s input is still that dimension, with the same
    size, in its output (so a per-channel FQ along it stays valid after the op)."""
    axis = axis % rank if rank else axis
    name = str(getattr(k.packet(node), "__name__", ""))
    if k.is_one_of(node, (*k.SHARED["maxpool"], *k.SHARED["avgpool"])) and name != "mean":
        pooled = int(name[-2]) if name[-2].isdigit() else 1  # max_pool2d -> 2 trailing dims
        return axis < rank - pooled
    if name == "mean":
        dims = node.args[1] if len(node.args) > 1 else None
        keepdim = bool(node.args[2]) if len(node.args) > 2 else bool(node.kwargs.get("keepdim"))
        if dims is None:
            return False
        dims = [d % rank for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        return keepdim and axis not in dims
    if name == "transpose":
        return axis not in {int(node.args[1]) % rank, int(node.args[2]) % rank}
    if name == "permute":
        perm = [int(d) % rank for d in node.args[1]]
        return perm[axis] == axis
    return not k.is_one_of(node, k.AXIS_CHANGING)


def _rank(node: fx.Node) -> int | None:
    val = node.meta.get("val")
    return val.dim() if isinstance(val, torch.Tensor) else None


def _inherit(
    ins: _Inserter, ann: Annotations, value: fx.Node, quantized: dict[fx.Node, _Quantized]
) -> None:
    """Values computed by grid-keeping ops inherit their input's FQ."""
    if value.op != "call_function":
        return
    inputs = k.tensor_inputs(value)
    if not inputs:
        return
    if k.is_one_of(value, k.SHARED["concat"]):
        _share_cat(ins, ann, value, quantized)
        return
    src = _source(inputs[0], quantized, ins)
    if not isinstance(src, _Quantized):
        return
    axis = _fq_axis(ins, src.module)
    in_rank = _rank(inputs[0])
    moved = src.moved_axis or (
        axis is not None and in_rank is not None and not _axis_survives(value, axis, in_rank)
    )
    if k.is_one_of(value, k.AVERAGING) and value in ann.shared:
        if _rank(value) != in_rank and axis is not None:
            return  # a per-channel / per-block FQ cannot take another rank: own FQs then
        if moved:
            ins.force_per_tensor.add(src.module)
        quantized[value] = _Quantized(value, src.spec, src.module, rerun=True)
    elif k.is_one_of(value, k.VALUE_PRESERVING):
        quantized[value] = _Quantized(value, src.spec, src.module, moved)


def _share_cat(
    ins: _Inserter, ann: Annotations, cat: fx.Node, quantized: dict[fx.Node, _Quantized]
) -> None:
    """An annotated cat runs every input through the FQ of its first input, and its output
    (when it has a spec) through the same FQ again: one FQ for all slots. Not when that FQ
    is per-channel along the cat dimension: then inputs keep their own."""
    inputs = k.tensor_inputs(cat)
    first = _source(inputs[0], quantized, ins)
    if cat not in ann.shared or not isinstance(first, _Quantized):
        return
    axis = _fq_axis(ins, first.module)
    rank = _rank(cat)
    dim = cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0)
    if axis is not None and rank and axis % rank == int(dim) % rank:
        return
    for position, node in enumerate(inputs[1:], 1):
        src = _source(node, quantized, ins)
        if isinstance(src, _Quantized) and src.module == first.module:
            continue
        raw = node.args[0] if is_fq_node(node) and node.op == "call_module" else node
        name = f"{first.module}_{cat.name}_{position}"
        call = ins.call(first.module, raw, name)
        cat.replace_input_with(node, call)
        if is_fq_node(node) and not node.users:
            ins.gm.graph.erase_node(node)
    # With an output spec, the output slot shares the same FQ too: consumers asking for it
    # read one more call of the module.
    out = ann.outputs.get(cat)
    rerun = out is not None and out.spec is not None
    quantized[cat] = _Quantized(cat, first.spec, first.module, rerun=rerun)


# Output ranges that an op guarantees (integer FQs only): (symmetric, low, high).
_INTRINSIC = {
    "relu": (False, 0.0, None),
    "relu6": (False, 0.0, 6.0),
    "sigmoid": (False, 0.0, 1.0),
    "hardsigmoid": (False, 0.0, 1.0),
    "tanh": (True, -1.0, 1.0),
}


def intrinsic_range(node: fx.Node) -> tuple[bool, float | None, float | None] | None:
    """(symmetric, low, high) of the values *node* can produce, for the ops that bound them."""
    if node.op != "call_function":
        return None
    name = str(getattr(k.packet(node), "__name__", "")).rstrip("_")
    if name == "hardtanh":
        lo = float(node.args[1]) if len(node.args) > 1 else -1.0
        hi = float(node.args[2]) if len(node.args) > 2 else 1.0
        if (lo, hi) == (0.0, 6.0):
            return _INTRINSIC["relu6"]
        return (lo == -hi, lo, hi)
    return _INTRINSIC.get(name)


def _with_intrinsic_range(
    spec: QuantizationSpec, value: fx.Node, consumer_specs: list[QuantizationSpec]
) -> QuantizationSpec:
    """*spec* with *value*'s op-intrinsic output range (integer dtypes only).

    Shared with consumers, each bound is the union with theirs, an unpinned bound winning.
    """
    intrinsic = intrinsic_range(value)
    if intrinsic is None or format_info(spec.dtype).is_float:
        return spec
    symmetric, lo, hi = intrinsic
    for other in consumer_specs:
        c_lo, c_hi = other.float_range
        lo = None if lo is None or c_lo is None else min(lo, c_lo)
        hi = None if hi is None or c_hi is None else max(hi, c_hi)
    if lo is not None and lo > 0:
        lo = 0.0
    scheme = QuantizationScheme.SYMMETRIC if symmetric else QuantizationScheme.ASYMMETRIC
    return spec.model_copy(update={"qscheme": scheme, "float_range": [lo, hi]})


def _quantize_edges(
    ins: _Inserter, ann: Annotations, value: fx.Node, quantized: dict[fx.Node, _Quantized]
) -> None:
    out = ann.outputs.get(value)
    out_spec = out.spec if out is not None else None
    consumers: dict[int, list[QuantizationSpec]] = {}
    # Per group: its spec, the consumers reading it, and the winning slot (the one of
    # highest priority, whose module's QAT schedule the shared FQ follows).
    groups: list[tuple[QuantizationSpec, list[fx.Node], list[SlotSpec]]] = []
    for user in list(value.users):
        if is_fq_node(user):
            continue
        for index, inp in enumerate(k.tensor_inputs(user)):
            if inp is not value:
                continue
            consumer = ann.inputs.get((user, index))
            if consumer is not None and consumer.spec is None:
                consumer = None  # a decline leaves the other side's spec
            producer = out if out is not None and out_spec is not None else None
            sides = [side for side in (consumer, producer) if side is not None]
            if not sides:
                continue
            slot = min(sides, key=lambda side: side.priority)  # highest priority wins
            spec = slot.spec
            assert spec is not None
            g_index = next((i for i, g in enumerate(groups) if g[0] == spec), None)
            if g_index is None:
                g_index = len(groups)
                groups.append((spec, [user], [slot]))
            else:
                groups[g_index][1].append(user)
                groups[g_index][2].append(slot)
            if consumer is not None:
                consumers.setdefault(g_index, []).append(consumer.spec)
    for g_index, (spec, users, slots) in enumerate(groups):
        if out is not None and out.spec == spec:
            slots.append(out)
        owner = min(slots, key=lambda slot: slot.priority).owner
        have = quantized.get(value)
        if have is not None and have.spec == spec:
            if have.rerun:
                have.node = ins.call(have.module, value, f"{have.module}_{value.name}")
                have.rerun = False
            target = have.node
            if target is not value:
                for user in users:
                    user.replace_input_with(value, target)
            if have.moved_axis:
                ins.force_per_tensor.add(have.module)
            continue
        fq_spec = _with_intrinsic_range(spec, value, consumers.get(g_index, []))
        fq = ins.new_fq(fq_spec, CompressionTargetTensor.ACTIVATION, value, owner)
        ins.specs[str(fq.target)] = spec
        ins.placement.activations.append(str(fq.target))
        for user in set(users):
            user.replace_input_with(value, fq)
        if out_spec is not None and spec == out_spec:
            quantized[value] = _Quantized(fq, spec, str(fq.target))


def remove_fake_quantizer_node(gm: fx.GraphModule, name: str) -> None:
    """Remove every call of the FQ module *name* (its input takes its place) and the module."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target == name:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    if hasattr(gm, name):
        delattr(gm, name)
    gm.graph.lint()
    gm.recompile()


def fq_modules(gm: nn.Module) -> dict[str, nn.Module]:
    """The inserted FQ modules of *gm* by name."""
    return {n: m for n, m in gm.named_children() if n.startswith(FQ_PREFIX)}
