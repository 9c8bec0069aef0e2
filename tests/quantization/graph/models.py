"""Small models shared by the graph-mode tests."""

from __future__ import annotations

import torch
from torch import nn


class ConvBnNet(nn.Module):
    """conv → bn → relu → pool → flatten → dropout → linear, plus a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = nn.functional.adaptive_avg_pool2d(y, 1).flatten(1)
        return self.fc(self.drop(y)) + 1


class Block(nn.Module):
    """Two linears with a sigmoid between them."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d, d)
        self.linear2 = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(torch.sigmoid(self.linear1(x)))


class TwoBlocks(nn.Module):
    """submodule_a / submodule_b, each a Block, joined by an add."""

    def __init__(self) -> None:
        super().__init__()
        self.submodule_a = Block()
        self.submodule_b = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.submodule_a(x) + self.submodule_b(x)
