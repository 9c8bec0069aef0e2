"""Plan of the int32/int64 -> int16 pass: which integer values are data and may narrow.

A value here is an int32 or int64 tensor. It stays *wide* (keeps its dtype) when:

1. it is an operand of an op outside the integer data ops (:data:`INTEGER_DATA_OPS`):
   embedding / index / gather / scatter indices, ``one_hot`` classes, ``item()``, custom
   and unknown ops. These are index-like. Everything it is computed from through integer
   data ops stays wide too (``ids + offset`` feeding an embedding keeps both in int64);
2. it is produced by an op outside the data ops (``arange``, ``argmax``, ``topk`` indices,
   ``nonzero``...), by an ignored op, or by a node that defines data-dependent sizes;
3. it is a parameter, buffer or constant with a value outside [-32768, 32767], a buffer the
   program writes to (its future values are unknown), or the result of a data op with a
   number argument outside that range (``x + 40000``);
4. it is computed by a data op from a wide value (positions derived from ``arange``).

Every other integer value is data and becomes int16: the data ops producing it run with
their dtype arguments mapped to int16 (``full(..., dtype=torch.int64)``,
``_to_copy(x, dtype=torch.int32)``), and integer placeholders consumed by them become int16
(user inputs included: the caller then passes int16). Ops that keep their dtypes get their
narrowed operands cast back at their boundary. Placeholders with no consumer stay as they
are. Rule 3 findings are reported in one warning per call.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx import Node

from coreai_opt.casting._ignored_ops import IgnoredOpsMatcher
from coreai_opt.casting._node_facts import (
    computing_users,
    getitem_producer,
    has_unbacked_symbols,
    node_mode,
    output_dtypes,
    tensor_dtype,
)
from coreai_opt.casting._op_tables import INTEGER_DATA_OPS, packet_of
from coreai_opt.casting._program import placeholders, state_tensor
from coreai_opt.casting._rewrite import CastPlan
from coreai_opt.casting._schema_args import fits_int16, value_scalars

WIDE_INTS = frozenset({torch.int32, torch.int64})
INT16 = torch.int16


def _is_int(node: Node) -> bool:
    """Whether ``node``'s value (or one of its results) is an int32/int64 tensor."""
    return any(d in WIDE_INTS for d in output_dtypes(node.meta.get("val")))


def _is_data_op(node: Node) -> bool:
    """Whether ``node``'s op is one of the integer data ops."""
    return packet_of(node.target) in INTEGER_DATA_OPS


def _out_of_range(tensor: torch.Tensor) -> tuple[int, int] | None:
    """``(min, max)`` of an integer tensor if int16 cannot hold them, else None."""
    if tensor.numel() == 0 or tensor.device.type == "meta":
        return None
    low, high = int(tensor.min()), int(tensor.max())
    return None if fits_int16(low) and fits_int16(high) else (low, high)


def plan_int16(
    ep: ExportedProgram, ignored: IgnoredOpsMatcher, function: str
) -> tuple[CastPlan, list[str]]:
    """The int32/int64 -> int16 plan for ``ep`` and the range findings to warn about."""
    plan = CastPlan(function, WIDE_INTS, INT16, cast_converted_inputs=False)
    findings: list[str] = []
    nodes = list(ep.graph.nodes)
    wide: set[Node] = set()
    index_operands: list[Node] = []

    # Rules 1-3 for nodes.
    for node in nodes:
        if node.op != "call_function" or node_mode(node) == "follow":
            continue
        # Ask the matcher first, for every node: it records which listed ops matched.
        is_ignored = ignored(node)
        if (
            is_ignored
            or node_mode(node) == "opaque"
            or not _is_data_op(node)
            or has_unbacked_symbols(node)
        ):
            plan.kept.add(node)
            if _is_int(node):
                wide.add(node)
            if not _is_data_op(node) or node_mode(node) == "opaque":
                index_operands.extend(
                    getitem_producer(a) for a in node.all_input_nodes if _is_int(a)
                )
            continue
        if not _is_int(node):
            continue
        for name, value in value_scalars(node):
            if not fits_int16(value):
                wide.add(node)
                findings.append(f"node {node.name!r} ({node.target}) argument {name}={value!r}")
                break

    # Rule 3 for placeholders.
    infos = placeholders(ep)
    written = {
        spec.target
        for spec in ep.graph_signature.output_specs
        if spec.kind in (OutputKind.BUFFER_MUTATION, OutputKind.USER_INPUT_MUTATION)
    }
    for node, info in infos.items():
        if tensor_dtype(node.meta.get("val")) not in WIDE_INTS:
            continue
        written_to = info.target in written or (
            info.kind == InputKind.USER_INPUT and node.name in written
        )
        if written_to:
            wide.add(node)
            continue
        tensor = state_tensor(ep, info)
        extremes = None if tensor is None else _out_of_range(tensor)
        if extremes is not None:
            wide.add(node)
            findings.append(f"{info.describe()} (values in [{extremes[0]}, {extremes[1]}])")

    # Rule 1, backwards: whatever an index is computed from through data ops.
    visited: set[Node] = set()
    while index_operands:
        node = index_operands.pop()
        if node in visited:
            continue
        visited.add(node)
        wide.add(node)
        if node.op == "call_function" and node_mode(node) == "compute" and _is_data_op(node):
            index_operands.extend(getitem_producer(a) for a in node.all_input_nodes if _is_int(a))

    # Rule 4: forward from every wide value.
    for node in nodes:
        if node.op != "call_function" or node_mode(node) != "compute" or node in wide:
            continue
        if _is_int(node) and any(
            getitem_producer(a) in wide for a in node.all_input_nodes if _is_int(a)
        ):
            wide.add(node)
    plan.kept.update(n for n in wide if n.op == "call_function")

    # Integer placeholders consumed by a data op that narrows.
    for node in infos:
        if node in wide or tensor_dtype(node.meta.get("val")) not in WIDE_INTS:
            continue
        if any(u not in plan.kept for u in computing_users(node)):
            plan.narrowed.add(node)
    return plan, findings
