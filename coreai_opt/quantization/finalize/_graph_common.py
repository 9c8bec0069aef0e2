"""What the graph-mode backends share: finding fake-quantizer calls, their tensors, new
buffers and nodes, and the clean-up after a rewrite.

A fake-quantizer is a root submodule called by ``call_module`` nodes (normally one; a
shared activation FQ is called once per tensor it quantizes). A weight FQ reads a
``get_attr`` node; every other FQ quantizes an activation.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import fx, nn

from coreai_opt.config.spec.factory import CompressionTargetTensor
from coreai_opt.quantization.finalize._activations import observed_compute_dtype
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase

__all__ = [
    "FakeQuantizerCalls",
    "add_buffer",
    "add_optional_buffer",
    "compute_dtype_of",
    "copy_meta",
    "fake_quantizer_calls",
    "finish_rewrite",
    "free_unread_tensors",
    "get_attr_before",
    "is_fake_quantizer_call",
    "rank_of",
    "zero_size_like",
]


@dataclass
class FakeQuantizerCalls:
    """One fake-quantizer module of the graph and the nodes that call it."""

    name: str
    """The module's attribute name on the root (``activation_post_process_<N>``)."""
    fq: FakeQuantizeImplBase
    nodes: list[fx.Node] = field(default_factory=list)

    @property
    def is_weight(self) -> bool:
        """True for a weight FQ (quantization target WEIGHT)."""
        return getattr(self.fq, "quantization_target", None) is CompressionTargetTensor.WEIGHT

    @property
    def weight_target(self) -> str:
        """The dotted name of the tensor a weight FQ reads (its ``get_attr`` input).

        Raises:
            ValueError: the FQ reads something else (before the conv-bn fold, a weight FQ
                reads the folded product).
        """
        source = self.nodes[0].args[0]
        if not (isinstance(source, fx.Node) and source.op == "get_attr"):
            raise ValueError(
                f"weight fake-quantizer {self.name!r} reads {source!r}, not a model tensor "
                f"(get_attr); only weights read directly can be exported"
            )
        return str(source.target)

    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of the tensor the first call quantizes, when known."""
        source = self.nodes[0].args[0]
        val = source.meta.get("val") if isinstance(source, fx.Node) else None
        return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def is_fake_quantizer_call(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True when *node* calls a fake-quantizer module of *gm*.

    Tests the module's class, which finalize needs to convert it, rather than the
    ``activation_post_process_`` name prefix that ``_graph.insert.is_fq_node`` tests.
    """
    return node.op == "call_module" and isinstance(
        gm.get_submodule(str(node.target)), FakeQuantizeImplBase
    )


def fake_quantizer_calls(gm: fx.GraphModule) -> list[FakeQuantizerCalls]:
    """The fake-quantizer modules that *gm*'s graph calls, in order of their first call."""
    found: dict[str, FakeQuantizerCalls] = {}
    for node in gm.graph.nodes:
        if not is_fake_quantizer_call(gm, node):
            continue
        name = str(node.target)
        fq = cast(FakeQuantizeImplBase, gm.get_submodule(name))  # is_fake_quantizer_call checked
        calls = found.setdefault(name, FakeQuantizerCalls(name, fq))
        calls.nodes.append(node)
    return list(found.values())


def compute_dtype_of(node: fx.Node, fq: FakeQuantizeImplBase) -> torch.dtype:
    """The dtype of the tensor the FQ call *node* quantizes (its input's ``val``; else the
    dtype the FQ observed; else float32)."""
    source = node.args[0] if node.args else None
    val = source.meta.get("val") if isinstance(source, fx.Node) else None
    if isinstance(val, torch.Tensor) and val.dtype.is_floating_point:
        return val.dtype
    return observed_compute_dtype(fq)


def rank_of(node: fx.Node) -> int | None:
    """The rank of the tensor the FQ call *node* quantizes, when its ``val`` is known."""
    source = node.args[0] if node.args else None
    val = source.meta.get("val") if isinstance(source, fx.Node) else None
    return val.dim() if isinstance(val, torch.Tensor) else None


def copy_meta(src: fx.Node, dst: fx.Node) -> None:
    """Give the replacement node *dst* the ``val`` and ``nn_module_stack`` of *src*."""
    dst.meta.update({k: v for k, v in src.meta.items() if k in ("val", "nn_module_stack")})


def add_buffer(gm: fx.GraphModule, name: str, tensor: torch.Tensor) -> str:
    """Register *tensor* as buffer *name* on the root (``name_<k>`` when taken); returns
    the name used."""
    unique, k = name, 0
    while hasattr(gm, unique):
        k += 1
        unique = f"{name}_{k}"
    gm.register_buffer(unique, tensor)
    return unique


def add_optional_buffer(gm: fx.GraphModule, name: str, tensor: torch.Tensor | None) -> str | None:
    """:func:`add_buffer` for a tensor that may be absent (None registers nothing)."""
    return None if tensor is None else add_buffer(gm, name, tensor)


def get_attr_before(gm: fx.GraphModule, node: fx.Node, targets: Iterable[str | None]) -> list:
    """``get_attr`` nodes for *targets* inserted before *node* (None stays None)."""
    out: list[Any] = []
    with gm.graph.inserting_before(node):
        for target in targets:
            out.append(None if target is None else gm.graph.get_attr(target))
    return out


def finish_rewrite(gm: fx.GraphModule, removed_modules: Iterable[str]) -> None:
    """Drop the converted FQ modules and dead nodes, check and recompile *gm*, and give it
    back ``nn.Module``'s own ``train`` / ``eval`` (the exported module replaces them with
    methods that refuse)."""
    gm.graph.eliminate_dead_code()
    for name in removed_modules:
        if hasattr(gm, name) and not any(
            n.op == "call_module" and n.target == name for n in gm.graph.nodes
        ):
            delattr(gm, name)
    gm.graph.lint()
    gm.recompile()
    for name in ("train", "eval"):
        gm.__dict__.pop(name, None)


def zero_size_like(
    tensor: torch.Tensor, is_param: bool, empties: dict[int, torch.Tensor]
) -> torch.Tensor:
    """A zero-size tensor of *tensor*'s dtype and device (an ``nn.Parameter`` with its
    ``requires_grad`` when *is_param*) to free it with; *empties* (by ``id`` of the freed
    tensor) makes every name of a tied tensor share one placeholder."""
    empty = empties.get(id(tensor))
    if empty is None:
        data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
        empty = nn.Parameter(data, requires_grad=tensor.requires_grad) if is_param else data
        empties[id(tensor)] = empty
    return empty


def _read_tensor_ids(gm: fx.GraphModule) -> set[int]:
    ids = set()
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            try:
                value = operator.attrgetter(str(node.target))(gm)
            except AttributeError:
                continue
            if isinstance(value, torch.Tensor):
                ids.add(id(value))
    return ids


def free_unread_tensors(gm: fx.GraphModule, tensors: Iterable[torch.Tensor]) -> list[str]:
    """Replace each of *tensors* that no ``get_attr`` node of *gm* reads any more by a
    zero-size tensor of the same dtype (a parameter stays a parameter), under every name
    it has (tied weights). Returns the names replaced.

    Finalized graphs read the quantized form of a weight, so its dense copy is only
    memory: freeing it keeps the model's attribute names (and ``state_dict`` keys).
    """
    read = _read_tensor_ids(gm)
    doomed = {id(t): t for t in tensors if id(t) not in read}
    if not doomed:
        return []
    replaced: list[str] = []
    holders: list[tuple[nn.Module, str, torch.Tensor, bool]] = []
    for module_name, module in gm.named_modules(remove_duplicate=False):
        for attr, param in list(module._parameters.items()):
            if param is not None and id(param) in doomed:
                holders.append((module, attr, param, True))
                replaced.append(f"{module_name}.{attr}" if module_name else attr)
        for attr, buf in list(module._buffers.items()):
            if buf is not None and id(buf) in doomed:
                holders.append((module, attr, buf, False))
                replaced.append(f"{module_name}.{attr}" if module_name else attr)
    empties: dict[int, torch.Tensor] = {}
    for module, attr, tensor, is_param in holders:
        empty = zero_size_like(tensor, is_param, empties)
        if is_param:
            module._parameters[attr] = empty
        else:
            module._buffers[attr] = empty
    return sorted(set(replaced))
