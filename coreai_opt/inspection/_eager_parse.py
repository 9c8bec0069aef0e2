"""Turn one eager-mode recording forward into ``OpInfo`` / ``ModuleInfo`` records.

The ops are the calls eager mode intercepts (:mod:`coreai_opt.quantization._eager.recording`
runs the model once through the C++ interceptor), under the names and types eager configs
match: ``op_name`` is ``<module fqn>.<op>[_k]`` (the bare ``<op>[_k]`` at the top level)
and ``op_type`` the registry key (``conv2d``, ``linear``, ``add``, ``relu``, ...). A module
called several times runs ops of the same names again; the first call's op is kept (as
eager quantization does) and later calls' outputs still feed their readers through it.

Around them:

* the model's inputs are synthetic ops ``input_<i>`` (op type ``"placeholder"``, as in
  graph mode) and the tensors it returns are read by synthetic ops ``output_<i>`` (op type
  ``"output"``), one per returned tensor, in the flattened order of the return value;
* parameters and buffers of the model are state ops (``is_state=True``, op type
  ``"get_attr"`` as in graph mode) named by their qualified name (``conv.weight``; a tied
  tensor by its first owner), placed in the owning module and created when first read.

Edges follow tensor identity (``is``): an op input comes from the latest earlier op that
returned that tensor object (in-place ops return their input, so they become its new
producer). Ops eager mode does not intercept (``batch_norm``, ``flatten``, views, the
insides of pass-through ops such as attention, ...) are seen by a ``TorchDispatchMode``
during the same forward and are transparent: their result leads to the producer of
their first tensor argument that has one (non-state arguments first) or, when that is
more recent, to the producer of the tensor it is a view of. Scalar arguments and tensors
with no producer at all (numbers wrapped as tensors, tensors created inside ``forward``
from nothing) give no input edge, so ``OpInfo.inputs`` holds one edge per tensor argument
whose producer is known, in argument order.

Module boundaries come from each module's first call: ``input_ops[i]`` lists the ops of
that call that read its ``i``-th (flattened) tensor input, directly or through
non-intercepted functions; ``output_ops[i]`` is the op inside the call that produced its
``i``-th tensor output (absent when the tensor was produced outside, e.g. a module that
returns its input, or one whose body eager mode does not intercept). Indices are the
positions ``module_input_spec`` / ``module_output_spec`` use; parameters and buffers are
never boundary tensors. Modules that are never called (``ModuleList`` containers) have no
boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from coreai_opt.inspection._graph_parse import (
    OUTPUT_TYPE,
    PLACEHOLDER_TYPE,
    STATE_TYPE,
    add_reader,
    build_module_tree,
    path_contexts,
    qualified_type_name,
    set_outputs,
)
from coreai_opt.inspection._info import (
    BoundaryEdge,
    InputEdge,
    ModuleContext,
    ModuleInfo,
    OpInfo,
    SourceFrame,
)
from coreai_opt.quantization._eager.recording import ModuleCall, OpCall, Recording, record

__all__ = ["ParsedEager", "parse_eager_model"]

_FORWARD = "forward"


@dataclass
class ParsedEager:
    """What :func:`parse_eager_model` returns.

    Attributes:
        ops: every op (synthetic inputs, states, intercepted ops, synthetic outputs), in
            execution order, kept or not.
        kept: the ops the module tree holds (all of them without a filter).
        root: the root of the module tree.
        boundary_names: names of the synthetic ``input_<i>`` / ``output_<i>`` ops.
    """

    ops: list[OpInfo]
    kept: list[OpInfo]
    root: ModuleInfo
    boundary_names: frozenset[str]


def parse_eager_model(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    keep: Callable[[OpInfo], bool] | None = None,
) -> ParsedEager:
    """Run *model* once on *example_inputs* (eval, ``no_grad``; train flags restored) and
    build its op records and module tree.

    Args:
        model: the model (a plain or eager-prepared ``nn.Module``).
        example_inputs: its positional inputs.
        keep: which ops the module tree holds (default: all). Edges and module
            boundaries are always computed on all ops.
    """
    with _Lineage() as lineage:
        recording = record(model, example_inputs, capture_stack=True)
    return _Builder(model, recording, lineage.parents).build(keep)


# -- data flow through functions the interceptor does not see ----------------------------------


def _flat_tensors(value: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(value)
    return [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]


class _Lineage(TorchDispatchMode):
    """For every tensor an aten op returns, the tensor arguments it came from.

    A dispatch mode (below the interceptor's dispatch key) rather than a function mode:
    it sees the insides of composite functions and leaves the model's control flow alone
    (a ``TorchFunctionMode`` makes ``has_torch_function`` true, which turns off the fused
    fast paths of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` and so would
    change which ops run).

    Results that are one of the arguments (in-place ops, ``contiguous()`` of a contiguous
    tensor) are not recorded: the object keeps its producer. The tensors are held so that
    their ``id`` stays theirs until the records are built.
    """

    def __init__(self) -> None:
        super().__init__()
        self.parents: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def __torch_dispatch__(
        self,
        func: Callable[..., Any],
        types: Iterable[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Run *func* unchanged and remember where its tensor results came from."""
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        inputs = _flat_tensors((args, kwargs))
        if inputs:
            for out in _flat_tensors(result):
                if any(out is t for t in inputs) or id(out) in self.parents:
                    continue
                self.parents[id(out)] = (out, tuple(inputs))
        return result


# -- building the records --------------------------------------------------------------------


@dataclass
class _Write:
    """One op returning a tensor object: when, which op record, which output, which call."""

    order: float
    op: OpInfo
    index: int
    call: OpCall | None


@dataclass
class _Source:
    """Where a tensor read at some time came from, and the tensors walked to find it
    (the tensor read first, the producer's output last)."""

    write: _Write
    chain: list[torch.Tensor] = field(default_factory=list)


@dataclass
class _Found:
    """A producer found while tracing: an op's write or a state tensor (its op is made
    only once it is chosen), with its time and the tensors walked."""

    order: float
    write: _Write | None
    state: torch.Tensor | None
    chain: list[torch.Tensor]


class _Builder:
    def __init__(
        self,
        model: nn.Module,
        recording: Recording,
        parents: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, ...]]],
    ) -> None:
        self.model = model
        self.recording = recording
        self.parents = parents
        self.root_type = qualified_type_name(type(model))
        self.root_ctx = ModuleContext("", self.root_type)
        self.types: dict[str, str | None] = {}
        self.states = _state_owners(model)
        self.state_ops: dict[int, OpInfo] = {}
        self.ops: list[OpInfo] = []
        # the intercepted ops keep their names: synthetic and state ops give way
        self.names: set[str] = {call.op_name for call in recording.ops}
        self.writes: dict[int, list[_Write]] = {}
        self.by_name: dict[str, OpInfo] = {}
        self.first_call: dict[OpInfo, OpCall] = {}
        self.arg_chains: dict[OpInfo, list[tuple[int, list[torch.Tensor]]]] = {}
        self.readers: dict[OpInfo, dict[int, list[OpInfo]]] = {}
        self.boundary_names: set[str] = set()

    # -- names, types, stacks --------------------------------------------------------------

    def type_of(self, path: str) -> str | None:
        if path not in self.types:
            try:
                module = self.model.get_submodule(path) if path else self.model
            except AttributeError:
                self.types[path] = None
            else:
                self.types[path] = qualified_type_name(type(module))
        return self.types[path]

    def contexts_for_path(self, path: str) -> tuple[ModuleContext, ...]:
        return path_contexts(self.root_ctx, path, self.type_of)

    def call_stack(self, call: ModuleCall) -> tuple[ModuleContext, ...]:
        """The module calls an op ran in, root first."""
        chain: list[ModuleContext] = []
        node: ModuleCall | None = call
        while node is not None:
            if node.path:
                chain.append(ModuleContext(node.path, qualified_type_name(node.module_type)))
            node = node.parent
        return (self.root_ctx, *reversed(chain))

    def unique(self, name: str) -> str:
        """*name*, or ``name_<k>`` when an op (or an intercepted op to come) has it."""
        candidate, k = name, 1
        while candidate in self.names:
            candidate, k = f"{name}_{k}", k + 1
        return candidate

    def add_op(self, op: OpInfo) -> OpInfo:
        op._position = len(self.ops)
        self.ops.append(op)
        self.names.add(op.op_name)
        self.readers[op] = {}
        return op

    # -- data flow -------------------------------------------------------------------------

    def state_op(self, tensor: torch.Tensor) -> OpInfo:
        op = self.state_ops.get(id(tensor))
        if op is None:
            path, name = self.states[id(tensor)][1][0]
            qualified = f"{path}.{name}" if path else name
            op = OpInfo(
                self.unique(qualified),
                STATE_TYPE,
                module_stack=self.contexts_for_path(path),
                is_state=True,
            )
            self.add_op(op)
            self.state_ops[id(tensor)] = op
        return op

    def latest_write(self, tensor: torch.Tensor, before: float) -> _Write | None:
        """The last op before op ``order`` *before* that returned this tensor object."""
        found = None
        for write in self.writes.get(id(tensor), ()):
            if write.order < before:
                found = write
        return found

    def resolve(self, tensor: torch.Tensor, before: float) -> _Source | None:
        """The producer of *tensor* as read just before op ``order`` *before* (see
        :meth:`trace`); a state tensor's op is created when first found."""
        found = self.trace(tensor, before)
        if found is None:
            return None
        write = found.write
        if write is None:
            assert found.state is not None
            write = _Write(-math.inf, self.state_op(found.state), 0, None)
        return _Source(write, found.chain)

    def trace(self, tensor: torch.Tensor, before: float) -> _Found | None:
        """Where *tensor*, read just before op ``order`` *before*, comes from.

        A tensor no op returned is traced back through what it was computed from: the
        first tensor argument of the op that returned it (non-state first) that leads to a
        producer, and the tensor it is a view of (``_base``; this finds the result of an
        op run inside a composite function, e.g. a view of it). Of the two, the most
        recent producer wins (on a tie, the arguments). None for a non-tensor (a Scalar
        argument) and for a tensor nothing produced.
        """
        if not isinstance(tensor, torch.Tensor):
            return None
        memo: dict[int, _Found | None] = {}
        open_: set[int] = set()
        pending: list[tuple[torch.Tensor, bool]] = [(tensor, False)]
        while pending:
            current, expanded = pending.pop()
            key = id(current)
            if expanded:
                open_.discard(key)
                memo[key] = self._combine(current, memo)
                continue
            if key in memo or key in open_:
                continue
            found = self._leaf(current, before)
            children = [] if found is not None else self._sources_of(current)
            if not children:
                memo[key] = found
                continue
            open_.add(key)
            pending.append((current, True))
            pending.extend((child, False) for child in reversed(children))
        return memo.get(id(tensor))

    def _leaf(self, tensor: torch.Tensor, before: float) -> _Found | None:
        """The tensor's own producer (an op that returned it, or itself as a state)."""
        write = self.latest_write(tensor, before)
        if write is not None:
            return _Found(write.order, write, None, [tensor])
        if id(tensor) in self.states:
            return _Found(-math.inf, None, tensor, [tensor])
        return None

    def _arguments_of(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        entry = self.parents.get(id(tensor))
        if entry is None:
            return []
        return sorted(entry[1], key=lambda t: id(t) in self.states)

    def _sources_of(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        base = tensor._base
        return [*self._arguments_of(tensor), *([base] if base is not None else [])]

    def _combine(self, tensor: torch.Tensor, memo: dict[int, _Found | None]) -> _Found | None:
        candidates: list[_Found] = []
        for argument in self._arguments_of(tensor):
            found = memo.get(id(argument))
            if found is not None:
                candidates.append(found)
                break
        base = tensor._base
        if base is not None and memo.get(id(base)) is not None:
            candidates.append(memo[id(base)])  # type: ignore[arg-type]
        if not candidates:
            return None
        best = max(candidates, key=lambda found: found.order)  # first on a tie
        return _Found(best.order, best.write, best.state, [tensor, *best.chain])

    def add_reader(self, edge: InputEdge, reader: OpInfo) -> None:
        add_reader(self.readers, edge, reader)

    def add_write(self, tensor: torch.Tensor | None, write: _Write) -> None:
        if tensor is not None:
            self.writes.setdefault(id(tensor), []).append(write)

    # -- the whole model -------------------------------------------------------------------

    def build(self, keep: Callable[[OpInfo], bool] | None) -> ParsedEager:
        root_call = self.recording.root_call
        model_inputs = root_call.inputs if root_call is not None else []
        model_outputs = root_call.outputs if root_call is not None else []

        input_ops: list[OpInfo] = []
        for i, tensor in enumerate(model_inputs):
            op = self.add_op(OpInfo(self.unique(f"input_{i}"), PLACEHOLDER_TYPE, (self.root_ctx,)))
            self.boundary_names.add(op.op_name)
            input_ops.append(op)
            if id(tensor) not in self.writes:  # the same tensor passed twice: first input
                self.add_write(tensor, _Write(-1, op, 0, None))

        for call in self.recording.ops:
            self.add_call(call)

        output_edges: dict[int, InputEdge] = {}
        for i, tensor in enumerate(model_outputs):
            source = self.resolve(tensor, math.inf)
            edge = None if source is None else InputEdge(source.write.op, source.write.index)
            op = self.add_op(
                OpInfo(
                    self.unique(f"output_{i}"),
                    OUTPUT_TYPE,
                    (self.root_ctx,),
                    inputs=() if edge is None else (edge,),
                )
            )
            self.boundary_names.add(op.op_name)
            if edge is not None:
                self.add_reader(edge, op)
                output_edges[i] = edge

        set_outputs(self.readers)

        kept = [op for op in self.ops if keep is None or keep(op)]
        root, modules = build_module_tree(kept, self.root_type, self.type_of)
        self.module_boundaries(modules, root_call)
        for i, op in enumerate(input_ops):
            root.input_ops[i] = self.readers_inside(root_call, model_inputs[i])
            root._input_sources[i] = InputEdge(op, 0)
        for i, edge in output_edges.items():
            root.output_ops[i] = BoundaryEdge(edge.op, edge.index)
        return ParsedEager(self.ops, kept, root, frozenset(self.boundary_names))

    def add_call(self, call: OpCall) -> None:
        """One intercepted call: a new op for its first occurrence, edges either way."""
        sources = [(arg, self.resolve(arg.tensor, call.order)) for arg in call.inputs]
        edges = [
            (InputEdge(source.write.op, source.write.index), source.chain)
            for _, source in sources
            if source is not None
        ]
        op = self.by_name.get(call.op_name)
        if op is None:
            op = OpInfo(
                call.op_name,
                call.op_type,
                module_stack=self.call_stack(call.module_call),
                source_frames=_forward_frames(call.stack),
                inputs=tuple(edge for edge, _ in edges),
            )
            self.add_op(op)
            self.by_name[call.op_name] = op
            self.first_call[op] = call
            self.arg_chains[op] = [(position, chain) for position, (_, chain) in enumerate(edges)]
        for edge, _ in edges:
            self.add_reader(edge, op)
        for index, out in enumerate(call.outputs):
            self.add_write(out, _Write(call.order, op, index, call))

    # -- module boundaries -----------------------------------------------------------------

    def module_boundaries(
        self, modules: dict[str, ModuleInfo], root_call: ModuleCall | None
    ) -> None:
        """``input_ops`` / ``output_ops`` of every non-root module, from its first call."""
        first: dict[str, ModuleCall] = {}
        for call in self.recording.module_calls:
            if call is not root_call:
                first.setdefault(call.path, call)
        for name, module in modules.items():
            call = first.get(name)
            if not name or call is None:
                continue
            inside = [c for c in self.recording.ops if _within(c.module_call, call)]
            entry = min((c.order for c in inside), default=math.inf)
            exit_ = max((c.order for c in inside), default=math.inf) + 1
            # Tensors that are (or are computed only from) states do not count.
            for i, tensor in enumerate(call.inputs):
                found = self.trace(tensor, entry)
                if found is not None and found.write is None:
                    continue
                module.input_ops[i] = self.readers_inside(call, tensor)
                if found is not None and found.write is not None:
                    module._input_sources[i] = InputEdge(found.write.op, found.write.index)
            for i, tensor in enumerate(call.outputs):
                found = self.trace(tensor, exit_)
                if found is None or found.write is None or found.write.call is None:
                    continue
                if _within(found.write.call.module_call, call):
                    module.output_ops[i] = BoundaryEdge(found.write.op, found.write.index)

    def readers_inside(self, call: ModuleCall | None, tensor: torch.Tensor) -> list[BoundaryEdge]:
        """The ops first run inside *call* whose inputs read *tensor* (directly or through
        non-intercepted functions), with the position of that input."""
        edges: list[BoundaryEdge] = []
        for op, first_call in self.first_call.items():
            if call is not None and not _within(first_call.module_call, call):
                continue
            for position, chain in self.arg_chains[op]:
                if any(t is tensor for t in chain):
                    edges.append(BoundaryEdge(op, position))
        return edges


# -- helpers ----------------------------------------------------------------------------------


def _state_owners(model: nn.Module) -> dict[int, tuple[torch.Tensor, list[tuple[str, str]]]]:
    """``id(tensor) -> (tensor, [(module path, attribute name), ...])`` for every parameter
    and buffer, owners in ``named_modules`` order (shared modules under every path)."""
    owners: dict[int, tuple[torch.Tensor, list[tuple[str, str]]]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        named = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, tensor in named:
            if tensor is None:
                continue
            entry = owners.setdefault(id(tensor), (tensor, []))
            if (path, name) not in entry[1]:
                entry[1].append((path, name))
    return owners


def _within(call: ModuleCall | None, ancestor: ModuleCall) -> bool:
    """True when *call* is *ancestor* or runs inside it."""
    node = call
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent
    return False


def _forward_frames(stack: Iterable[Any] | None) -> tuple[SourceFrame, ...]:
    """The ``forward`` frames of a captured Python stack, outermost first."""
    if stack is None:
        return ()
    return tuple(
        SourceFrame(
            frame.filename, int(frame.lineno or 0), frame.name, (frame.line or "").strip() or None
        )
        for frame in stack
        if frame.name == _FORWARD
    )
