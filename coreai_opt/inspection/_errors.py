"""The error ``ModelInspector`` raises for an execution mode it does not know: the one
``Quantizer`` raises (:mod:`coreai_opt.quantization.config`), so one ``except`` clause
catches both."""

from __future__ import annotations

from coreai_opt.quantization.config import InvalidExecutionModeError

__all__ = ["InvalidExecutionModeError"]
