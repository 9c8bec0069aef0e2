"""Range calculators: base class and registry.

Built-in key: ``"minmax"`` (element-wise min/max over each block), registered by the
module that implements it; a spec may name it before that. Register custom range
calculators with ``@RangeCalculatorBase.register("key")``.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from typing import ClassVar

import torch

from coreai_opt.quantization.spec._registry import RegistryMixin

__all__ = ["RangeCalculatorBase"]


class RangeCalculatorBase(RegistryMixin, torch.nn.Module, abc.ABC):
    """Base of the ``nn.Module`` that computes per-block ``(min, max)`` of a tensor."""

    REGISTRY: ClassVar[OrderedDict[str, type]] = OrderedDict()
    BUILTIN_KEYS: ClassVar[frozenset[str]] = frozenset({"minmax"})

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(min, max)`` of *x* per block."""
