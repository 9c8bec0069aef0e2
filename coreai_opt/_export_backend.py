"""Export backends accepted by ``Quantizer.finalize`` and the Core ML dtype error."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from coreai_opt._deprecated_enum import StrEnumBase

__all__ = ["CoreMLExportError", "ExportBackend"]


class ExportBackend(StrEnumBase):
    """Target representation produced by ``Quantizer.finalize``.

    Members:
        _TORCH: keep plain PyTorch modules (fake-quantizers stay in place).
        CoreML: register Core ML compression metadata (``coremltools`` conversion).
        CoreAI: replace fake-quantizers with Core AI quantize/dequantize ops.

    ``ExportBackend.MIL`` and ``ExportBackend.MLIR`` (and the values ``"mil"`` /
    ``"mlir"``) are deprecated spellings of ``CoreML`` and ``CoreAI``; they still
    resolve but warn with :class:`DeprecationWarning`. Value lookup is case-insensitive.
    """

    _TORCH = "_torch"
    CoreML = "coreml"
    CoreAI = "coreai"

    __deprecated_aliases__: ClassVar[dict[str, str]] = {"MIL": "CoreML", "MLIR": "CoreAI"}

    if TYPE_CHECKING:
        MIL: ExportBackend
        MLIR: ExportBackend


class CoreMLExportError(ValueError):
    """A quantized tensor uses a dtype that the Core ML backend cannot represent."""

    def __init__(self, dtype: object, context: str) -> None:
        """Build the error for *dtype* found on *context* (e.g. a weight's name)."""
        self.dtype = dtype
        self.context = context
        super().__init__(
            f"The CoreML backend cannot export dtype {dtype} (found on {context}); "
            f"export with backend=ExportBackend.CoreAI instead."
        )
