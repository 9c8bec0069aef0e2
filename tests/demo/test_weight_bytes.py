"""The demo's packed weight-size count on models small enough to check by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from coreai_opt.demo.weight_bytes import weight_bytes
from coreai_opt.quantization import (
    ModuleQuantizerConfig,
    QuantizationSpec,
    Quantizer,
    QuantizerConfig,
)
from coreai_opt.quantization.spec import PerChannelGranularity


def _prepare(model: nn.Module, config: QuantizerConfig, x: torch.Tensor) -> nn.Module:
    return Quantizer(copy.deepcopy(model).eval(), config).prepare((x,))


def _weight_only(spec: QuantizationSpec) -> QuantizerConfig:
    return QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_input_spec=None, op_output_spec=None, op_state_spec={"weight": spec}
        )
    )


LINEAR_BIAS = 16 * 4  # float32 bias of Linear(64, 16)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # 64x16 int8 codes + 16 float32 scales + bias
        (QuantizerConfig.presets.w8(), 64 * 16 + 16 * 4 + LINEAR_BIAS),
        # W8A8: the activation FQs cost nothing
        (QuantizerConfig.presets.w8a8(), 64 * 16 + 16 * 4 + LINEAR_BIAS),
        # int4 codes (half a byte each) + 16 x 2 blocks of float32 scales
        (QuantizerConfig.presets.w4_per_block(block_size=32), 64 * 16 // 2 + 32 * 4 + LINEAR_BIAS),
        # fp4 codes + 32 E8M0 scales of one byte
        (QuantizerConfig.presets.mxfp4(), 64 * 16 // 2 + 32 * 1 + LINEAR_BIAS),
        # fp8 codes + 16 float32 scales
        (QuantizerConfig.presets.fp8(), 64 * 16 + 16 * 4 + LINEAR_BIAS),
        # asymmetric zp: one int8 zero point per channel
        (
            _weight_only(
                QuantizationSpec(
                    dtype=torch.int8, qscheme="asymmetric", granularity=PerChannelGranularity()
                )
            ),
            64 * 16 + 16 * 4 + 16 * 1 + LINEAR_BIAS,
        ),
        # asymmetric minval: one float32 minval per channel
        (
            _weight_only(
                QuantizationSpec(
                    dtype=torch.int8,
                    qscheme="asymmetric",
                    qformulation="minval",
                    granularity=PerChannelGranularity(),
                )
            ),
            64 * 16 + 16 * 4 + 16 * 4 + LINEAR_BIAS,
        ),
    ],
    ids=["w8", "w8a8", "w4_per_block", "mxfp4", "fp8", "asym_zp", "asym_minval"],
)
def test_linear_by_hand(config: QuantizerConfig, expected: int) -> None:
    model = nn.Sequential(nn.Linear(64, 16))
    wb = weight_bytes(_prepare(model, config, torch.randn(4, 64)))
    assert wb.total_bytes == expected
    (entry,) = wb.quantized
    assert entry.name == "0.weight"
    assert entry.numel == 64 * 16
    assert wb.plain_bytes == LINEAR_BIAS


def test_float_model_counts_every_tensor_at_its_dtype() -> None:
    model = nn.Sequential(nn.Conv2d(32, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    wb = weight_bytes(model)
    # conv weight + BN weight, bias, running mean, running var (float32) + num_batches_tracked
    assert wb.total_bytes == 8 * 32 * 9 * 4 + 4 * 8 * 4 + 8
    assert wb.quantized == ()


def test_conv_bn_weight_read_through_the_qat_form() -> None:
    """The conv weight FQ reads ``weight * bn_factor``; the count finds the conv weight."""
    model = nn.Sequential(nn.Conv2d(32, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    prepared = _prepare(model, QuantizerConfig.presets.w8(), torch.randn(2, 32, 6, 6))
    wb = weight_bytes(prepared)
    (entry,) = wb.quantized
    assert entry.name == "0.weight"
    assert entry.num_blocks == 8
    # int8 codes + 8 scales + the BN tensors as before
    assert wb.total_bytes == 8 * 32 * 9 + 8 * 4 + 4 * 8 * 4 + 8


def test_shared_weight_counts_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(32, 32, bias=False)
            self.b = nn.Linear(32, 32, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    model = Tied()
    assert weight_bytes(model).total_bytes == 32 * 32 * 4
    wb = weight_bytes(_prepare(model, QuantizerConfig.presets.w8(), torch.randn(2, 32)))
    assert len(wb.quantized) == 1
    assert wb.total_bytes == 32 * 32 + 32 * 4


def test_bits_per_quantized_weight() -> None:
    model = nn.Sequential(nn.Linear(64, 16, bias=False))
    prepared = _prepare(model, QuantizerConfig.presets.mxfp4(), torch.randn(4, 64))
    # 4 bits per code + 8 bits per 32 codes
    assert weight_bytes(prepared).bits_per_quantized_weight == pytest.approx(4.25)
