"""What the graph passes need to know about the aten ops of an exported graph.

``torch.export`` (training IR) keeps the torch-level ops: ``aten.conv2d``, ``aten.linear``,
``aten.add.Tensor``, ... An op's *type* is the torch-level name the config's
``op_type_config`` uses (``node.meta["torch_fn"]``), falling back to the aten name.
"""

from __future__ import annotations

import torch
from torch import fx

aten = torch.ops.aten

# Weighted ops: (aten overload packet, index of the weight among the node's tensor inputs).
WEIGHTED: dict[str, tuple[object, ...]] = {
    "conv": (aten.conv1d, aten.conv2d, aten.conv3d),
    "conv_transpose": (aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d),
    "linear": (aten.linear,),
    "embedding": (aten.embedding,),
}
BATCH_NORM = (aten.batch_norm, aten._native_batch_norm_legit_no_training)
ACTIVATIONS = (
    aten.relu,
    aten.relu_,
    aten.relu6,
    aten.leaky_relu,
    aten.leaky_relu_,
    aten.silu,
    aten.silu_,
    aten.elu,
    aten.elu_,
    aten.celu,
    aten.celu_,
    aten.selu,
    aten.selu_,
    aten.mish,
    aten.mish_,
    aten.hardtanh,
    aten.hardtanh_,
    aten.hardswish,
    aten.hardswish_,
    aten.hardsigmoid,
    aten.hardsigmoid_,
    aten.gelu,
    aten.sigmoid,
    aten.log_sigmoid,
    aten.tanh,
)
NARY: dict[str, tuple[object, ...]] = {
    "matmul": (aten.matmul, aten.bmm, aten.mm),
    "add": (aten.add, aten.add_),
    "mul": (aten.mul, aten.mul_),
    "sub": (aten.sub, aten.sub_),
    "einsum": (aten.einsum,),
}
# Ops whose output shares the FQ of their (first) input.
SHARED: dict[str, tuple[object, ...]] = {
    "flatten": (aten.flatten,),
    "maxpool": (aten.max_pool1d, aten.max_pool2d, aten.max_pool3d),
    "avgpool": (
        aten.avg_pool1d,
        aten.avg_pool2d,
        aten.avg_pool3d,
        aten.adaptive_avg_pool1d,
        aten.adaptive_avg_pool2d,
        aten.adaptive_avg_pool3d,
        aten.mean,
    ),
    "concat": (aten.cat, aten.concat),
}
# Ops that move values without computing new ones: an input already fake-quantized stays
# fake-quantized at their output, so no second FQ is needed for the same spec.
VALUE_PRESERVING = (
    aten.clone,
    aten.dropout,
    aten.feature_dropout,
    aten.permute,
    aten.slice,
    aten.t,
    aten.transpose,
    aten.contiguous,
    aten.expand,
    aten.reshape,
    aten.select,
    aten.squeeze,
    aten.unsqueeze,
    aten.view,
    aten.flatten,
    aten.max_pool1d,
    aten.max_pool2d,
    aten.max_pool3d,
)
# Grid-keeping ops after which a per-channel / per-block axis no longer means the same thing.
AXIS_CHANGING = (
    aten.permute,
    aten.t,
    aten.transpose,
    aten.flatten,
    aten.reshape,
    aten.view,
    aten.unsqueeze,
    aten.squeeze,
    aten.max_pool1d,
    aten.max_pool2d,
    aten.max_pool3d,
)
# Shared-FQ ops whose output is not on the input's grid (averages): the shared FQ runs again.
AVERAGING = SHARED["avgpool"]


def packet(node: fx.Node) -> object | None:
    """The aten overload packet of a call_function node (None for anything else)."""
    if node.op != "call_function":
        return None
    target = node.target
    return getattr(target, "overloadpacket", target)


def is_one_of(node: fx.Node, packets: tuple[object, ...]) -> bool:
    """True when *node* calls one of the overload packets *packets*."""
    p = packet(node)
    return p is not None and any(p is q for q in packets)


def op_type(node: fx.Node) -> str | None:
    """The torch-level op name a config's ``op_type_config`` matches (``"conv2d"``, ...)."""
    if node.op != "call_function":
        return None
    torch_fn = node.meta.get("torch_fn")
    if torch_fn is not None:
        return str(torch_fn[1]).rsplit(".", 1)[-1]
    p = packet(node)
    name = getattr(p, "__name__", None) or str(p)
    return name.rsplit(".", 1)[-1]


def tensor_inputs(node: fx.Node) -> list[fx.Node]:
    """The node's tensor inputs in FX ``all_input_nodes`` order (the spec index order)."""
    return list(node.all_input_nodes)


def is_float_value(node: fx.Node) -> bool:
    """True when *node* produces one floating-point tensor (what an FQ can take)."""
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and val.dtype.is_floating_point


def weighted_kind(node: fx.Node) -> str | None:
    """ "conv", "conv_transpose", "linear" or "embedding" for a weighted op, else None."""
    for kind, packets in WEIGHTED.items():
        if is_one_of(node, packets):
            return kind
    return None


def weight_input_index(node: fx.Node) -> int:
    """Position of the weight among a weighted op's tensor inputs."""
    return 0 if weighted_kind(node) == "embedding" else 1
