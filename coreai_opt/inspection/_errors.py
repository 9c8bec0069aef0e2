"""The error ``ModelInspector`` raises for an execution mode it does not know.

``InvalidExecutionModeError`` belongs to :mod:`coreai_opt.quantization.config` (behaviour.md
§12: raised by both ``Quantizer`` and ``ModelInspector``). When that package defines it,
this module re-exports that class so that one ``except`` clause catches both; until then
the inspection package defines it here.
"""

from __future__ import annotations

__all__ = ["InvalidExecutionModeError"]

try:  # pragma: no cover - depends on what coreai_opt.quantization provides
    from coreai_opt.quantization.config import (  # type: ignore[attr-defined]
        InvalidExecutionModeError,
    )
except ImportError:

    class InvalidExecutionModeError(ValueError):  # type: ignore[no-redef]
        """An ``execution_mode`` that is not one of the ``ExecutionMode`` values."""
