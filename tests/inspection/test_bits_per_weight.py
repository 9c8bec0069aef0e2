"""``bits_per_weight`` on small hand-built models whose bit counts are worked out by hand.

Fake-quantizers are attached the way eager mode does it: as the first parametrization of
the weight (``torch.nn.utils.parametrize``), built by ``QuantizationComponentFactory``
from a ``QuantizationSpec``. One forward sizes their state, as after prepare.
"""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from coreai_opt.inspection import BitsPerWeightResult, bits_per_weight
from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerChannelGranularity,
    QuantizationComponentFactory,
    QuantizationSpec,
)
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase

F32 = 32  # bits of a float32 scale / minval / parameter element

PER_CHANNEL = PerChannelGranularity(axis=0)
BLOCK_32 = PerBlockGranularity(axis=1, block_size=32)


def attach(module: nn.Module, spec: QuantizationSpec) -> FakeQuantizeImplBase:
    """Make *spec*'s weight fake-quantizer the first parametrization of ``module.weight``."""
    fq = QuantizationComponentFactory.create_fake_quantizer(spec, "weight")
    parametrize.register_parametrization(module, "weight", fq, unsafe=True)
    return fq


def linear_64x16(spec: QuantizationSpec, *, bias: bool = False) -> nn.Sequential:
    """``Linear(64, 16)`` with a quantized weight (1024 elements, 16 rows of 2 x 32)."""
    model = nn.Sequential(nn.Linear(64, 16, bias=bias))
    attach(model[0], spec)
    model(torch.randn(4, 64))
    return model


def test_int8_per_channel_symmetric_linear_and_conv() -> None:
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(16 * 3 * 3, 10))
    spec = QuantizationSpec(dtype=torch.int8, granularity=PER_CHANNEL)
    attach(model[0], spec)
    attach(model[2], spec)
    model(torch.randn(2, 8, 5, 5))

    result = bits_per_weight(model)

    conv = 16 * 8 * 3 * 3 * 8 + 16 * F32  # int8 codes + one float32 scale per out channel
    linear = 10 * 144 * 8 + 10 * F32
    biases = (16 + 10) * F32
    assert result.tensors["0.weight"].total_bits == conv == 9728
    assert result.tensors["2.weight"].total_bits == linear == 11840
    assert result.tensors["0.weight"].offset_bits == 0  # symmetric: no zero point stored
    assert result.quantized_bits == conv + linear
    assert result.float_bits == biases
    assert result.total_bits == 22400
    assert result.total_params == 1152 + 16 + 1440 + 10 == 2618
    assert result.bits_per_weight == pytest.approx(22400 / 2618)


def test_int4_per_block_asymmetric_zero_point() -> None:
    spec = QuantizationSpec(dtype=torch.int4, qscheme="asymmetric", granularity=BLOCK_32)
    result = bits_per_weight(linear_64x16(spec))

    entry = result.tensors["0.weight"]
    assert entry.num_blocks == 16 * 2
    assert entry.payload_bits == 1024 * 4
    assert entry.scale_bits == 32 * F32
    assert entry.offset_bits == 32 * 4  # one int4 zero point per block
    assert result.total_bits == 4096 + 1024 + 128 == 5248
    assert result.bits_per_weight == 5.125


@pytest.mark.parametrize("qscheme", ["asymmetric", "symmetric"])
def test_int4_minval_stores_a_float_offset_per_block(qscheme: str) -> None:
    """The export keeps minval with either scheme, so both count it."""
    spec = QuantizationSpec(
        dtype=torch.int4, qscheme=qscheme, qformulation="minval", granularity=BLOCK_32
    )
    result = bits_per_weight(linear_64x16(spec))

    entry = result.tensors["0.weight"]
    assert entry.offset_bits == 32 * F32
    assert result.total_bits == 4096 + 32 * F32 + 32 * F32 == 6144
    assert result.bits_per_weight == 6.0


def test_scales_take_the_weights_compute_dtype() -> None:
    model = nn.Sequential(nn.Linear(64, 16, bias=False)).half()
    attach(model[0], QuantizationSpec(dtype=torch.int4, granularity=BLOCK_32))
    model(torch.randn(4, 64, dtype=torch.float16))

    result = bits_per_weight(model)

    assert result.tensors["0.weight"].scale_bits == 32 * 16  # float16 scales
    assert result.total_bits == 4096 + 512 == 4608
    assert result.bits_per_weight == 4.5


def test_fp8_e4m3_per_tensor_embedding() -> None:
    model = nn.Sequential(nn.Embedding(100, 16))
    attach(model[0], QuantizationSpec(dtype=torch.float8_e4m3fn))
    model(torch.tensor([[1, 2, 3]]))

    result = bits_per_weight(model)

    entry = result.tensors["0.weight"]
    assert (entry.element_bits, entry.num_blocks, entry.offset_bits) == (8, 1, 0)
    assert result.total_bits == 1600 * 8 + F32 == 12832
    assert result.bits_per_weight == pytest.approx(12832 / 1600)
    assert result.bits_per_weight == pytest.approx(8.02)


def test_mxfp4_like_e8m0_scales_per_block_of_32() -> None:
    spec = QuantizationSpec(dtype="float4_e2m1fn", granularity=BLOCK_32)
    assert spec.scale_dtype == torch.float8_e8m0fnu  # FP4 defaults to E8M0 scales
    result = bits_per_weight(linear_64x16(spec))

    entry = result.tensors["0.weight"]
    assert entry.scale_bits == 32 * 8  # one byte per E8M0 scale
    assert result.total_bits == 1024 * 4 + 256 == 4352
    assert result.bits_per_weight == 4.25
    assert result.bits_per_quantized_weight == 4.25


def test_float_model_is_32_bits_per_weight() -> None:
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 4), nn.Conv2d(3, 4, 3))

    result = bits_per_weight(model)

    assert result.total_params == 80 + (32 + 4) + (108 + 4) == 228
    assert result.total_bits == 228 * 32
    assert result.bits_per_weight == 32.0
    assert result.quantized_bits == 0
    assert result.quantized_params == 0
    assert not any(t.quantized for t in result.tensors.values())


def test_buffers_add_bits_but_not_weights_and_non_persistent_ones_are_skipped() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    model.register_buffer("scratch", torch.zeros(100), persistent=False)

    result = bits_per_weight(model)

    # running_mean + running_var (float32) and num_batches_tracked (int64)
    assert result.buffer_bits == 2 * 4 * F32 + 64 == 320
    assert "scratch" not in result.tensors
    assert result.total_params == 108 + 4 + 4 == 116  # conv weight, BN weight and bias
    assert result.total_bits == 116 * F32 + 320 == 4032
    assert result.bits_per_weight == pytest.approx(4032 / 116)


def test_fake_quantizer_state_is_not_payload() -> None:
    """Running min / max, stored scales and switches of the fake-quantizer are not counted."""
    model = linear_64x16(QuantizationSpec(dtype=torch.int8, granularity=PER_CHANNEL), bias=True)

    result = bits_per_weight(model)

    assert list(result.tensors) == ["0.bias", "0.weight"]
    assert result.tensors["0.weight"].fake_quantizer == "0.parametrizations.weight.0"
    assert result.total_bits == 1024 * 8 + 16 * F32 + 16 * F32 == 9216


def test_learnable_qparams_are_not_weights() -> None:
    """LSQ's scale / zero point are parameters of the fake-quantizer: counted per block only."""
    spec = QuantizationSpec(
        dtype=torch.int4, qscheme="asymmetric", fake_quantize_cls="lsq", granularity=PER_CHANNEL
    )
    model = linear_64x16(spec)
    assert len(list(model.parameters())) == 3  # the weight, LSQ's scale and zero point

    result = bits_per_weight(model)

    assert result.total_params == 1024
    assert result.total_bits == 1024 * 4 + 16 * F32 + 16 * 4 == 4672
    assert result.bits_per_weight == 4.5625


class Tied(nn.Module):
    """An embedding and an output projection sharing one (32, 16) weight."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, 16)
        self.head = nn.Linear(16, 32, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


def test_tied_float_weight_counted_once() -> None:
    result = bits_per_weight(Tied())

    assert list(result.tensors) == ["embed.weight"]
    assert result.tensors["embed.weight"].aliases == ("head.weight",)
    assert result.total_params == 512
    assert result.total_bits == 512 * 32 == 16384


@pytest.mark.parametrize("quantize_embedding", [True, False])
def test_tied_quantized_weight_counted_once(quantize_embedding: bool) -> None:
    """Shared by both holders or quantized by the head only: one packed tensor either way."""
    model = Tied()
    spec = QuantizationSpec(dtype=torch.int8, granularity=PER_CHANNEL)
    fq = attach(model.head, spec)
    if quantize_embedding:
        parametrize.register_parametrization(model.embed, "weight", fq, unsafe=True)
    model(torch.tensor([[0, 1, 2]]))

    result = bits_per_weight(model)

    (entry,) = result.tensors.values()
    assert entry.quantized
    assert entry.numel == 512
    assert set(entry.aliases) | {entry.name} == {"embed.weight", "head.weight"}
    assert result.total_bits == 512 * 8 + 32 * F32 == 5120
    assert result.bits_per_weight == 10.0


def test_disabled_fake_quantizer_counts_its_tensor_as_float() -> None:
    """Block 32 does not divide 48 columns: the fake-quantizer disables itself."""
    model = nn.Sequential(nn.Linear(48, 16, bias=False))
    fq = attach(model[0], QuantizationSpec(dtype=torch.int4, granularity=BLOCK_32))
    model(torch.randn(2, 48))
    assert fq.is_disabled()

    result = bits_per_weight(model)

    assert not result.tensors["0.weight"].quantized
    assert result.total_bits == 16 * 48 * 32 == 24576
    assert result.bits_per_weight == 32.0


def test_block_mismatch_before_first_forward_counts_as_float() -> None:
    model = nn.Sequential(nn.Linear(48, 16, bias=False))
    attach(model[0], QuantizationSpec(dtype=torch.int4, granularity=BLOCK_32))

    assert bits_per_weight(model).bits_per_weight == 32.0


def test_graph_module_is_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    assert bits_per_weight(model).bits_per_weight == 32.0

    with pytest.raises(TypeError, match="does not support graph mode"):
        bits_per_weight(fx.symbolic_trace(model))


def test_result_is_frozen() -> None:
    result = bits_per_weight(nn.Linear(2, 2))

    assert isinstance(result, BitsPerWeightResult)
    assert result.total_bytes == (4 + 2) * 4
    with pytest.raises(AttributeError):
        result.total_bits = 0  # type: ignore[misc]
