"""Finalize: fake-quantizers → what Core AI and Core ML export.

Public:

- the activation export handler registries (behaviour §12):
  :func:`register_graph_activation_export_handler`,
  :func:`register_eager_activation_export_handler` (looked up by exact granularity type,
  :func:`get_activation_export_handler`; :func:`unregister_activation_export_handler`);
- what a handler (or an exporter) builds on: :func:`export_activation_qparams` →
  :class:`ActivationExport` (an activation FQ's qparams for quantize / dequantize) and
  :func:`export_weight` → :class:`WeightExport` (a weight FQ + dense weight in the storage
  layout of ``blockwise_shift_scale``); :func:`select_export_ops` → :class:`ExportOps` (the
  op library finalize emits).

``Quantizer.finalize`` uses the rest (the per-mode halves of each backend).
"""

from coreai_opt.quantization.finalize._activations import (
    ActivationExport,
    export_activation_qparams,
)
from coreai_opt.quantization.finalize._errors import FinalizeNodeError
from coreai_opt.quantization.finalize._export_ops import ExportOps, select_export_ops
from coreai_opt.quantization.finalize._handlers import (
    EagerActivationExportHandler,
    GraphActivationExportHandler,
    get_activation_export_handler,
    register_eager_activation_export_handler,
    register_graph_activation_export_handler,
    unregister_activation_export_handler,
)
from coreai_opt.quantization.finalize._weights import WeightExport, export_weight

__all__ = [
    "ActivationExport",
    "EagerActivationExportHandler",
    "ExportOps",
    "FinalizeNodeError",
    "GraphActivationExportHandler",
    "WeightExport",
    "export_activation_qparams",
    "export_weight",
    "get_activation_export_handler",
    "register_eager_activation_export_handler",
    "register_graph_activation_export_handler",
    "select_export_ops",
    "unregister_activation_export_handler",
]
