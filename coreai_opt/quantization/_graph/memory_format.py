"""Which fake-quantizers take channels_last activations when the model runs compiled.

On CPU, Inductor stores every convolution's input and output channels_last, and carries that
layout through the elementwise ops, batch norms and pools around it, but only up to the
graph's last convolution. A fake-quantizer is an opaque op to Inductor: fed by a batch
norm + ReLU after the last convolution, its input is written in the default (contiguous)
layout, and the max-pool after it then runs as a scalar loop instead of fused with the batch
norm. This pass marks the fake-quantizers that sit on a convolution's input or output
(through layout-following ops); under ``torch.compile`` on CPU, such a fake-quantizer asks
for its 4-D input channels_last (:meth:`FakeQuantize._forward_traceable`), which Inductor
folds into the kernel that produces it.

A marked fake-quantizer's output is channels_last inside the compiled graph, and so is
every 4-D tensor computed from it (a convolution of a channels_last input is channels_last),
so the pass leaves out any from which a 4-D tensor reaches the graph's output (its strides
are visible to the caller) or a ``view`` (which needs the traced strides).
Uncompiled runs, ``torch.export`` and other devices never read the mark.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import fx

from coreai_opt.quantization._graph.conv_bn import ConvBnRescale
from coreai_opt.quantization._graph.insert import is_fq_node
from coreai_opt.quantization._graph.op_kinds import (
    ACTIVATIONS,
    BATCH_NORM,
    NARY,
    SHARED,
    WEIGHTED,
    is_one_of,
)
from coreai_opt.quantization._graph.train_eval import TrainEvalBatchNorm, TrainEvalDropout
from coreai_opt.quantization.spec.fake_quantize import FakeQuantize

__all__ = ["mark_channels_last_fake_quantizers"]

aten = torch.ops.aten

_CONVS = WEIGHTED["conv"] + WEIGHTED["conv_transpose"]
# Ops whose output Inductor lays out as their 4-D input: elementwise ops (the conv-bn QAT
# form's rescale when traced), batch norm, pools, dropout, copies.
_LAYOUT_FOLLOWING = (
    ACTIVATIONS
    + BATCH_NORM
    + NARY["add"]
    + NARY["mul"]
    + NARY["sub"]
    + SHARED["maxpool"]
    + (aten.avg_pool2d, aten.adaptive_avg_pool2d)
    + (aten.addcmul, aten.div, aten.dropout, aten.feature_dropout, aten.clone)
)
# Ops that need the traced strides of their input.
_STRIDE_BOUND = (aten.view, aten._unsafe_view, aten.as_strided, aten.view_as, aten.unflatten)


def _follows_layout(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        # The conv-bn QAT form's rescale is aten's product and sum under torch.compile.
        layout_following = TrainEvalBatchNorm | TrainEvalDropout | ConvBnRescale
        return isinstance(module, layout_following) or is_fq_node(node)
    return is_one_of(node, _LAYOUT_FOLLOWING)


def _is_4d(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "get_attr":  # a weight: read the module's own tensor
        value = operator.attrgetter(str(node.target))(gm)
    else:
        value = node.meta.get("val")
    return isinstance(value, torch.Tensor) and value.dim() == 4


def _known_not_4d(node: fx.Node) -> bool:
    # Nodes without a traced value (inserted ones: fake-quantizers, the conv-bn QAT form)
    # count as 4-D, so the escape walk goes on through them.
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and val.dim() != 4


def _reachable(
    start: Iterable[fx.Node], follow: Callable[[fx.Node], Iterable[fx.Node]]
) -> Iterator[fx.Node]:
    """Each node reachable from *start*, once, going on from every node to follow(node)."""
    seen: set[fx.Node] = set()
    todo = list(start)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        yield n
        todo.extend(follow(n))


def _conv_upstream(x: fx.Node, gm: fx.GraphModule) -> bool:
    """True when *x* is a convolution's output, possibly through layout-following ops."""

    def inputs(n: fx.Node) -> list[fx.Node]:
        if is_one_of(n, _CONVS) or not _follows_layout(n, gm):
            return []
        return [i for i in n.all_input_nodes if _is_4d(i, gm)]

    return any(is_one_of(n, _CONVS) for n in _reachable([x], inputs))


def _feeds_conv(call: fx.Node, gm: fx.GraphModule) -> bool:
    """True when *call*'s output is a convolution's input, possibly through
    layout-following ops."""

    def users(n: fx.Node) -> list[fx.Node]:
        return list(n.users) if _follows_layout(n, gm) else []

    return any(is_one_of(n, _CONVS) for n in _reachable(call.users, users))


def _layout_escapes(call: fx.Node) -> bool:
    """True when a tensor laid out by *call* can reach the graph's output or a ``view``.

    A channels_last tensor keeps that layout through every op with a 4-D output (a
    convolution of it is channels_last too), so the walk follows all of them (and every
    node whose rank it does not know).
    """

    def users(n: fx.Node) -> list[fx.Node]:
        return [] if _known_not_4d(n) else list(n.users)

    return any(
        n.op == "output" or is_one_of(n, _STRIDE_BOUND) for n in _reachable(call.users, users)
    )


def _prefers_channels_last(call: fx.Node, gm: fx.GraphModule) -> bool:
    x = call.args[0] if call.args else None
    if not (isinstance(x, fx.Node) and _is_4d(x, gm)):
        return False
    if _layout_escapes(call):
        return False
    return _feeds_conv(call, gm) or _conv_upstream(x, gm)


def mark_channels_last_fake_quantizers(gm: fx.GraphModule, activations: Iterable[str]) -> list[str]:
    """Sets ``_compile_channels_last`` on each default activation fake-quantizer of *gm*
    (named in *activations*): True where every call of it sits on a convolution's 4-D input
    or output (see the module docstring). Weight fake-quantizers are left alone: Inductor
    lays out convolution weights itself. Returns the names marked True."""
    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if is_fq_node(node):
            calls.setdefault(str(node.target), []).append(node)
    marked = []
    for name in activations:
        fq = gm.get_submodule(name) if name in calls else None
        if not isinstance(fq, FakeQuantize):
            continue
        fq._compile_channels_last = all(_prefers_channels_last(n, gm) for n in calls[name])
        if fq._compile_channels_last:
            marked.append(name)
    return marked
