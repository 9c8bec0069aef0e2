"""The demo's two small models for 8x8 digit images.

* :class:`SmallCNN`: three conv-bn-relu blocks (two max pools) and a two-layer classifier.
  Every conv but the first reads 32 or more input channels and every Linear reads a multiple
  of 32 features, so per-block formats with blocks of 32 along the input channels apply;
  the first conv reads one channel, where no block fits (prepare drops its weight FQ).
* :class:`SmallTransformer`: the eight image rows are eight tokens of eight pixels, embedded
  by a Linear to ``dim`` features, plus a learned position embedding; pre-norm encoder
  blocks (multi-head self-attention written with ``nn.Linear`` projections and matmuls, and
  a GELU MLP); mean over tokens; a Linear head. The token embedding reads 8 features, so a
  block of 32 does not fit there either.

Both export with ``torch.export`` at any batch size (the batch dimension is never read as
a Python int).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBlock", "EncoderBlock", "SelfAttention", "SmallCNN", "SmallTransformer"]

NUM_CLASSES = 10


class ConvBlock(nn.Sequential):
    """3x3 conv (no bias) -> batch norm -> ReLU; children ``0``, ``1``, ``2``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        """A block mapping *in_channels* to *out_channels* at the same resolution."""
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class SmallCNN(nn.Module):
    """conv-bn-relu x3 with max pooling, then Linear-ReLU-Linear (input ``[B, 1, 8, 8]``)."""

    def __init__(self, width: int = 32) -> None:
        """*width* channels in the first two blocks, ``2 * width`` in the third."""
        super().__init__()
        self.block1 = ConvBlock(1, width)
        self.block2 = ConvBlock(width, width)
        self.pool1 = nn.MaxPool2d(2)
        self.block3 = ConvBlock(width, 2 * width)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(2 * width * 2 * 2, 64)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, 10]``."""
        x = self.pool1(self.block2(self.block1(x)))
        x = self.pool2(self.block3(x))
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


class SelfAttention(nn.Module):
    """Multi-head self-attention from a fused ``qkv`` Linear, matmuls and softmax."""

    def __init__(self, dim: int, heads: int) -> None:
        """*dim* features split over *heads* heads (``dim % heads == 0``)."""
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, dim]`` -> ``[B, T, dim]``."""
        tokens, dim = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(-1, tokens, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(-1, tokens, dim)
        return self.proj(out)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        """*dim* features, *heads* attention heads, an MLP of ``mlp_ratio * dim``."""
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, dim]`` -> ``[B, T, dim]``."""
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class SmallTransformer(nn.Module):
    """Rows of the 8x8 image as 8 tokens; encoder blocks; mean pool; Linear head."""

    def __init__(self, dim: int = 64, depth: int = 2, heads: int = 4) -> None:
        """*depth* encoder blocks of width *dim* with *heads* heads."""
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.pos = nn.Parameter(torch.zeros(1, 8, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 8, 8]`` images -> class logits ``[B, 10]``."""
        tokens = self.embed(x.flatten(1, 2)) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens.mean(dim=1)))
