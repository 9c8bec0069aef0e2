"""The demo's stored-bytes count of Core AI-finalized models, checked by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from coreai_opt.demo.finalized import finalize_and_compare, finalize_copy, state_bytes
from coreai_opt.quantization import Quantizer, QuantizerConfig
from coreai_opt.quantization._lifecycle import PREPARED_MARKER

MODES = ("eager", "graph")
LINEAR_BIAS = 16 * 4  # float32 bias of Linear(64, 16)


class Tied(nn.Module):
    """Two Linear layers sharing one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(32, 32, bias=False)
        self.b = nn.Linear(32, 32, bias=False)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def _quantizer(model: nn.Module, config: QuantizerConfig, mode: str) -> Quantizer:
    config.execution_mode = mode  # type: ignore[assignment]
    return Quantizer(copy.deepcopy(model).eval(), config)


def test_plain_model_counts_every_tensor() -> None:
    model = nn.Sequential(nn.Conv2d(32, 8, 3, bias=False), nn.BatchNorm2d(8))
    counted = state_bytes(model)
    # conv weight, BN weight / bias / running stats (float32) and num_batches_tracked (int64)
    assert counted.total == 8 * 32 * 9 * 4 + 4 * 8 * 4 + 8
    assert counted.by_dtype == {"float32": 8 * 32 * 9 * 4 + 4 * 8 * 4, "int64": 8}
    assert counted.tensors == 6 and counted.empty == 0


def test_tied_and_overlapping_tensors_count_once() -> None:
    model = Tied()
    assert state_bytes(model).total == 32 * 32 * 4
    holder = nn.Module()
    data = torch.zeros(100)
    holder.register_buffer("first", data[:60])
    holder.register_buffer("second", data[40:])  # overlaps "first" on 20 elements
    holder.register_buffer("again", data[:60])
    assert state_bytes(holder).total == 100 * 4


def test_placeholders_marker_and_non_persistent_buffers_count_zero() -> None:
    holder = nn.Module()
    holder.weight = nn.Parameter(torch.zeros(0))
    holder.register_buffer("kept", torch.zeros(3, dtype=torch.int8))
    holder.register_buffer("scratch", torch.zeros(100), persistent=False)
    holder.register_buffer(PREPARED_MARKER, torch.tensor(True))  # as a GraphModule copy has it
    counted = state_bytes(holder)
    assert counted.total == 3
    assert counted.tensors == 2 and counted.empty == 1


def test_wrapped_fp4_codes_count_packed() -> None:
    floatx = pytest.importorskip("coreai_torch._compression._floatx")
    holder = nn.Module()
    packed = torch.zeros(4, 8, dtype=torch.uint8)  # 64 FP4 codes, two a byte
    holder.register_buffer("codes", floatx.Float4Tensor(packed))
    assert tuple(holder.codes.shape) == (4, 16)
    assert state_bytes(holder).total == 32


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # int8 codes + 16 float32 scales + 16 int8 zero points (stored although symmetric)
        (QuantizerConfig.presets.w8(), 64 * 16 + 16 * 4 + 16 + LINEAR_BIAS),
        # int4 codes one a byte (int8 containers, not packed) + 16 x 2 scales and zero points
        (
            QuantizerConfig.presets.w4_per_block(block_size=32),
            64 * 16 + 32 * 4 + 32 + LINEAR_BIAS,
        ),
        # fp4 codes packed two a byte + 32 E8M0 scales of one byte
        (QuantizerConfig.presets.mxfp4(), 64 * 16 // 2 + 32 + LINEAR_BIAS),
    ],
    ids=["w8", "w4_per_block", "mxfp4"],
)
def test_finalized_linear_by_hand(mode: str, config: QuantizerConfig, expected: int) -> None:
    x = torch.randn(8, 64)
    quantizer = _quantizer(nn.Sequential(nn.Linear(64, 16)), config, mode)
    prepared = quantizer.prepare((x,))
    with torch.no_grad():
        before = prepared(x)
    result = finalize_and_compare(quantizer, prepared, x, before)
    assert result.bytes.total == expected
    assert result.bytes.empty == 1  # the dense weight's placeholder
    assert result.agreement == 1.0
    assert result.max_abs_diff < 1e-5
    with torch.no_grad():  # the prepared model is left as it was
        assert torch.equal(prepared(x), before)


@pytest.mark.parametrize("mode", MODES)
def test_finalized_tied_weight_counts_once(mode: str) -> None:
    x = torch.randn(4, 32)
    quantizer = _quantizer(Tied(), QuantizerConfig.presets.w8(), mode)
    finalized = finalize_copy(quantizer, quantizer.prepare((x,)))
    # one set of int8 codes, float32 scales and int8 zero points
    assert state_bytes(finalized).total == 32 * 32 + 32 * 4 + 32
