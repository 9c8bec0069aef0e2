"""What the passes need to know about one graph node: its role, dtypes and mutations."""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import Node
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

from coreai_opt.casting._op_tables import METADATA_OPS, VIEW_LIKE_OPS, is_getitem, packet_of


def node_mode(node: Node) -> str:
    """``"follow"`` (getitem, size/metadata ops, Python arithmetic on sizes), ``"opaque"``
    (higher-order ops: their subgraphs are not retyped) or ``"compute"``."""
    target = node.target
    if is_getitem(target) or packet_of(target) in METADATA_OPS:
        return "follow"
    if isinstance(target, torch._ops.HigherOrderOperator):
        return "opaque"
    if isinstance(target, torch._ops.OpOverload):
        return "compute"
    return "follow"


def computing_users(node: Node) -> list[Node]:
    """Consumers that compute: no getitem / metadata nodes, not the graph output."""
    return [u for u in node.users if u.op == "call_function" and node_mode(u) != "follow"]


def is_view_like(node: Node) -> bool:
    """Whether ``node`` only moves the data of its first operand (see ``VIEW_LIKE_OPS``)."""
    return node.op == "call_function" and packet_of(node.target) in VIEW_LIKE_OPS


def has_unbacked_symbols(node: Node) -> bool:
    """Whether the node defines data-dependent sizes (``nonzero``, ``item``): re-running it
    on fake tensors would mint new symbols that the rest of the graph does not use."""
    val = node.meta.get("val")
    try:
        return bool(free_unbacked_symbols(val))
    except Exception:  # an unusual meta value: treat as data dependent, the safe side
        return True


def tensor_dtype(val: Any) -> torch.dtype | None:
    """The dtype of a tensor meta value, None for anything else."""
    return val.dtype if isinstance(val, torch.Tensor) else None


def output_dtypes(val: Any) -> list[torch.dtype]:
    """Dtypes of every tensor in a node's meta value (a tensor, or a tuple/list of them)."""
    if isinstance(val, torch.Tensor):
        return [val.dtype]
    if isinstance(val, (tuple, list)):
        return [v.dtype for v in val if isinstance(v, torch.Tensor)]
    return []


def is_mutating(node: Node) -> bool:
    """Whether the node's op writes into one of its operands (``index_put_``, ``copy_``)."""
    schema = getattr(node.target, "_schema", None)
    return bool(schema is not None and schema.is_mutable)


def mutated_chains(node: Node) -> list[list[Node]]:
    """For each operand a mutating op writes into: the chain from that operand back through
    view-like ops to the tensor it aliases (``[slice, placeholder]`` for
    ``cache[:, 0].copy_(k)``). A cast anywhere on such a chain would copy the tensor and
    lose the write, so the whole chain must keep its dtype."""
    schema = getattr(node.target, "_schema", None)
    if schema is None or not schema.is_mutable:
        return []
    chains = []
    for index, argument in enumerate(schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        if index < len(node.args) and not argument.kwarg_only:
            value = node.args[index]
        else:
            value = node.kwargs.get(argument.name)
        chain: list[Node] = []
        while isinstance(value, Node):
            chain.append(value)
            if not is_view_like(value) or not value.args:
                break
            value = value.args[0]
        if chain:
            chains.append(chain)
    return chains


def getitem_producer(node: Node) -> Node:
    """The node computing ``node``'s value: the multi-output op behind a getitem (whose
    dtype decision covers it); ``node`` itself otherwise."""
    while node.op == "call_function" and is_getitem(node.target):
        node = node.args[0]  # type: ignore[assignment]
    return node
