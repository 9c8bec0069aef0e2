"""Turn an FX ``GraphModule`` (from ``torch.export``) into ``OpInfo`` / ``ModuleInfo`` records.

Every node becomes an op except ``operator.getitem`` nodes that pick one output of a
multi-output op: those are folded into the edge (``InputEdge(op, index)``), so a
consumer of ``split[1]`` reads output 1 of ``split``. Placeholders and the output node
are the synthetic boundary ops of the root module (op types ``"placeholder"`` and
``"output"``); ``get_attr`` nodes are state ops (``is_state=True``, op type
``"get_attr"``) placed in the module that owns the attribute. The ``_guards_fn`` call
that ``ExportedProgram.module()`` inserts to check inputs is not an op of the model and is
skipped.

Call nodes take their module stack from ``node.meta["nn_module_stack"]`` and their
op type from ``node.meta["torch_fn"]`` (the part after the last dot, e.g.
``"builtin_function_or_method.conv2d"`` -> ``"conv2d"``), falling back to the target
(the aten overload packet name, the method name, the module class) for graphs that do
not carry that metadata.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from coreai_opt.inspection._info import (
    BoundaryEdge,
    InputEdge,
    ModuleContext,
    ModuleInfo,
    OpInfo,
    SourceFrame,
)

__all__ = ["ParsedGraph", "parse_graph_module", "qualified_type_name"]

PLACEHOLDER_TYPE = "placeholder"
OUTPUT_TYPE = "output"
STATE_TYPE = "get_attr"
_GUARDS_FN = "_guards_fn"

_FRAME_RE = re.compile(r'^\s*File "(?P<file>.*)", line (?P<line>\d+), in (?P<func>.*?)\s*$')


@dataclass
class ParsedGraph:
    """What :func:`parse_graph_module` returns.

    Attributes:
        ops: every op of the graph, in node order (kept or not).
        kept: the ops the module tree holds (all of them without a filter).
        root: the root of the module tree.
    """

    ops: list[OpInfo]
    kept: list[OpInfo]
    root: ModuleInfo


def qualified_type_name(cls: type) -> str:
    """``module.QualName`` of a class, the form ``nn_module_stack`` records.

    The classes ``GraphModule`` generates per instance are named as ``GraphModule``.
    """
    if issubclass(cls, fx.GraphModule) and "<locals>" in cls.__qualname__:
        cls = fx.GraphModule
    return f"{cls.__module__}.{cls.__qualname__}"


def parse_graph_module(
    gm: fx.GraphModule,
    *,
    root_type: str | None = None,
    source_model: nn.Module | None = None,
    keep: Callable[[OpInfo], bool] | None = None,
) -> ParsedGraph:
    """Build the op records and the module tree of *gm*.

    Args:
        gm: the graph to parse.
        root_type: qualified class name of the root module (default: the root entry of
            ``nn_module_stack``, else the class of *gm*).
        source_model: the model *gm* was exported from; used to type modules that
            never appear on a module stack (e.g. a ``ModuleList`` container).
        keep: which ops the module tree holds (default: all). Edges and module
            boundaries are always computed on the whole graph.
    """
    nodes = list(gm.graph.nodes)
    stack_types = _module_types_from_stacks(nodes)
    if root_type is None:
        root_type = stack_types.get("") or qualified_type_name(type(gm))
    stack_types[""] = root_type

    def type_of(path: str) -> str | None:
        if path in stack_types:
            return stack_types[path]
        for model in (source_model, gm):
            if model is None:
                continue
            try:
                cls = type(model.get_submodule(path))
            except AttributeError:
                continue
            if cls is nn.Module:  # torch.export's stand-ins carry no type
                continue
            return qualified_type_name(cls)
        return None

    root_ctx = ModuleContext("", root_type)

    def contexts_for_path(path: str) -> tuple[ModuleContext, ...]:
        return path_contexts(root_ctx, path, type_of)

    # -- ops -----------------------------------------------------------------------------
    ops: list[OpInfo] = []
    synthetic: set[str] = set()
    value_of: dict[fx.Node, tuple[OpInfo, int]] = {}
    op_of: dict[fx.Node, OpInfo] = {}
    for node in nodes:
        if node.op == "call_module" and node.target == _GUARDS_FN:
            continue  # input checks torch.export adds to .module(), not part of the model
        if _is_folded_getitem(node, op_of):
            source = node.args[0]
            assert isinstance(source, fx.Node)
            value_of[node] = (op_of[source], int(node.args[1]))  # type: ignore[call-overload]
            continue
        if node.op == "placeholder":
            op = OpInfo(node.name, PLACEHOLDER_TYPE, module_stack=(root_ctx,))
            synthetic.add(op.op_name)
        elif node.op == "output":
            op = OpInfo(node.name, OUTPUT_TYPE, module_stack=(root_ctx,))
            synthetic.add(op.op_name)
        elif node.op == "get_attr":
            owner = str(node.target).rpartition(".")[0]
            op = OpInfo(node.name, STATE_TYPE, module_stack=contexts_for_path(owner), is_state=True)
        else:
            stack = _module_stack(node, root_ctx, contexts_for_path)
            op = OpInfo(
                node.name,
                _op_type(node, gm),
                module_stack=stack,
                source_frames=parse_stack_trace(node.meta.get("stack_trace")),
            )
        op._position = len(ops)
        ops.append(op)
        op_of[node] = op
        value_of[node] = (op, 0)

    # -- edges ---------------------------------------------------------------------------
    readers: dict[OpInfo, dict[int, list[OpInfo]]] = {op: {} for op in ops}
    for node, op in op_of.items():
        edges = tuple(InputEdge(*value_of[inp]) for inp in node.all_input_nodes)
        op.inputs = edges
        for edge in edges:
            add_reader(readers, edge, op)
    set_outputs(readers)

    # -- module tree ---------------------------------------------------------------------
    kept = [op for op in ops if keep is None or keep(op)]
    root, modules = build_module_tree(kept, root_type, type_of)

    _compute_boundaries(ops, synthetic, modules, nodes, op_of, value_of)
    return ParsedGraph(ops=ops, kept=kept, root=root)


# -- shared with the eager parser ------------------------------------------------------------


def path_contexts(
    root_ctx: ModuleContext, path: str, type_of: Callable[[str], str | None]
) -> tuple[ModuleContext, ...]:
    """The module stack of the module at *path*: the root, then every prefix of *path*."""
    if not path:
        return (root_ctx,)
    parts = path.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return (root_ctx, *(ModuleContext(p, type_of(p)) for p in prefixes))


def add_reader(
    readers: dict[OpInfo, dict[int, list[OpInfo]]], edge: InputEdge, reader: OpInfo
) -> None:
    """Record *reader* (once) as a user of output ``edge.index`` of ``edge.op``."""
    users = readers[edge.op].setdefault(edge.index, [])
    if reader not in users:
        users.append(reader)


def set_outputs(readers: dict[OpInfo, dict[int, list[OpInfo]]]) -> None:
    """``op.outputs`` of every op from the readers recorded with :func:`add_reader`."""
    for op, by_index in readers.items():
        op.outputs = {k: tuple(by_index[k]) for k in sorted(by_index)}


def build_module_tree(
    kept: list[OpInfo], root_type: str | None, type_of: Callable[[str], str | None]
) -> tuple[ModuleInfo, dict[str, ModuleInfo]]:
    """The modules holding the *kept* ops (and their ancestors), by qualified name.

    Modules are created in execution order of the compute ops; state ops (listed first by
    export) only add modules nothing else created. Each op is placed in the innermost
    module of its stack; a module's type comes from the stack, else from *type_of*.
    """
    root = ModuleInfo("", root_type)
    modules: dict[str, ModuleInfo] = {"": root}

    def module_for(op: OpInfo) -> ModuleInfo:
        known = {ctx.module_name: ctx.module_type for ctx in op.module_stack}
        module = root
        path = op.module_name
        if not path:
            return module
        parts = path.split(".")
        for i, part in enumerate(parts):
            name = ".".join(parts[: i + 1])
            child = modules.get(name)
            if child is None:
                child = ModuleInfo(name, known.get(name) or type_of(name))
                modules[name] = child
                module.child_modules[part] = child
            module = child
        return module

    for op in sorted(kept, key=lambda o: (o.is_state, o._position)):
        module_for(op)
    for op in kept:
        module_for(op).ops.append(op)
    return root, modules


def parse_stack_trace(trace: object) -> tuple[SourceFrame, ...]:
    """The ``forward`` frames of a recorded stack trace, outermost first."""
    if not isinstance(trace, str) or not trace:
        return ()
    frames: list[SourceFrame] = []
    lines = trace.splitlines()
    i = 0
    while i < len(lines):
        match = _FRAME_RE.match(lines[i])
        i += 1
        if match is None:
            continue
        code: str | None = None
        if i < len(lines) and _FRAME_RE.match(lines[i]) is None:
            code = lines[i].strip() or None
            i += 1
        if match["func"] == "forward":
            frames.append(SourceFrame(match["file"], int(match["line"]), match["func"], code))
    return tuple(frames)


# -- helpers ------------------------------------------------------------------------------


def _is_folded_getitem(node: fx.Node, op_of: Mapping[fx.Node, OpInfo]) -> bool:
    """A ``getitem`` picking output *i* of an op node (not of another folded getitem)."""
    if node.op != "call_function" or node.target is not operator.getitem:
        return False
    if len(node.args) != 2 or not isinstance(node.args[1], int):
        return False
    source = node.args[0]
    return isinstance(source, fx.Node) and source in op_of


def _type_string(value: object) -> str | None:
    """A module type as recorded in ``nn_module_stack`` (a class or its name)."""
    if isinstance(value, type):
        return qualified_type_name(value)
    if isinstance(value, str) and value:
        return value
    return None


def _stack_entries(node: fx.Node) -> list[tuple[str, str | None]]:
    """``(qualified module name, type)`` pairs of the node's ``nn_module_stack``."""
    stack = node.meta.get("nn_module_stack")
    if not isinstance(stack, Mapping):
        return []
    entries: list[tuple[str, str | None]] = []
    for value in stack.values():
        if not isinstance(value, tuple) or len(value) < 2:
            continue
        entries.append((str(value[0]), _type_string(value[1])))
    return entries


def _module_types_from_stacks(nodes: Iterable[fx.Node]) -> dict[str, str]:
    """Qualified module name -> class name, from every node's module stack."""
    types: dict[str, str] = {}
    for node in nodes:
        for name, type_name in _stack_entries(node):
            if type_name is not None:
                types.setdefault(name, type_name)
    return types


def _module_stack(
    node: fx.Node,
    root_ctx: ModuleContext,
    contexts_for_path: Callable[[str], tuple[ModuleContext, ...]],
) -> tuple[ModuleContext, ...]:
    """The node's module stack, root first (a ``call_module`` without metadata: its target)."""
    entries = _stack_entries(node)
    if not entries:
        if node.op == "call_module":
            return contexts_for_path(str(node.target))
        return (root_ctx,)
    stack = [root_ctx]
    for name, type_name in entries:
        if name == "":
            continue
        stack.append(ModuleContext(name, type_name))
    return tuple(stack)


def _op_type(node: fx.Node, gm: fx.GraphModule) -> str | None:
    """The torch-level name of a call node (see the module docstring)."""
    torch_fn = node.meta.get("torch_fn")
    if isinstance(torch_fn, tuple) and len(torch_fn) >= 2 and isinstance(torch_fn[1], str):
        return torch_fn[1].rsplit(".", 1)[-1]
    target: Any = node.target
    if node.op == "call_method":
        return str(target)
    if node.op == "call_module":
        try:
            return type(gm.get_submodule(str(target))).__name__
        except AttributeError:
            return None
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target.__name__
    name = getattr(target, "__name__", None)
    return name if isinstance(name, str) else None


def _ancestors(op: OpInfo, synthetic: set[str]) -> list[str]:
    """Names of the modules containing *op*, root first; none for boundary ops."""
    if op.op_name in synthetic:
        return []
    path = op.module_name
    if not path:
        return [""]
    parts = path.split(".")
    return ["", *(".".join(parts[: i + 1]) for i in range(len(parts)))]


def _compute_boundaries(
    ops: list[OpInfo],
    synthetic: set[str],
    modules: dict[str, ModuleInfo],
    nodes: list[fx.Node],
    op_of: Mapping[fx.Node, OpInfo],
    value_of: Mapping[fx.Node, tuple[OpInfo, int]],
) -> None:
    """Fill ``input_ops`` / ``output_ops`` of every module in *modules*.

    A tensor enters a module when an op inside reads it and its producer is outside
    (boundary ops are outside every module); state tensors never count. It leaves when
    an op outside (or the model's output) reads it.
    """
    ancestors = {op: _ancestors(op, synthetic) for op in ops}
    input_keys: dict[str, dict[tuple[str, int], int]] = {name: {} for name in modules}
    root = modules[""]

    # The root's inputs are the model inputs, in order, read or not.
    for node in nodes:
        if node.op == "placeholder":
            op = op_of[node]
            index = len(input_keys[""])
            input_keys[""][(op.op_name, 0)] = index
            root.input_ops[index] = []
            root._input_sources[index] = InputEdge(op, 0)

    for consumer in ops:
        inside = ancestors[consumer]
        if not inside:
            continue
        for position, edge in enumerate(consumer.inputs):
            if edge.op.is_state:
                continue
            producer_inside = set(ancestors[edge.op])
            for name in inside:
                if name in producer_inside or name not in modules:
                    continue
                module = modules[name]
                keys = input_keys[name]
                key = (edge.op.op_name, edge.index)
                if key not in keys:
                    keys[key] = len(keys)
                    module.input_ops[keys[key]] = []
                    module._input_sources[keys[key]] = edge
                module.input_ops[keys[key]].append(BoundaryEdge(consumer, position))

    for producer in ops:
        inside = ancestors[producer]
        if not inside or producer.is_state:
            continue
        for index, users in producer.outputs.items():
            outside_of: set[str] = set()
            for user in users:
                outside_of.update(set(inside) - set(ancestors[user]))
            for name in inside:
                if name == "" or name not in outside_of or name not in modules:
                    continue
                module = modules[name]
                module.output_ops[len(module.output_ops)] = BoundaryEdge(producer, index)

    # The root's outputs are the model's returned tensors, in return order.
    for node in nodes:
        if node.op != "output":
            continue
        returned = _flatten_nodes(node.args)
        for value in returned:
            op, index = value_of[value]
            root.output_ops[len(root.output_ops)] = BoundaryEdge(op, index)


def _flatten_nodes(args: object) -> list[fx.Node]:
    """The nodes in a (nested) FX argument structure, in order, repeats included."""
    found: list[fx.Node] = []

    def collect(node: fx.Node) -> fx.Node:
        found.append(node)
        return node

    fx.node.map_arg(args, collect)  # type: ignore[arg-type]
    return found
