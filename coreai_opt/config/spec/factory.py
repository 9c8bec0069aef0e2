"""``CompressionTargetTensor`` and the base of the component factories."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from coreai_opt._deprecated_enum import StrEnumBase
from coreai_opt.config.spec.base import CompressionSpec
from coreai_opt.config.spec.compression_simulator import CompressionSimulatorBase

__all__ = ["CompressionComponentFactoryBase", "CompressionTargetTensor"]


class CompressionTargetTensor(StrEnumBase):
    """Role of the tensor a simulator is attached to."""

    WEIGHT = "weight"
    ACTIVATION = "activation"
    LUT = "lut"

    @classmethod
    def parse(cls, value: CompressionTargetTensor | str) -> CompressionTargetTensor:
        """*value* as a member; a ValueError names the argument and the allowed values."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"quantization_target={value!r} is not a compression target; allowed: "
                f"{cls.allowed_values()}"
            ) from None


class CompressionComponentFactoryBase(abc.ABC):
    """Builds the simulator modules for a spec (classmethods only, no state)."""

    @classmethod
    @abc.abstractmethod
    def construct(
        cls, spec: CompressionSpec | None, target: CompressionTargetTensor
    ) -> CompressionSimulatorBase | None:
        """Build the simulator for *spec* applied to a *target* tensor (None → None)."""

    @classmethod
    @abc.abstractmethod
    def construct_partial(
        cls, spec: CompressionSpec | None, target: CompressionTargetTensor
    ) -> Callable[[], CompressionSimulatorBase] | None:
        """A zero-argument constructor of the simulator for *spec* (None → None)."""

    @classmethod
    def construct_many(
        cls, specs: dict[Any, CompressionSpec | None], target: CompressionTargetTensor
    ) -> dict[Any, CompressionSimulatorBase | None]:
        """Build one simulator per entry of *specs* (keys preserved)."""
        return {key: cls.construct(spec, target) for key, spec in specs.items()}
