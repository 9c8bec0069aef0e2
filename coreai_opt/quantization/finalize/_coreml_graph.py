"""Graph-mode Core ML finalize: metadata buffers for coremltools, fake-quantized weights
and ``torch.quantize_per_tensor`` activation modules.

- A weight FQ is removed; the weight keeps its name and holds its fake-quantized value
  (what the prepared model computed with), and the module owning it gets the buffers
  ``_COREML_/<param>/compression_type`` (``tensor([3])``: quantization),
  ``quantization_n_bits``, ``quantization_scale`` (one entry per block) and ``zero_point``
  (int8 / uint8), from which coremltools stores n-bit codes.
- Every call of an activation FQ becomes a call of the root submodule
  ``_mil_act_quant_<FQ name>``: ``Sequential(quantize=MILActivationQuantize,
  dequantize=MILActivationDequantize)``.
- The root gets ``_COREML_/metadata_version = tensor(1)``.

The gates (dtypes, per-tensor activations, ZP) run before the model changes.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from coreai_opt.config.spec import CompressionType
from coreai_opt.quantization.finalize._coreml_modules import mil_activation_module, mil_module_name
from coreai_opt.quantization.finalize._errors import node_error
from coreai_opt.quantization.finalize._graph_common import (
    FakeQuantizerCalls,
    compute_dtype_of,
    copy_meta,
)
from coreai_opt.quantization.finalize._weights import WeightExport, export_weight

__all__ = [
    "COREML_METADATA_VERSION",
    "convert_all_coreml",
    "coreml_weight_metadata",
    "register_coreml_weight_metadata",
]

COREML_METADATA_VERSION = 1
"""Value of the root buffer ``_COREML_/metadata_version``."""


def coreml_weight_metadata(
    n_bits: int, scale: torch.Tensor, zero_point: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The ``_COREML_/<param>/<key>`` buffers of one quantized weight, by key."""
    code = CompressionType.QUANTIZATION.to_coreml_code()
    meta = {
        "compression_type": torch.tensor([code]),
        "quantization_n_bits": torch.tensor(n_bits),
        "quantization_scale": scale.clone(),
    }
    if zero_point is not None:
        meta["zero_point"] = zero_point.clone()
    return meta


def register_coreml_weight_metadata(owner: nn.Module, param: str, export: WeightExport) -> None:
    """Register the ``_COREML_/<param>/<key>`` buffers of *export* on *owner*."""
    meta = coreml_weight_metadata(export.n_bits, export.scale, export.zero_point)
    for key, value in meta.items():
        owner.register_buffer(f"_COREML_/{param}/{key}", value)


def _convert_weight(gm: fx.GraphModule, calls: FakeQuantizerCalls) -> None:
    target = calls.weight_target
    weight = operator.attrgetter(target)(gm)
    export = export_weight(calls.fq, weight, target)
    with torch.no_grad():
        weight.copy_(export.dequantize())
    owner_path, _, param = target.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    register_coreml_weight_metadata(owner, param, export)
    for node in calls.nodes:
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)


def _convert_activation(gm: fx.GraphModule, calls: FakeQuantizerCalls) -> None:
    name = mil_module_name(calls.name)
    compute = compute_dtype_of(calls.nodes[0], calls.fq)
    gm.add_submodule(name, mil_activation_module(calls.fq, compute))
    for node in calls.nodes:
        with gm.graph.inserting_before(node):
            new = gm.graph.create_node("call_module", name, (node.args[0],), {}, name=name)
        copy_meta(node, new)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)


def convert_all_coreml(gm: fx.GraphModule, all_calls: list[FakeQuantizerCalls]) -> None:
    """Convert every FQ of *all_calls* and add the root metadata buffer (in place).

    Errors are wrapped in :class:`FinalizeNodeError` naming the FQ node.
    """
    for calls in all_calls:
        try:
            if calls.is_weight:
                _convert_weight(gm, calls)
            else:
                _convert_activation(gm, calls)
        except Exception as err:
            raise node_error(calls.nodes[0].name, err) from err
    gm.register_buffer("_COREML_/metadata_version", torch.tensor(COREML_METADATA_VERSION))
