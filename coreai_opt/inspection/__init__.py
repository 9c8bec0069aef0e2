"""Inspect a model under the names quantization configs use.

``ModelInspector`` lists a model's modules (qualified names and fully qualified types,
for ``module_name_configs`` / ``module_type_configs``) and ops (names and types, for
``op_name_config`` / ``op_type_config``), with the data flow between ops and the
tensors crossing each module's boundary. Graph mode reads the ``torch.export`` graph;
eager mode runs the model once through the eager interceptor (op names
``<module>.<op>[_k]``, registry op types, as eager configs match them).

Public: ``ModelInspector``, ``ModelSummary``, ``ModuleContext``, ``ModuleInfo``,
``OpInfo``, ``SourceFrame``, ``InputEdge``, ``BoundaryEdge``. The error raised for an
unknown execution mode, ``InvalidExecutionModeError`` (a ``ValueError``), is importable
from here too. ``bits_per_weight(model)`` counts the storage of an eager-prepared or plain
model with its quantized weights packed (a ``BitsPerWeightResult``; graph mode is refused).
"""

from __future__ import annotations

from coreai_opt.inspection._errors import (
    InvalidExecutionModeError as InvalidExecutionModeError,  # public in coreai_opt.quantization
)
from coreai_opt.inspection._info import (
    BoundaryEdge,
    InputEdge,
    ModelSummary,
    ModuleContext,
    ModuleInfo,
    OpInfo,
    SourceFrame,
)
from coreai_opt.inspection._inspector import ModelInspector
from coreai_opt.inspection.bits_per_weight import BitsPerWeightResult, bits_per_weight
from coreai_opt.inspection.sensitivity import layer_sensitivity

__all__ = [
    "BitsPerWeightResult",
    "BoundaryEdge",
    "InputEdge",
    "ModelInspector",
    "ModelSummary",
    "ModuleContext",
    "ModuleInfo",
    "OpInfo",
    "SourceFrame",
    "bits_per_weight",
    "layer_sensitivity",
]
