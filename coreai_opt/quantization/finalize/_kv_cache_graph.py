"""Graph-mode Core AI finalize of a KV-cache fake-quantizer (``kv_cache_quant_configs``).

The cache holds codes: the dequantize that would follow the FQ moves after the cache op,
so the op moves codes instead of floats. For the cache op ``C`` fed by the FQ call ``F``:

- every floating-point tensor input of ``C`` gets the FQ's qparams: a value computed in
  the graph gets a ``quantize`` node; cache *storage* (a graph input or a module buffer)
  is stored in the quantized dtype instead: a ``placeholder`` gets the quantized dtype
  (the caller passes codes, see ``gm.meta["coreai_opt_quantized_inputs"]``), a buffer is
  quantized in place once;
- ``dequantize(C)`` replaces every use of ``C``; other readers of converted storage and
  other users of ``F`` get their own ``dequantize`` / quantize → dequantize.

Only data-movement ops (:data:`CACHE_OPS`) can run on codes; any other op is refused. The
reference moves the dequantize the same way but leaves the written value or the buffer in
float (the finalized graph then fails at run time), finds storage only among top-level
arguments, and refuses cat whose cache sits in its tensor list: this version runs.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from coreai_opt.quantization._graph import op_kinds
from coreai_opt.quantization.finalize._coreai_graph import ActivationEmitter
from coreai_opt.quantization.finalize._errors import node_error
from coreai_opt.quantization.finalize._graph_common import copy_meta, is_fake_quantizer_call

__all__ = [
    "CACHE_OPS",
    "QUANTIZED_INPUTS_KEY",
    "check_cache_ops",
    "convert_kv_cache",
    "kv_cache_fake_quantizers",
]

CACHE_OPS: frozenset[str] = frozenset(
    {
        "cat",
        "concat",
        "concatenate",
        "stack",
        "index_copy",
        "index_copy_",
        "index_put",
        "index_put_",
        "slice_scatter",
        "select_scatter",
        "scatter",
        "scatter_",
        "copy_",
    }
)
"""Op types that only move values, so they give the same result on codes."""

QUANTIZED_INPUTS_KEY = "coreai_opt_quantized_inputs"
"""``gm.meta`` key: graph input name -> the dtype finalize gave it (KV-cache codes)."""


def kv_cache_fake_quantizers(gm: fx.GraphModule, kv_cache_quant_configs: object) -> dict:
    """FQ call node -> cache op node for every slot ``kv_cache_quant_configs`` names.

    Matches op types as prepare does (``op_kinds.op_type``); the slot counts the op's
    tensor inputs.
    """
    found: dict[fx.Node, fx.Node] = {}
    if not kv_cache_quant_configs:
        return found
    for op_type, kv_config in dict(kv_cache_quant_configs).items():
        index, _ = kv_config.input_entry()
        for node in gm.graph.nodes:
            if op_kinds.op_type(node) != op_type:
                continue
            inputs = op_kinds.tensor_inputs(node)
            if index < len(inputs) and is_fake_quantizer_call(gm, inputs[index]):
                found[inputs[index]] = node
    return found


def _quantize_buffer(gm: fx.GraphModule, target: str, emitter: ActivationEmitter) -> None:
    """Store the buffer (or parameter) at *target* as codes, once."""
    owner_path, _, attr = target.rpartition(".")
    owner: nn.Module = gm.get_submodule(owner_path) if owner_path else gm
    tensor = operator.attrgetter(target)(gm)
    if not tensor.is_floating_point() or tensor.dtype == emitter.export.storage_dtype:
        return
    codes = emitter.export.quantize_tensor(tensor)
    if attr in owner._parameters:
        del owner._parameters[attr]  # codes take no gradient: the cache becomes a buffer
    owner.register_buffer(attr, codes)


def _quantize_placeholder(gm: fx.GraphModule, node: fx.Node, dtype: torch.dtype) -> None:
    """Record that graph input *node* now takes codes of *dtype*."""
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        node.meta["val"] = torch.empty(val.shape, dtype=dtype, device="meta")
    gm.meta.setdefault(QUANTIZED_INPUTS_KEY, {})[node.name] = dtype


def check_cache_ops(kv_cache: dict[fx.Node, fx.Node]) -> None:
    """Refuse, before finalize changes anything, a KV-cache slot whose cache op is not a
    data-movement op (:data:`CACHE_OPS`): the dequantize moves after that op, which then
    runs on codes.

    Raises:
        FinalizeNodeValueError: naming the FQ call, the cache op, its type and the
            supported types.
    """
    for fq_node, cache_op in kv_cache.items():
        op_type = op_kinds.op_type(cache_op)
        if op_type not in CACHE_OPS:
            cause = ValueError(
                f"KV-cache export moves the dequantize after the cache op, which then runs "
                f"on codes; op {cache_op.name!r} (type {op_type!r}) is not a data-movement "
                f"op. Supported cache op types: {sorted(CACHE_OPS)}"
            )
            raise node_error(fq_node.name, cause) from cause


def convert_kv_cache(
    gm: fx.GraphModule, emitter: ActivationEmitter, fq_node: fx.Node, cache_op: fx.Node
) -> None:
    """Convert the KV-cache FQ call *fq_node* whose output *cache_op* reads (see module doc);
    :func:`check_cache_ops` has accepted *cache_op*."""
    value = fq_node.args[0]
    assert isinstance(value, fx.Node)
    storage_dtype = emitter.export.storage_dtype
    storage: list[fx.Node] = []
    for inp in op_kinds.tensor_inputs(cache_op):
        source = value if inp is fq_node else inp
        if not op_kinds.is_float_value(source):
            continue
        if source.op == "get_attr":
            _quantize_buffer(gm, str(source.target), emitter)
            storage.append(source)
        elif source.op == "placeholder":
            _quantize_placeholder(gm, source, storage_dtype)
            storage.append(source)
        else:
            cache_op.replace_input_with(inp, emitter.quantize(cache_op, source))
            continue
        if inp is fq_node:
            cache_op.replace_input_with(fq_node, source)
    # Everything else that reads the converted storage reads its codes now.
    for node in storage:
        for user in [u for u in node.users if u is not cache_op]:
            user.replace_input_with(node, emitter.dequantize(user, node))
    after = cache_op.next
    dq = emitter.dequantize(after, cache_op)
    copy_meta(cache_op, dq)
    cache_op.replace_all_uses_with(dq, delete_user_cb=lambda user: user is not dq)
    if fq_node.users:
        emitter.replace(fq_node)
    else:
        gm.graph.erase_node(fq_node)
