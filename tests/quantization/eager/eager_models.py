"""Test models shared by the eager-mode tests: config_guide.md's naming example and a tied
weight."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Tied", "TwoAddModule", "TwoSubmodules"]


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


class Tied(nn.Module):
    """An embedding and an output projection sharing one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 4)
        self.head = nn.Linear(4, 6, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(idx))
