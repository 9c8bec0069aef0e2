"""Plan of the float32 -> float16 pass: which nodes stay in float32 and which inputs convert.

Rules, in order:

1. Computing nodes matched by ``ignored_ops`` stay in float32.
2. Nodes that define data-dependent sizes (``nonzero``, ``item``) and higher-order ops
   (``cond``, ``while_loop``: their subgraphs are not retyped) keep their dtypes. A cast
   copies, so an in-place op (training-IR programs have ``relu_``, ``copy_``,
   ``index_put_``) never gets its written operand cast: one writing into a placeholder
   keeps float32 together with that placeholder, the view-like ops on the way and every
   op reading them; one writing into an intermediate computes in that intermediate's
   dtype (``ignored_ops`` does not apply to it). After ``run_decompositions`` writes into
   buffers are buffer-mutation outputs instead, and a float16 buffer gets float16 values.
3. A node that produces float32 and takes a number argument that float16 cannot hold
   (``masked_fill(x, mask, -1e9)``, ``full(size, 1e5)``, ``clamp(x, max=7e4)``) stays in
   float32; float16 would turn the number into inf (or refuse it).
4. A parameter, buffer or constant with a finite value that float16 cannot hold
   (``|x| >= 65520``, i.e. beyond ±65504 after rounding) stays float32; view-like ops on it
   (``permute``, ``view``, ...) stay float32 with it, and the first op computing with it
   runs in float32.
5. A view-like op whose every consumer stays float32 stays float32 too (so a weight feeding
   ``permute -> addmm`` of an ignored ``addmm`` is never rounded to float16).
6. Every other computing node runs in float16.
7. Every float32 user input becomes float16. A float32 parameter, buffer or constant
   becomes float16 when some node running in float16 consumes it; one consumed only by
   float32 nodes, or by no node, keeps float32.

Rules 3 and 4 are reported in one warning per call, naming each tensor and node.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from coreai_opt.casting._ignored_ops import IgnoredOpsMatcher
from coreai_opt.casting._node_facts import (
    computing_users,
    getitem_producer,
    has_unbacked_symbols,
    is_mutating,
    is_view_like,
    mutated_chains,
    node_mode,
    output_dtypes,
    tensor_dtype,
)
from coreai_opt.casting._program import placeholders, state_tensor
from coreai_opt.casting._rewrite import CastPlan
from coreai_opt.casting._schema_args import overflows_float16, value_scalars

FLOAT32 = torch.float32
FLOAT16 = torch.float16


def _overflow_amax(tensor: torch.Tensor) -> float | None:
    """Largest finite ``|x|`` of a float32 tensor if float16 overflows on it, else None."""
    data = tensor.detach()
    if data.numel() == 0 or data.device.type == "meta":
        return None
    finite = torch.isfinite(data)
    overflow = finite & torch.isinf(data.to(FLOAT16))
    if not bool(overflow.any()):
        return None
    return float(data[finite].abs().max())


def _stays(node: Node, plan: CastPlan) -> bool:
    """Whether a computing node keeps its original dtypes (kept, or a higher-order op)."""
    return node in plan.kept or node_mode(node) == "opaque"


def plan_float16(
    ep: ExportedProgram, ignored: IgnoredOpsMatcher, function: str
) -> tuple[CastPlan, list[str]]:
    """The float32 -> float16 plan for ``ep`` and the overflow findings to warn about."""
    plan = CastPlan(function, frozenset({FLOAT32}), FLOAT16, cast_converted_inputs=True)
    findings: list[str] = []
    nodes = list(ep.graph.nodes)

    # Rules 1-3: nodes kept for what they are.
    pinned: set[Node] = set()
    writes_into_intermediates: list[Node] = []
    for node in nodes:
        if node.op != "call_function" or node_mode(node) == "follow":
            continue
        if is_mutating(node):
            chains = mutated_chains(node)
            if any(chain[-1].op == "placeholder" for chain in chains):
                plan.kept.add(node)
                for chain in chains:
                    pinned.update(chain)
            else:
                writes_into_intermediates.append(node)
            continue
        if ignored(node) or has_unbacked_symbols(node):
            plan.kept.add(node)
            continue
        if FLOAT32 not in output_dtypes(node.meta.get("val")):
            continue
        for name, value in value_scalars(node):
            if overflows_float16(float(value)):
                plan.kept.add(node)
                findings.append(f"node {node.name!r} ({node.target}) argument {name}={value!r}")
                break

    # Rule 4: state whose values float16 cannot hold, and the view-like chain on it.
    infos = placeholders(ep)
    for node, info in infos.items():
        if tensor_dtype(node.meta.get("val")) != FLOAT32:
            continue
        tensor = state_tensor(ep, info)
        amax = None if tensor is None else _overflow_amax(tensor)
        if amax is not None:
            pinned.add(node)
            findings.append(f"{info.describe()} (max |x| = {amax:.6g})")
    for node in nodes:
        if is_view_like(node) and node.all_input_nodes and node.all_input_nodes[0] in pinned:
            pinned.add(node)
    for value in pinned:
        if value.op == "call_function":
            plan.kept.add(value)
        for user in computing_users(value):
            plan.kept.add(user)

    # Rule 5: view-like ops that only feed float32 computations.
    for node in reversed(nodes):
        if is_view_like(node) and node not in plan.kept:
            users = computing_users(node)
            if users and all(_stays(u, plan) for u in users):
                plan.kept.add(node)

    # Rule 2, in-place ops on intermediates: compute in the dtype of what they write into.
    for node in writes_into_intermediates:
        chains = mutated_chains(node)
        kept = any(getitem_producer(chain[-1]) in plan.kept for chain in chains)
        for member in [node, *(n for chain in chains for n in chain[:-1])]:
            if kept:
                plan.kept.add(member)
            else:
                plan.kept.discard(member)

    # Rule 7: placeholders. User inputs convert unconditionally so that the caller can
    # tell the new input dtypes without reading the graph.
    for node, info in infos.items():
        if node in pinned or tensor_dtype(node.meta.get("val")) != FLOAT32:
            continue
        if not info.is_state or any(not _stays(u, plan) for u in computing_users(node)):
            plan.narrowed.add(node)
    return plan, findings
