"""The two models the execution-mode benchmarks measure (eager and graph overhead).

- ``SmallCNN``: two conv-bn-relu blocks, max pooling, two linears; input 32 x 3 x 16 x 16.
- ``PreLNBlock``: a pre-LayerNorm transformer block (d=256, 4 heads, MLP 4x); input
  16 x 64 x 256.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv-bn-relu → pool → conv-bn-relu → pool → flatten → linear → relu → linear."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    @staticmethod
    def example_input() -> torch.Tensor:
        """A batch of 32 3 x 16 x 16 images."""
        return torch.randn(32, 3, 16, 16)


class PreLNBlock(nn.Module):
    """x + attn(ln1(x)), then + mlp(ln2(x)); attention by nn.MultiheadAttention."""

    def __init__(self, d: int = 256, heads: int = 4) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))

    @staticmethod
    def example_input() -> torch.Tensor:
        """16 sequences of 64 tokens of width 256."""
        return torch.randn(16, 64, 256)
