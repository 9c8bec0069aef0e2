"""Fake-quantize implementations: base class and registry.

The working implementation (key ``"default"``) is registered by the module that
defines it; a spec may name ``"default"`` before that (see ``BUILTIN_KEYS``).
Register custom implementations with ``@FakeQuantizeImplBase.register("key")``.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from typing import ClassVar

import torch

from coreai_opt.config.spec import CompressionSimulatorBase, CompressionType
from coreai_opt.quantization.spec._registry import RegistryMixin

__all__ = ["FakeQuantizeImplBase"]


class FakeQuantizeImplBase(RegistryMixin, CompressionSimulatorBase):
    """Base of the ``nn.Module`` that quantizes and dequantizes a tensor in forward.

    Built-in keys: ``"default"`` (integer and float formats, straight-through
    gradient) and ``"lsq"`` (learnable scale / zero point).
    """

    REGISTRY: ClassVar[OrderedDict[str, type]] = OrderedDict()
    BUILTIN_KEYS: ClassVar[frozenset[str]] = frozenset({"default", "lsq"})
    compression_type: ClassVar[CompressionType] = CompressionType.QUANTIZATION

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the fake-quantized *x* (same shape and dtype)."""
