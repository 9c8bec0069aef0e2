"""Graph-mode Core AI finalize: fake-quantizers become Core AI ops on stored codes.

- A weight FQ becomes ``blockwise_shift_scale(q, scale, zero_point, minval, input_dtype
  [, output_dtype=...])`` on root buffers ``<weight target with . -> _>_quantized`` /
  ``_scale`` / ``_zero_point`` / ``_minval`` (only those that exist), node
  ``constexpr_blockwise_shift_scale``; ``output_dtype`` is passed only for E8M0 scales.
- An activation FQ call becomes ``quantize(x, scale, dtype, zero_point=, minval=, axis=)``
  → ``dequantize(q, scale, output_dtype=<compute dtype>, zero_point=, minval=,
  input_dtype=, axis=)`` on buffers ``<FQ name>_scale`` / ``_zero_point`` / ``_minval``
  (keywords omitted when None, ``axis`` only per channel), nodes ``quantize`` /
  ``dequantize``. An activation export handler registered for the FQ's granularity
  replaces the call instead.
- A KV-cache FQ (``kv_cache_quant_configs``): see ``_kv_cache_graph``.

Node names are the reference's (``constexpr_blockwise_shift_scale``, ``quantize``,
``dequantize``, numbered by FX) whichever library provides the ops (``_export_ops``).
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from coreai_opt.quantization.finalize._activations import (
    ActivationExport,
    export_activation_qparams,
)
from coreai_opt.quantization.finalize._errors import node_error
from coreai_opt.quantization.finalize._export_ops import ExportOps, fp4_storage
from coreai_opt.quantization.finalize._graph_common import (
    FakeQuantizerCalls,
    add_buffer,
    add_optional_buffer,
    compute_dtype_of,
    copy_meta,
    get_attr_before,
    rank_of,
)
from coreai_opt.quantization.finalize._handlers import (
    GraphActivationExportHandler,
    activation_handler,
)
from coreai_opt.quantization.finalize._weights import export_weight

__all__ = ["ActivationEmitter", "convert_activation", "convert_weight"]

FP4 = torch.float4_e2m1fn_x2


def convert_weight(gm: fx.GraphModule, calls: FakeQuantizerCalls, ops: ExportOps) -> torch.Tensor:
    """Replace the weight FQ *calls* by a ``blockwise_shift_scale`` node on new buffers.

    Returns the dense weight tensor (freed by the caller once nothing reads it).
    """
    target = calls.weight_target
    weight = operator.attrgetter(target)(gm)
    export = export_weight(calls.fq, weight, target)
    prefix = target.replace(".", "_")
    quantized = fp4_storage(export.quantized, ops) if export.dtype == FP4 else export.quantized
    names = [
        add_buffer(gm, f"{prefix}_quantized", quantized),
        add_buffer(gm, f"{prefix}_scale", export.scale),
        add_optional_buffer(gm, f"{prefix}_zero_point", export.zero_point),
        add_optional_buffer(gm, f"{prefix}_minval", export.minval),
    ]
    for node in calls.nodes:
        q, scale, zero_point, minval = get_attr_before(gm, node, names)
        kwargs = {} if export.output_dtype is None else {"output_dtype": export.output_dtype}
        with gm.graph.inserting_before(node):
            new = gm.graph.create_node(
                "call_function",
                ops.blockwise_shift_scale,
                (q, scale, zero_point, minval, export.input_dtype),
                kwargs,
                name="constexpr_blockwise_shift_scale",
            )
        copy_meta(node, new)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    return weight


class ActivationEmitter:
    """Emits quantize / dequantize nodes for one activation FQ (its buffers registered once)."""

    def __init__(self, gm: fx.GraphModule, ops: ExportOps, name: str, export: ActivationExport):
        """Register *export*'s qparams as root buffers ``<name>_scale`` / ``_zero_point`` /
        ``_minval``."""
        self.gm, self.ops, self.export = gm, ops, export
        self.scale = add_buffer(gm, f"{name}_scale", export.scale)
        self.zero_point = add_optional_buffer(gm, f"{name}_zero_point", export.zero_point)
        self.minval = add_optional_buffer(gm, f"{name}_minval", export.minval)

    def qparams(self, before: fx.Node) -> tuple[fx.Node, dict[str, fx.Node | None]]:
        """``get_attr`` nodes of the scale and the offsets, inserted before *before*: the
        scale node and ``{"zero_point": ..., "minval": ...}`` (None where absent)."""
        scale, zero_point, minval = get_attr_before(
            self.gm, before, [self.scale, self.zero_point, self.minval]
        )
        return scale, {"zero_point": zero_point, "minval": minval}

    def quantize(
        self, before: fx.Node, x: fx.Node, qparams: tuple[fx.Node, dict] | None = None
    ) -> fx.Node:
        """A ``quantize`` node of *x* inserted before *before* (reading *qparams*, else new
        ``get_attr`` nodes)."""
        scale, offsets = qparams or self.qparams(before)
        with self.gm.graph.inserting_before(before):
            return self.gm.graph.create_node(
                "call_function",
                self.ops.quantize,
                (x, scale, self.export.dtype),
                self.export.quantize_kwargs(offsets),
                name="quantize",
            )

    def dequantize(
        self, before: fx.Node, q: fx.Node, qparams: tuple[fx.Node, dict] | None = None
    ) -> fx.Node:
        """A ``dequantize`` node of the codes *q* inserted before *before* (reading
        *qparams*, else new ``get_attr`` nodes)."""
        scale, offsets = qparams or self.qparams(before)
        with self.gm.graph.inserting_before(before):
            return self.gm.graph.create_node(
                "call_function",
                self.ops.dequantize,
                (q, scale),
                self.export.dequantize_kwargs(offsets),
                name="dequantize",
            )

    def replace(self, node: fx.Node) -> fx.Node:
        """Replace the FQ call *node* by quantize → dequantize of its input (one set of
        ``get_attr`` nodes for both); returns the dequantize node."""
        x = node.args[0]
        assert isinstance(x, fx.Node)
        qparams = self.qparams(node)
        q = self.quantize(node, x, qparams)
        dq = self.dequantize(node, q, qparams)
        copy_meta(node, dq)
        node.replace_all_uses_with(dq)
        self.gm.graph.erase_node(node)
        return dq


def activation_emitter(
    gm: fx.GraphModule, calls: FakeQuantizerCalls, ops: ExportOps
) -> ActivationEmitter:
    """The emitter of the activation FQ *calls* (qparams for its first call's tensor)."""
    first = calls.nodes[0]
    export = export_activation_qparams(
        calls.fq, compute_dtype_of(first, calls.fq), rank_of(first), calls.name
    )
    return ActivationEmitter(gm, ops, calls.name, export)


def convert_activation(
    gm: fx.GraphModule,
    calls: FakeQuantizerCalls,
    ops: ExportOps,
    handler: GraphActivationExportHandler | None,
) -> None:
    """Replace every call of the activation FQ *calls*: through *handler*, the export
    handler registered for its granularity (``activation_handler``), when there is one."""
    if handler is not None:
        for node in calls.nodes:
            handler(gm, node, calls.fq)
            if getattr(node, "_erased", False):
                continue
            if node.users:
                raise RuntimeError(
                    f"the graph activation export handler {handler!r} for "
                    f"{type(calls.fq.granularity).__name__} left uses of node {node.name!r}; "
                    f"a handler must replace the node it is given"
                )
            gm.graph.erase_node(node)
        return
    emitter = activation_emitter(gm, calls, ops)
    for node in calls.nodes:
        emitter.replace(node)


def convert_all(
    gm: fx.GraphModule,
    all_calls: list[FakeQuantizerCalls],
    ops: ExportOps,
    kv_cache_ops: dict[fx.Node, fx.Node],
) -> list[torch.Tensor]:
    """Convert every FQ of *all_calls*; returns the dense weights they read.

    *kv_cache_ops* maps the FQ call nodes that feed a KV-cache slot to the cache op.
    Errors are wrapped in :class:`FinalizeNodeError` naming the FQ node.
    """
    from coreai_opt.quantization.finalize._kv_cache_graph import convert_kv_cache

    dense: list[torch.Tensor] = []
    for calls in all_calls:
        try:
            handler = activation_handler(calls.fq, "graph")
            if calls.is_weight:
                dense.append(convert_weight(gm, calls, ops))
            elif handler is None and any(node in kv_cache_ops for node in calls.nodes):
                # (a registered handler owns its granularity, KV-cache slots included)
                emitter = activation_emitter(gm, calls, ops)
                for node in calls.nodes:
                    if node in kv_cache_ops:
                        convert_kv_cache(gm, emitter, node, kv_cache_ops[node])
                    else:
                        emitter.replace(node)
            else:
                convert_activation(gm, calls, ops, handler)  # type: ignore[arg-type]
        except Exception as err:
            raise node_error(calls.nodes[0].name, err) from err
    return dense
