"""``CompressionSpec`` (how one tensor is compressed) and ``CompressionType``.

Pure data: nothing here imports an ``nn.Module`` implementation.
"""

from __future__ import annotations

import abc

from pydantic import BaseModel, ConfigDict

from coreai_opt._deprecated_enum import StrEnumBase

__all__ = ["CompressionSpec", "CompressionType"]


class CompressionType(StrEnumBase):
    """Family of compression a spec belongs to."""

    QUANTIZATION = "quantization"
    PALETTIZATION = "palettization"
    PRUNING = "pruning"

    def to_coreml_code(self) -> int:
        """Integer code Core ML stores in a tensor's ``compression_type`` metadata."""
        return _COREML_CODES[self]


_COREML_CODES: dict[CompressionType, int] = {
    CompressionType.PRUNING: 1,
    CompressionType.PALETTIZATION: 2,
    CompressionType.QUANTIZATION: 3,
}


class CompressionSpec(BaseModel, abc.ABC):
    """Immutable description of how a single tensor is compressed.

    Subclasses are pydantic models: frozen, unknown fields rejected, and arbitrary
    field types (``torch.dtype``, classes) allowed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    @classmethod
    @abc.abstractmethod
    def get_compression_type(cls) -> CompressionType:
        """The compression family this spec configures."""
