"""Graph-mode finalize to ``ExportBackend.CoreAI`` / ``CoreML``: the pipeline.

1. Refuse, before anything changes: a graph without fake-quantizers (``ValueError``),
   dynamic fake-quantizers (``NotImplementedError`` naming them, unless a Core AI
   activation export handler covers them), the Core ML gates, KV-cache quantization with
   Core ML (``NotImplementedError``), and (Core AI) what the converters cannot express:
   FP4 weights not in blocks of 32 along the last dimension, FP4 or per-block
   activations without a handler (wrapped in ``FinalizeNodeError``, which is also a
   ``ValueError`` then).
2. Fold conv-bn pairs (the *fold* callback), so weight FQs read the folded weights.
3. Convert every fake-quantizer (``_coreai_graph`` / ``_coreml_graph``).
4. Core AI: dense weights the graph no longer reads become zero-size tensors; with
   ``mmap_dir`` each weight's buffers are written to ``<weight target with . -> _>
   .safetensors`` and mapped back (``_mmap``).
5. Drop the fake-quantizer modules and dead nodes, recompile, re-enable train / eval.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable

from torch import fx

from coreai_opt._export_backend import ExportBackend
from coreai_opt.quantization.finalize._activations import check_activation_exportable
from coreai_opt.quantization.finalize._checks import (
    check_coreml_activation,
    check_coreml_weight,
    check_has_fake_quantizers,
    refuse_dynamic,
)
from coreai_opt.quantization.finalize._errors import node_error
from coreai_opt.quantization.finalize._export_ops import select_export_ops
from coreai_opt.quantization.finalize._graph_common import (
    FakeQuantizerCalls,
    fake_quantizer_calls,
    finish_rewrite,
    free_unread_tensors,
)
from coreai_opt.quantization.finalize._handlers import activation_handler
from coreai_opt.quantization.finalize._mmap import check_mmap_dir, map_graph_weights, open_mmap_dir
from coreai_opt.quantization.finalize._weights import check_weight_exportable
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase

__all__ = ["finalize_graph"]


def _handled(fq: FakeQuantizeImplBase) -> bool:
    """True when a graph activation export handler takes over *fq*."""
    return activation_handler(fq, "graph") is not None


def _weight_shape(gm: fx.GraphModule, name: str) -> tuple[int, ...] | None:
    """The shape of the parameter *name* (a weight FQ's ``tensor_fqn``), when it exists:
    a weight FQ of a conv-bn pair reads the folded product until the fold."""
    try:
        return tuple(operator.attrgetter(name)(gm).shape)
    except AttributeError:
        return None


def _check_coreai(gm: fx.GraphModule, all_calls: list[FakeQuantizerCalls]) -> None:
    for calls in all_calls:
        try:
            if calls.is_weight:
                shape = calls.input_shape() or _weight_shape(gm, calls.fq.tensor_fqn)
                if shape is not None:  # else export_weight checks it after the fold
                    check_weight_exportable(calls.fq, shape, calls.fq.tensor_fqn)
            elif not _handled(calls.fq):
                check_activation_exportable(calls.fq, calls.name)
        except Exception as err:
            raise node_error(calls.nodes[0].name, err) from err


def _check_coreml(all_calls: list[FakeQuantizerCalls], kv_cache: dict) -> None:
    if kv_cache:
        names = sorted({node.name for node in kv_cache})
        raise NotImplementedError(
            f"finalize(backend='coreml') does not support KV-cache quantization "
            f"(kv_cache_quant_configs; fake-quantizers {names}); finalize with "
            f"backend=ExportBackend.CoreAI or ExportBackend._TORCH"
        )
    for calls in all_calls:
        if calls.is_weight:
            check_coreml_weight(calls.fq, calls.name)
        else:
            check_coreml_activation(calls.fq, calls.name)


def finalize_graph(
    gm: fx.GraphModule,
    backend: ExportBackend,
    *,
    kv_cache_quant_configs: object = None,
    fold: Callable[[fx.GraphModule], object] | None = None,
    mmap_dir: str | os.PathLike[str] | None = None,
) -> fx.GraphModule:
    """Finalize the prepared *gm* for *backend* (CoreAI or CoreML), in place; returns it.

    Args:
        gm: a GraphModule returned by graph-mode ``prepare``.
        backend: ``ExportBackend.CoreAI`` or ``ExportBackend.CoreML``.
        kv_cache_quant_configs: the quantizer config's KV-cache entries (their FQs get
            the KV-cache treatment under Core AI and are refused by Core ML).
        fold: called on *gm* after the checks and before the conversion (conv-bn folding).
        mmap_dir: (Core AI) a new or empty directory: each quantized weight is written to
            ``<weight target with . -> _>.safetensors`` there and mapped back.

    Raises:
        ValueError: no fake-quantizers; ``backend`` is not CoreAI / CoreML; Core ML: a
            formulation other than ZP (``CoreMLExportError``, a ``ValueError``, for dtypes
            and activation granularities); ``mmap_dir`` with Core ML.
        NotImplementedError: dynamic fake-quantizers; Core ML with KV-cache quantization.
        NotADirectoryError / FileExistsError: ``mmap_dir`` is a file / not empty.
        FinalizeNodeError: converting one fake-quantizer failed (the message names it).
    """
    from coreai_opt.quantization.finalize._coreai_graph import convert_all
    from coreai_opt.quantization.finalize._coreml_graph import convert_all_coreml
    from coreai_opt.quantization.finalize._kv_cache_graph import (
        check_cache_ops,
        kv_cache_fake_quantizers,
    )

    if backend not in (ExportBackend.CoreAI, ExportBackend.CoreML):
        raise ValueError(f"finalize_graph converts for backend CoreAI or CoreML, got {backend!r}")
    if mmap_dir is not None and backend is not ExportBackend.CoreAI:
        raise ValueError(
            f"mmap_dir is only supported with backend=ExportBackend.CoreAI, got "
            f"backend={backend.value!r}"
        )
    all_calls = fake_quantizer_calls(gm)
    check_has_fake_quantizers(all_calls, backend)
    fqs = {calls.name: calls.fq for calls in all_calls}
    kv_cache = kv_cache_fake_quantizers(gm, kv_cache_quant_configs)
    if backend is ExportBackend.CoreAI:
        refuse_dynamic(fqs, backend, covered=_handled)
        _check_coreai(gm, all_calls)
        check_cache_ops(kv_cache)
        ops = select_export_ops()
        if mmap_dir is not None:
            check_mmap_dir(mmap_dir)
    else:
        refuse_dynamic(fqs, backend)
        _check_coreml(all_calls, kv_cache)
    if fold is not None:
        fold(gm)
        all_calls = fake_quantizer_calls(gm)
        kv_cache = kv_cache_fake_quantizers(gm, kv_cache_quant_configs)
    if backend is ExportBackend.CoreAI:
        dense = convert_all(gm, all_calls, ops, kv_cache)
    else:
        convert_all_coreml(gm, all_calls)
        dense = []
    finish_rewrite(gm, [calls.name for calls in all_calls])
    free_unread_tensors(gm, dense)
    if mmap_dir is not None:
        map_graph_weights(gm, ops, open_mmap_dir(mmap_dir))
    return gm
