"""Small models shared by the graph-mode tests."""

from __future__ import annotations

import torch
from torch import nn

from coreai_opt.quantization import KVCacheQuantConfig
from coreai_opt.quantization.config import OpQuantizerConfig
from coreai_opt.quantization.spec import QuantizationSpec


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


class TwoConvs(nn.Module):
    """conv → relu → conv: activations Inductor keeps channels_last, and a 4-D model
    output."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


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


# -- KV cache (graph-mode KV-cache tests and Core AI finalize) ---------------------

KV_SPEC = QuantizationSpec(dtype=torch.int4, qscheme="asymmetric")


def kv(index: int, spec: QuantizationSpec = KV_SPEC) -> KVCacheQuantConfig:
    """KV-cache config for input *index*."""
    return KVCacheQuantConfig(
        op_quantizer_config=OpQuantizerConfig(
            op_input_spec={index: spec}, op_output_spec=None, op_state_spec=None
        )
    )


class CacheWrite(nn.Module):
    """Projects x and writes it into a cache buffer in place (``Tensor.index_copy_``)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.register_buffer("cache", torch.zeros(6, 8))

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self.cache.index_copy_(0, idx, self.proj(x))
        return self.cache.sum(0, keepdim=True) * 2.0


class CacheUpdate(nn.Module):
    """Cache passed as an input, updated out of place (``Tensor.index_copy``) and read."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, cache: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        updated = cache.index_copy(0, idx, self.proj(x))
        return torch.matmul(x, updated.t())
