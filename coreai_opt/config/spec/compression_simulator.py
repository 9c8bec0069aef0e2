"""``CompressionSimulatorBase``: the abstract ``nn.Module`` every simulator derives from."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch

from coreai_opt.config.spec.base import CompressionType

__all__ = ["CompressionSimulatorBase"]


class CompressionSimulatorBase(torch.nn.Module, abc.ABC):
    """``nn.Module`` that simulates a compression scheme in the forward pass."""

    compression_type: ClassVar[CompressionType]

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return *x* as the compressed-then-decompressed tensor would look."""
