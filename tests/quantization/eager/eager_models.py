"""Test models shared by the eager-mode tests: config_guide.md's naming example."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TwoAddModule", "TwoSubmodules"]


class TwoAddModule(nn.Module):
    """config_guide.md's example: two adds."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x + x
        b = a + a
        return b


class TwoSubmodules(nn.Module):
    """config_guide.md's example: two TwoAddModules in sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.submodule_a = TwoAddModule()
        self.submodule_b = TwoAddModule()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.submodule_a(x)
        x = self.submodule_b(x)
        return x
