"""Qparam calculators: base class and registry.

Built-in keys (``BUILTIN_KEYS``): ``"default"`` (a marker resolved per target:
static for weights/LUTs, moving average for activations), ``"static"``,
``"moving_average"`` and ``"global_minmax"``. Their classes are registered by the
module that implements them; a spec may name the keys before that. Register custom
calculators with ``@QParamsCalculatorBase.register("key")``.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from typing import ClassVar

import torch

from coreai_opt.quantization.spec._registry import RegistryMixin

__all__ = ["QParamsCalculatorBase"]


class QParamsCalculatorBase(RegistryMixin, torch.nn.Module, abc.ABC):
    """Base of the ``nn.Module`` that turns observed ranges into scale/zero-point/minval."""

    REGISTRY: ClassVar[OrderedDict[str, type]] = OrderedDict()
    BUILTIN_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"default", "static", "moving_average", "global_minmax"}
    )

    @abc.abstractmethod
    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Observe *x* and return ``(scale, zero_point, minval)``."""
