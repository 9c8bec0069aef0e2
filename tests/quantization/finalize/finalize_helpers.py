"""Models, configs, lookups and case tables shared by the finalize tests.

The case tables (refusals, Core ML gates, coreai-torch parity) are the same for eager and
graph mode; only the names finalize reports differ, so the tables that match a message take
the mode's fake-quantizer name pattern as an argument.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pytest
import torch
from torch import fx, nn

from coreai_opt import CoreMLExportError
from coreai_opt.config.spec import CompressionTargetTensor
from coreai_opt.quantization import Quantizer, QuantizerConfig
from coreai_opt.quantization.config import ModuleQuantizerConfig
from coreai_opt.quantization.finalize import _export_ops
from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerChannelGranularity,
    QuantizationComponentFactory,
    QuantizationSpec,
)

if TYPE_CHECKING:
    # pytest.param's return type; pytest does not export it under a public name
    from _pytest.mark import ParameterSet

W8 = QuantizationSpec(dtype=torch.int8, granularity=PerChannelGranularity(axis=0))
A8 = QuantizationSpec(dtype=torch.int8)
FP4 = torch.float4_e2m1fn_x2
U8 = QuantizationSpec(dtype=torch.uint8, qscheme="asymmetric")
W4_BLOCK = QuantizationSpec(
    dtype=torch.int4, granularity=PerBlockGranularity(axis=1, block_size=32)
)
UW4 = QuantizationSpec(
    dtype=torch.uint4, qscheme="asymmetric", granularity=PerChannelGranularity(axis=0)
)

# Activation formats: (id, spec), each exported bit-exactly from a float32 model.
ACTIVATION_FORMATS = [
    ("int8", A8),
    ("uint8_asym", U8),
    (
        "int8_minval",
        QuantizationSpec(dtype=torch.int8, qscheme="asymmetric", qformulation="minval"),
    ),
    ("fp8", QuantizationSpec(dtype=torch.float8_e4m3fn)),
    ("fp8_e8m0", QuantizationSpec(dtype=torch.float8_e4m3fn, scale_dtype="float8_e8m0fnu")),
    (
        "int8_per_channel",
        QuantizationSpec(dtype=torch.int8, granularity=PerChannelGranularity(axis=1)),
    ),
]

# Weight formats: (id, spec). Every one is exported bit-exactly from a float32 model.
WEIGHT_FORMATS: list[tuple[str, QuantizationSpec]] = [
    ("int8", W8),
    (
        "uint8_asym",
        QuantizationSpec(
            dtype=torch.uint8, qscheme="asymmetric", granularity=PerChannelGranularity(axis=0)
        ),
    ),
    (
        "int4_block_minval",
        QuantizationSpec(
            dtype=torch.int4,
            qscheme="asymmetric",
            qformulation="minval",
            granularity=PerBlockGranularity(axis=1, block_size=16),
        ),
    ),
    (
        "uint4_asym",
        QuantizationSpec(
            dtype=torch.uint4, qscheme="asymmetric", granularity=PerChannelGranularity(axis=0)
        ),
    ),
    (
        "int4_symclip",
        QuantizationSpec(
            dtype=torch.int4,
            qscheme="symmetric_with_clipping",
            granularity=PerChannelGranularity(axis=0),
        ),
    ),
    (
        "fp8_e4m3",
        QuantizationSpec(dtype=torch.float8_e4m3fn, granularity=PerChannelGranularity(axis=0)),
    ),
    (
        "fp8_e4m3_e8m0",
        QuantizationSpec(
            dtype=torch.float8_e4m3fn,
            scale_dtype="float8_e8m0fnu",
            granularity=PerBlockGranularity(block_size=(1, 32)),
        ),
    ),
    (
        "mxfp4",
        QuantizationSpec(
            dtype=torch.float4_e2m1fn_x2, granularity=PerBlockGranularity(block_size=(1, 32))
        ),
    ),
]


class MLP(nn.Module):
    """linear → relu → linear, the second inside a submodule (dotted weight names)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 32)
        self.sub = nn.Sequential(nn.ReLU(), nn.Linear(32, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sub(self.a(x))


class Tied(nn.Module):
    """Two linears sharing one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.b = nn.Linear(16, 16)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def config(weight: QuantizationSpec | None, act: QuantizationSpec | None = None) -> QuantizerConfig:
    """Weights with *weight*, op inputs and outputs with *act* (None: weight-only)."""
    io: Mapping[str, QuantizationSpec | None] = {"*": act}
    return QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_state_spec={"weight": weight}, op_input_spec=io, op_output_spec=io
        )
    )


def prepared(
    model: nn.Module, cfg: QuantizerConfig, *inputs: torch.Tensor, seed: int = 0
) -> tuple[Quantizer, fx.GraphModule, torch.Tensor]:
    """(quantizer, prepared graph, its output on *inputs*) for *model* in eval mode."""
    torch.manual_seed(seed)
    q = Quantizer(model.eval(), cfg)
    gm = q.prepare(tuple(inputs))
    assert isinstance(gm, fx.GraphModule)
    with torch.no_grad():
        out = copy.deepcopy(gm)(*inputs)
    return q, gm, out


def mlp_case(
    weight: QuantizationSpec | None, act: QuantizationSpec | None = None
) -> tuple[Quantizer, fx.GraphModule, torch.Tensor, torch.Tensor]:
    """(quantizer, prepared MLP, input, prepared output)."""
    torch.manual_seed(0)
    model = MLP()
    x = torch.randn(4, 64)
    q, gm, out = prepared(model, config(weight, act), x)
    return q, gm, x, out


def nodes_by_target(gm: fx.GraphModule, target: object) -> list[fx.Node]:
    """The call_function nodes of *gm* whose target is *target*."""
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == target]


def buffers(gm: nn.Module) -> dict[str, torch.Tensor]:
    """Every buffer of *gm* by qualified name."""
    return dict(gm.named_buffers())


def weight_fq(spec: QuantizationSpec, weight: torch.Tensor) -> nn.Module:
    """A weight fake-quantizer for *spec* that has observed *weight* (observer then off)."""
    fq = QuantizationComponentFactory.create_fake_quantizer(spec, CompressionTargetTensor.WEIGHT)
    fq.tensor_fqn = "w"
    with torch.no_grad():
        fq(weight)
    fq.disable_observer()
    return fq


def activation_fq(spec: QuantizationSpec, x: torch.Tensor) -> nn.Module:
    """An activation fake-quantizer for *spec* that has observed *x* (observer then off)."""
    fq = QuantizationComponentFactory.create_fake_quantizer(
        spec, CompressionTargetTensor.ACTIVATION
    )
    with torch.no_grad():
        fq(x)
    fq.disable_observer()
    return fq


def step_of(gm: nn.Module, buffer_name: str) -> float:
    """The largest scale in buffer *buffer_name* (one quantization step of that tensor)."""
    return float(buffers(gm)[buffer_name].float().max())


# -- coremltools ---------------------------------------------------------------------

needs_coremltools = pytest.mark.skipif(
    importlib.util.find_spec("coremltools") is None,
    reason="coremltools is not installed (pip install coreai_opt[coreml])",
)


def coreml_program_ops(model: nn.Module, x: torch.Tensor) -> list:
    """The operations of the main function of the ML program coremltools makes of *model*."""
    import coremltools as ct

    traced = torch.jit.trace(model, (x,))
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name="x", shape=tuple(x.shape))],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT32,
    )
    return list(mlmodel._mil_program.functions["main"].operations)


def check_coreml_program_weights(
    f: nn.Module, x: torch.Tensor, data_dtypes: set[str], act: QuantizationSpec | None
) -> None:
    """The Core ML-finalized MLP *f* converts with its two weights stored as n-bit codes
    (dtype in *data_dtypes*) with their scales and offsets, no dense float copy left, and
    quantize / dequantize ops where *act* is set."""
    from coremltools.converters.mil.mil import types

    bufs = buffers(f)
    ops = coreml_program_ops(f, x)
    dequant = [op for op in ops if op.op_type == "constexpr_blockwise_shift_scale"]
    assert len(dequant) == 2
    by_shape = {tuple(op.data.shape): op for op in dequant}
    for owner, shape in (("a", (32, 64)), ("sub.1", (64, 32))):
        op = by_shape[shape]
        assert types.builtin_to_string(op.data.dtype) in data_dtypes
        scale = bufs[f"{owner}._COREML_/weight/quantization_scale"]
        assert op.scale.val.shape == tuple(scale.shape)
        assert torch.allclose(torch.from_numpy(op.scale.val).float(), scale)
        # the stored codes (minus the offset) times the scale are the finalized weight
        blocks = shape[1] // scale.shape[1]
        codes = torch.from_numpy(op.data.val.astype("int32")).float()
        zero_point = bufs[f"{owner}._COREML_/weight/zero_point"].float()
        if op.offset is None:  # coremltools drops an all-zero offset
            assert not zero_point.any()
        else:
            offset = torch.from_numpy(op.offset.val.astype("int32")).float()
            assert torch.equal(offset, zero_point)
            codes = codes - offset.repeat_interleave(blocks, 1)
        values = codes * scale.repeat_interleave(blocks, 1)
        torch.testing.assert_close(values, f.get_parameter(f"{owner}.weight"), rtol=0, atol=1e-7)
    # no dense float copy of a weight is left in the program
    dense = [
        op
        for op in ops
        if op.op_type == "const"
        and tuple(op.outputs[0].shape) in by_shape
        and types.is_float(op.outputs[0].dtype)
    ]
    assert not dense
    if act is not None:
        assert {"quantize", "dequantize"} <= {op.op_type for op in ops}


# -- Core AI ops ---------------------------------------------------------------------

needs_our_core_ai_ops = pytest.mark.skipif(
    not hasattr(torch.ops.coreai_opt, "quantize"),
    reason="needs this build's coreai_opt Core AI mirror ops",
)

# parity tests finalize once with each library, so they need both
needs_both_libraries = pytest.mark.skipif(
    not (_export_ops.coreai_torch_available() and hasattr(torch.ops.coreai_opt, "quantize")),
    reason="needs both coreai-torch and this build's coreai_opt Core AI mirror ops",
)


def parity_cases(
    activation_formats: list[tuple[str, QuantizationSpec]],
) -> list[tuple[str, QuantizationSpec, QuantizationSpec]]:
    """(id, weight, act) cases for the coreai-torch parity tests: every weight format with
    uint8 activations, then W8 weights with each of *activation_formats* (a mode passes the
    activation formats it checks)."""
    return [(f"w_{fmt}", spec, U8) for fmt, spec in WEIGHT_FORMATS] + [
        (f"a_{fmt}", W8, act) for fmt, act in activation_formats
    ]


# -- refusals ------------------------------------------------------------------------


def unsupported_activation_cases(activation_quantizer: str) -> list[ParameterSet]:
    """(act, match) cases of activation formats Core AI finalize refuses with a
    FinalizeNodeError. *activation_quantizer* is a regex for the name the mode gives the
    first activation fake-quantizer (finalize names the node it failed on)."""
    return [
        pytest.param(
            QuantizationSpec(dtype=FP4, granularity=PerBlockGranularity(axis=1, block_size=32)),
            rf"Failed to process fake quantization node {activation_quantizer}: .*FP4",
            id="fp4",
        ),
        pytest.param(
            QuantizationSpec(
                dtype=torch.int8, granularity=PerBlockGranularity(axis=1, block_size=32)
            ),
            # the message points to the handler registries (one hint for both modes)
            r"PerBlockGranularity on activations.*\['PerTensorGranularity', "
            r"'PerChannelGranularity'\].*register_eager_activation_export_handler",
            id="per_block",
        ),
    ]


def coreml_gate_cases(weight_quantizer: str) -> list[ParameterSet]:
    """(weight, act, error, match) cases the Core ML backend refuses before changing the
    model. *weight_quantizer* is a regex for the name the mode gives the first weight
    fake-quantizer (the dtype gate names the quantizer it found)."""
    return [
        pytest.param(
            QuantizationSpec(dtype=torch.float8_e4m3fn, granularity=PerChannelGranularity(axis=0)),
            None,
            CoreMLExportError,
            rf"float8_e4m3fn \(found on weight quantizer '{weight_quantizer}'",
            id="fp8_weight",
        ),
        pytest.param(
            W8,
            QuantizationSpec(dtype=torch.int4),
            CoreMLExportError,
            r"torch.int4.*activation",
            id="int4_act",
        ),
        pytest.param(
            W8,
            QuantizationSpec(dtype=torch.int8, granularity=PerChannelGranularity(axis=1)),
            CoreMLExportError,
            r"PerChannelGranularity",
            id="per_channel_act",
        ),
        pytest.param(
            W8,
            QuantizationSpec(
                dtype=torch.int8, granularity=PerBlockGranularity(axis=1, block_size=32)
            ),
            CoreMLExportError,
            r"PerBlockGranularity",
            id="per_block_act",
        ),
        pytest.param(
            QuantizationSpec(
                dtype=torch.int8,
                qscheme="asymmetric",
                qformulation="minval",
                granularity=PerChannelGranularity(axis=0),
            ),
            None,
            ValueError,
            r"qformulation='minval'",
            id="minval",
        ),
        pytest.param(
            W8,
            QuantizationSpec(dtype=torch.int8, qparam_calculator_cls="dynamic"),
            NotImplementedError,
            r"dynamic quantization",
            id="dynamic",
        ),
    ]
