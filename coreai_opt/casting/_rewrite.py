"""Apply a cast plan to an ``ExportedProgram``: convert inputs, insert casts, retype nodes.

A plan names the placeholders to convert and the nodes to keep at their original dtypes;
every other computing node is converted. Walking the graph in order:

* a converted node gets its dtype arguments mapped (``dtype=torch.float32`` -> float16)
  and, in the float pass, a cast of every float32 tensor operand to float16; its output
  types are recomputed on the program's fake tensors. A factory with no tensor operand and
  ``dtype=None`` (``full(size, 2.0)`` defaults to float32) gets ``dtype`` set explicitly. A
  result still in a source dtype afterwards (an op with a fixed result type) is cast to
  the target dtype right after the node;
* a kept node gets every operand cast back to the dtype it had in the original program,
  so it computes exactly as before: these are the casts at its boundary;
* ``getitem`` and size / metadata nodes follow their operand (``_assert_tensor_metadata``
  asserts the operand's new dtype);
* values written back into a converted buffer or input (buffer mutations) are cast to that
  input's new dtype; user outputs keep the dtype their producer now computes in.

Casts are ``aten._to_copy.default(x, dtype=...)`` nodes (core ATen), shared by all consumers
that need the same value in the same dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import TensorArgument
from torch.fx import Node
from torch.fx.node import map_arg

from coreai_opt.casting._node_facts import is_mutating, mutated_chains, node_mode, tensor_dtype
from coreai_opt.casting._op_tables import is_getitem
from coreai_opt.casting._program import (
    PlaceholderInfo,
    fake_mode_of,
    mutated_inputs,
    placeholders,
    replace_state_tensor,
    state_tensor,
    update_example_inputs,
)
from coreai_opt.casting._schema_args import dtype_argument_unset, rewrite_dtypes, set_dtype_argument

_CAST = torch.ops.aten._to_copy.default
_COPIED_META = ("nn_module_stack", "stack_trace", "source_fn_stack", "torch_fn", "from_node")


@dataclass
class CastPlan:
    """What one pass changes; built by a planner, applied by :func:`apply_plan`."""

    function: str
    source_dtypes: frozenset[torch.dtype]
    target_dtype: torch.dtype
    narrowed: set[Node] = field(default_factory=set)
    """Placeholders whose dtype becomes ``target_dtype`` (their state tensors too)."""
    kept: set[Node] = field(default_factory=set)
    """``call_function`` nodes computed at their original operand dtypes."""
    cast_converted_inputs: bool = True
    """Cast source-dtype operands of converted nodes to the target (float pass); the integer
    pass leaves operands as their producers make them (index-like ones stay wide)."""
    unsupported: list[str] = field(default_factory=list)
    """Filled by :func:`apply_plan`: nodes that could not compute in the target dtype."""


def _set_val(node: Node, val: Any) -> None:
    """Store a new fake value and keep ``tensor_meta`` (if present) in step with its dtype."""
    node.meta["val"] = val
    meta = node.meta.get("tensor_meta")
    if meta is None:
        return
    if isinstance(val, torch.Tensor) and hasattr(meta, "_replace"):
        node.meta["tensor_meta"] = meta._replace(dtype=val.dtype)
    else:
        # A tuple of TensorMetadata or anything else: dropped rather than left stale.
        del node.meta["tensor_meta"]


class _Rewriter:
    """Carries the state of one :func:`apply_plan` call."""

    def __init__(self, ep: ExportedProgram, plan: CastPlan) -> None:
        """Snapshot the graph's original values; casts are made lazily and shared."""
        self.ep = ep
        self.plan = plan
        self.graph = ep.graph
        self.fake_mode = fake_mode_of(ep)
        self.original = {n: n.meta.get("val") for n in self.graph.nodes}
        self.casts: dict[tuple[Node, torch.dtype], Node] = {}
        self.mapping = dict.fromkeys(plan.source_dtypes, plan.target_dtype)

    # -- helpers ---------------------------------------------------------------------------

    def _fake_cast(self, val: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The fake value of ``val`` cast to ``dtype`` (symbolic sizes kept)."""
        with self.fake_mode:
            return _CAST(val, dtype=dtype)

    def _cast(self, value: Node, dtype: torch.dtype, anchor: Node, before: bool) -> Node:
        """A cast of ``value`` to ``dtype``, created next to ``anchor`` or reused."""
        key = (value, dtype)
        if key in self.casts:
            return self.casts[key]
        context = self.graph.inserting_before if before else self.graph.inserting_after
        with context(anchor):
            cast = self.graph.call_function(_CAST, (value,), {"dtype": dtype})
        for name in _COPIED_META:
            if name in anchor.meta:
                cast.meta[name] = anchor.meta[name]
        source_meta = value.meta.get("tensor_meta")
        if source_meta is not None:
            cast.meta["tensor_meta"] = source_meta
        _set_val(cast, self._fake_cast(value.meta["val"], dtype))
        self.original[cast] = self.original.get(value, value.meta["val"])
        self.casts[key] = cast
        return cast

    def _run(self, node: Node, args: tuple[Any, ...], kwargs: dict[str, Any], wanted: dict) -> Any:
        """The node's output on fake operands, those in ``wanted`` cast to their dtype."""

        def fake(arg: Node) -> Any:
            val = arg.meta.get("val")
            return self._fake_cast(val, wanted[arg]) if arg in wanted else val

        fake_args = map_arg(args, fake)
        fake_kwargs = map_arg(kwargs, fake)
        with self.fake_mode:
            return node.target(*fake_args, **fake_kwargs)  # type: ignore[operator]

    # -- node kinds ------------------------------------------------------------------------

    def convert(self, node: Node) -> None:
        """Compute ``node`` in the target dtype (see the module docstring)."""
        plan = self.plan
        wanted: dict[Node, torch.dtype] = {}
        if plan.cast_converted_inputs:
            for arg in node.all_input_nodes:
                if tensor_dtype(arg.meta.get("val")) in plan.source_dtypes:
                    wanted[arg] = plan.target_dtype
        args = rewrite_dtypes(node.args, self.mapping)
        kwargs = rewrite_dtypes(dict(node.kwargs), self.mapping)
        try:
            out = self._run(node, args, kwargs, wanted)
            no_tensor_operand = not any(
                isinstance(a.meta.get("val"), torch.Tensor) for a in node.all_input_nodes
            )
            if (
                no_tensor_operand
                and tensor_dtype(out) in plan.source_dtypes
                and dtype_argument_unset(node)
            ):
                args, kwargs = set_dtype_argument(args, kwargs, node, plan.target_dtype)
                out = self._run(node, args, kwargs, wanted)
        except Exception as error:  # the op refuses the target dtype: keep it as it was
            plan.unsupported.append(f"{node.name} ({node.target}: {type(error).__name__})")
            self.keep(node)
            return
        node.args = map_arg(
            args, lambda a: self._cast(a, wanted[a], node, True) if a in wanted else a
        )
        node.kwargs = map_arg(
            kwargs, lambda a: self._cast(a, wanted[a], node, True) if a in wanted else a
        )
        _set_val(node, out)
        if tensor_dtype(out) in plan.source_dtypes and out.dtype != plan.target_dtype:
            # Fixed result type (e.g. an integer sum accumulates in int64): cast right after
            # so every consumer sees the converted value.
            users = list(node.users)
            cast = self._cast(node, plan.target_dtype, node, False)
            for user in users:
                user.replace_input_with(node, cast)

    def keep(self, node: Node) -> None:
        """Cast every operand back to its original dtype: ``node`` computes as before."""
        replacements: dict[Node, Node] = {}
        for arg in node.all_input_nodes:
            old = tensor_dtype(self.original.get(arg))
            new = tensor_dtype(arg.meta.get("val"))
            if old is not None and new is not None and old != new:
                replacements[arg] = self._cast(arg, old, node, True)
        for arg, cast in replacements.items():
            node.replace_input_with(arg, cast)

    def follow(self, node: Node) -> None:
        """Retype a getitem / metadata node from its (possibly retyped) operand."""
        if is_getitem(node.target):
            parent, index = node.args
            parent_val = parent.meta.get("val")  # type: ignore[union-attr]
            if isinstance(parent_val, (tuple, list)):
                _set_val(node, parent_val[index])  # type: ignore[index]
            return
        if node.target is torch.ops.aten._assert_tensor_metadata.default:
            tensor = node.args[0]
            dtype = tensor_dtype(tensor.meta.get("val"))  # type: ignore[union-attr]
            if dtype is None:
                return
            if len(node.args) > 3 and node.args[3] is not None:
                node.args = (*node.args[:3], dtype, *node.args[4:])
            elif node.kwargs.get("dtype") is not None:
                node.kwargs = {**node.kwargs, "dtype": dtype}

    def output(self, node: Node) -> None:
        """Cast values written back into retyped inputs to those inputs' new dtype."""
        writes = mutated_inputs(self.ep)
        by_name = {n.name: n for n in self.graph.nodes if n.op == "placeholder"}
        outputs = list(node.args[0])  # type: ignore[arg-type]
        for index, value in enumerate(outputs):
            if not isinstance(value, Node) or index not in writes:
                continue
            target = by_name.get(writes[index])
            want = tensor_dtype(target.meta.get("val")) if target is not None else None
            have = tensor_dtype(value.meta.get("val"))
            if want is not None and have is not None and want != have:
                outputs[index] = self._cast(value, want, node, True)
        node.args = (type(node.args[0])(outputs),)  # type: ignore[call-arg]

    def _with_tied(self, infos: dict[Node, PlaceholderInfo]) -> set[Node]:
        """The planned placeholders plus those sharing a state tensor with one of them.

        Tied weights are one tensor under several names (often one placeholder per name,
        some unused); converting it converts all of them, and their graph types follow.
        """
        narrowed = set(self.plan.narrowed)
        tensors = {id(t) for ph in narrowed if (t := state_tensor(self.ep, infos[ph])) is not None}
        for ph, info in infos.items():
            tensor = state_tensor(self.ep, info)
            if tensor is not None and id(tensor) in tensors:
                narrowed.add(ph)
        return narrowed

    # -- driver ----------------------------------------------------------------------------

    def run(self) -> None:
        """Apply the plan to the whole program."""
        plan = self.plan
        infos = placeholders(self.ep)
        example_dtypes: dict[str, torch.dtype] = {}
        for ph in self._with_tied(infos):
            info = infos[ph]
            old = ph.meta["val"]
            with self.fake_mode:
                new = _CAST(old, dtype=plan.target_dtype).detach()
            new.requires_grad_(old.requires_grad)
            _set_val(ph, new)
            tensor = state_tensor(self.ep, info)
            if tensor is not None and tensor.dtype != plan.target_dtype:
                replace_state_tensor(self.ep, info, plan.target_dtype)
            elif not info.is_state:
                example_dtypes[ph.name] = plan.target_dtype
        for node in list(self.graph.nodes):
            if node.op == "output":
                self.output(node)
            elif node.op != "call_function":
                continue
            elif node_mode(node) == "follow":
                self.follow(node)
            elif node in plan.kept or node_mode(node) == "opaque":
                self.keep(node)
            else:
                self.convert(node)
            if node.op == "call_function" and is_mutating(node):
                # Casts made before this write hold stale copies of what it writes into.
                written = {n for chain in mutated_chains(node) for n in chain}
                self.casts = {k: v for k, v in self.casts.items() if k[0] not in written}
        self._sync_output_names()
        self.graph.lint()
        self.ep.graph_module.recompile()
        update_example_inputs(self.ep, example_dtypes)

    def _sync_output_names(self) -> None:
        """Point the signature at the output node's arguments again.

        A cast placed in front of an output renames that output; the graph signature and
        the module call graph name outputs by node name, so both follow.
        """
        output = next(n for n in reversed(self.graph.nodes) if n.op == "output")
        renamed: dict[str, str] = {}
        specs = self.ep.graph_signature.output_specs
        for spec, value in zip(specs, output.args[0], strict=True):
            renamed_here = (
                isinstance(spec.arg, TensorArgument)
                and isinstance(value, Node)
                and spec.arg.name != value.name
            )
            if renamed_here:
                renamed[spec.arg.name] = value.name
                spec.arg = TensorArgument(name=value.name)
        if not renamed:
            return
        for entry in self.ep.module_call_graph:
            signature = entry.signature
            if signature is None:
                continue
            signature.outputs = [
                TensorArgument(name=renamed[arg.name])
                if isinstance(arg, TensorArgument) and arg.name in renamed
                else arg
                for arg in signature.outputs
            ]


def apply_plan(ep: ExportedProgram, plan: CastPlan) -> None:
    """Rewrite ``ep`` in place as ``plan`` says (see the module docstring)."""
    _Rewriter(ep, plan).run()
