"""Helpers of the graph-mode tests: prepare a model and find nodes and FQ calls."""

from __future__ import annotations

import torch
from torch import fx, nn

from coreai_opt.quantization import Quantizer, QuantizerConfig
from coreai_opt.quantization._graph.insert import is_fq_node


def prepare(model: nn.Module, config: QuantizerConfig, *inputs: torch.Tensor) -> fx.GraphModule:
    """Prepare *model* (in eval mode) on *inputs* in graph mode and run it once."""
    gm = Quantizer(model.eval(), config).prepare(tuple(inputs))
    assert isinstance(gm, fx.GraphModule)
    gm(*inputs)
    return gm


def fq_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """Every FQ call of *gm*, in graph order."""
    return [n for n in gm.graph.nodes if is_fq_node(n)]


def node(gm: fx.GraphModule, name: str) -> fx.Node:
    """The node of *gm* named *name*."""
    for n in gm.graph.nodes:
        if n.name == name:
            return n
    raise KeyError(name)


def read_values(gm: fx.GraphModule) -> set[str]:
    """Names of the values the FQs read (a weight FQ reads its ``get_attr``)."""
    return {n.args[0].name for n in fq_nodes(gm)}  # type: ignore[union-attr]


def fqs_reading(gm: fx.GraphModule, value: str) -> list[fx.Node]:
    """The FQ calls that read the value named *value*."""
    return [n for n in fq_nodes(gm) if n.args[0].name == value]  # type: ignore[union-attr]
