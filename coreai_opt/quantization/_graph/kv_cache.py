"""KV-cache quantization in graph mode: ``QuantizerConfig.kv_cache_quant_configs``.

Each entry ``op_type -> KVCacheQuantConfig`` names one input position of an op type (the
torch-level name that :func:`op_kinds.op_type` gives, e.g. ``"index_copy_"``) and the spec
for it. :func:`apply_kv_cache_specs` runs after every other annotation and sets that input
slot of every matching ``call_function`` node, replacing whatever the module configs
decided (a decline included). The other slots of those nodes keep their annotations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import fx

from coreai_opt.quantization._graph import op_kinds as k

if TYPE_CHECKING:
    from coreai_opt.quantization._graph.annotate import Annotations
    from coreai_opt.quantization.config import QuantizerConfig

__all__ = ["KV_CACHE_PRIORITY", "apply_kv_cache_specs"]

KV_CACHE_PRIORITY: tuple[int, ...] = (-2, -2, 0, 0)
"""Priority recorded on KV-cache slots: above module boundary specs ``(-1, -1, 0, 0)``
and every pattern annotation (whose first two fields are >= 0)."""


def apply_kv_cache_specs(ann: Annotations, gm: fx.GraphModule, config: QuantizerConfig) -> None:
    """Annotate the input slots that ``config.kv_cache_quant_configs`` names (in place).

    For each ``op_type -> KVCacheQuantConfig`` entry, every ``call_function`` node of *gm*
    whose op type is ``op_type`` gets ``ann.inputs[(node, index)]`` set to the entry's
    spec, with :data:`KV_CACHE_PRIORITY` and the node's module scope as owner. The index
    counts the node's tensor inputs (:func:`op_kinds.tensor_inputs`).

    Raises:
        ValueError: an op type occurs nowhere in the graph (the message lists the op
            types that do), an index is not below a node's number of tensor inputs, or
            it points at a tensor that is not floating-point (an integer index tensor,
            say), which no fake-quantizer can take.
    """
    from coreai_opt.quantization._graph.annotate import SlotSpec, node_scope

    kv_configs = config.kv_cache_quant_configs
    if not kv_configs:
        return
    by_type: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = k.op_type(node)
        if name is not None:
            by_type.setdefault(name, []).append(node)
    for op_type, kv_config in kv_configs.items():
        index, spec = kv_config.input_entry()
        nodes = by_type.get(op_type)
        if not nodes:
            raise ValueError(
                f"kv_cache_quant_configs[{op_type!r}]: the exported graph has no op of type "
                f"{op_type!r}; op types in the graph: {sorted(by_type)} (names are the "
                f"torch-level op names, e.g. 'index_copy_' for the in-place Tensor.index_copy_)"
            )
        for node in nodes:
            inputs = k.tensor_inputs(node)
            if index >= len(inputs):
                raise ValueError(
                    f"kv_cache_quant_configs[{op_type!r}]: op_input_spec index {index} is out "
                    f"of range for node {node.name!r}, which has {len(inputs)} tensor "
                    f"input(s) {[n.name for n in inputs]}; allowed indices: "
                    f"{list(range(len(inputs)))}"
                )
            value = inputs[index].meta.get("val")
            if isinstance(value, torch.Tensor) and not value.dtype.is_floating_point:
                raise ValueError(
                    f"kv_cache_quant_configs[{op_type!r}]: op_input_spec index {index} of node "
                    f"{node.name!r} is {inputs[index].name!r}, a {value.dtype} tensor; only "
                    f"floating-point inputs can be fake-quantized (floating-point inputs: "
                    f"{_float_indices(inputs)})"
                )
            scope = node_scope(node, None)
            ann.inputs[(node, index)] = SlotSpec(
                spec, KV_CACHE_PRIORITY, (scope.path, scope.module_type)
            )


def _float_indices(inputs: list[fx.Node]) -> list[int]:
    """Positions of the floating-point tensors among *inputs* (per their ``val`` meta)."""
    return [
        i
        for i, n in enumerate(inputs)
        if isinstance(n.meta.get("val"), torch.Tensor) and n.meta["val"].dtype.is_floating_point
    ]
