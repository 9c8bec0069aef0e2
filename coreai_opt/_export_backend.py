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


_COREAI_HINT = "export with backend=ExportBackend.CoreAI instead."


class CoreMLExportError(ValueError):
    """A quantized tensor uses a format that the Core ML backend cannot represent.

    Build it with a message (``CoreMLExportError(message)``, the reference's 0.3.0
    form), with :meth:`from_dtype` / :meth:`from_config`, or with the 0.2.0 form
    ``CoreMLExportError(dtype, context)``. Every text ends by pointing to
    ``ExportBackend.CoreAI``.
    """

    def __init__(self, message: object, context: str | None = None) -> None:
        """Build the error from *message*; with *context*, *message* is the dtype (0.2.0 form)."""
        self.dtype: object | None = None
        self.context = context
        if context is not None:
            self.dtype = message
            text = self._dtype_text(message, context)
        else:
            text = str(message)
            if _COREAI_HINT not in text:
                text = f"{text.rstrip('. ')}; {_COREAI_HINT}"
        super().__init__(text)

    @staticmethod
    def _dtype_text(dtype: object, context: str) -> str:
        return (
            f"The CoreML backend cannot export dtype {dtype} (found on {context}); {_COREAI_HINT}"
        )

    @classmethod
    def from_dtype(cls, dtype: object, context: str) -> CoreMLExportError:
        """The error for a *dtype* Core ML cannot store, found on *context* (e.g. a weight)."""
        error = cls(cls._dtype_text(dtype, context))
        error.dtype, error.context = dtype, context
        return error

    @classmethod
    def from_config(cls, config: object, context: str) -> CoreMLExportError:
        """The error for a quantization *config* (e.g. per-channel activations) on *context*."""
        error = cls(
            f"The CoreML backend cannot export {context} quantized with {config}; {_COREAI_HINT}"
        )
        error.context = context
        return error
