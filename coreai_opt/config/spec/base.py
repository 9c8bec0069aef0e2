"""Base classes shared by every compression technique's spec layer.

A *spec* says how one tensor is compressed (pure data); a *simulator* is the
``nn.Module`` that applies it during training/calibration; a *component factory*
builds simulators from specs.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from coreai_opt._deprecated_enum import StrEnumBase

__all__ = [
    "CompressionComponentFactoryBase",
    "CompressionSimulatorBase",
    "CompressionSpec",
    "CompressionTargetTensor",
    "CompressionType",
]


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


class CompressionTargetTensor(StrEnumBase):
    """Role of the tensor a simulator is attached to."""

    WEIGHT = "weight"
    ACTIVATION = "activation"
    LUT = "lut"


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


class CompressionSimulatorBase(torch.nn.Module, abc.ABC):
    """``nn.Module`` that simulates a compression scheme in the forward pass."""

    compression_type: ClassVar[CompressionType]

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return *x* as the compressed-then-decompressed tensor would look."""


class CompressionComponentFactoryBase(abc.ABC):
    """Builds the simulator modules for a spec (classmethods only, no state)."""

    @classmethod
    @abc.abstractmethod
    def construct(
        cls, spec: CompressionSpec | None, target: CompressionTargetTensor
    ) -> CompressionSimulatorBase | None:
        """Build the simulator for *spec* applied to a *target* tensor (None → None)."""

    @classmethod
    def construct_many(
        cls, specs: dict[Any, CompressionSpec | None], target: CompressionTargetTensor
    ) -> dict[Any, CompressionSimulatorBase | None]:
        """Build one simulator per entry of *specs* (keys preserved)."""
        return {key: cls.construct(spec, target) for key, spec in specs.items()}
