"""Weight-only quantization gives the same model in both execution modes: the same weight
fake-quantizers (one per weight, the same default axes) applied to the same weights, so the
prepared models' outputs are bit-identical (conv-bn layers excepted: graph mode's QAT form
multiplies the BN scale into the weight before fake-quantizing it)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coreai_opt.quantization import Quantizer, QuantizerConfig


class _NoBatchNorm(nn.Module):
    """Conv, conv-transpose, embedding and linear layers, an add and a matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 32)
        self.conv = nn.Conv1d(32, 32, 3, padding=1)
        self.deconv = nn.ConvTranspose1d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 32)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens).transpose(1, 2)  # [batch, channels, length]
        h = F.relu(self.conv(h)) + self.deconv(h)
        h = h.transpose(1, 2)
        return self.fc2(F.gelu(self.fc1(h))) @ h.transpose(1, 2)


PRESETS: dict[str, Callable[[str], QuantizerConfig]] = {
    "W8": lambda mode: QuantizerConfig.presets.w8(execution_mode=mode),
    "W4": lambda mode: QuantizerConfig.presets.w4(execution_mode=mode),
    "W4 per-block 32": lambda mode: QuantizerConfig.presets.w4_per_block(execution_mode=mode),
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_weight_only_prepared_models_agree_bit_for_bit(preset: str) -> None:
    torch.manual_seed(0)
    model = _NoBatchNorm().eval()
    tokens = torch.randint(0, 16, (4, 12))
    make = PRESETS[preset]
    graph = Quantizer(copy.deepcopy(model), make("graph")).prepare((tokens,))
    eager = Quantizer(copy.deepcopy(model), make("eager")).prepare((tokens,))
    new_tokens = torch.randint(0, 16, (4, 12))
    with torch.no_grad():
        expected = graph(new_tokens)
        assert torch.equal(eager(new_tokens), expected)
        # And the quantization did something.
        assert not torch.equal(model(new_tokens), expected)
