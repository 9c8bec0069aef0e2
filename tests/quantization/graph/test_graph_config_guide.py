"""The config_guide.md examples in graph mode: where each one puts the fake-quantizers.

Every example is prepared on a small model built to match it; the tests check which
values the FQs read, which ops read FQ outputs, and the FQ modules' settings. The YAML
form of an example must give the same placement as its programmatic form.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from graph_helpers import fq_nodes, fqs_reading, node, prepare, read_values
from models import Block, TwoBlocks
from torch import fx, nn

from coreai_opt.quantization import QuantizationSpec, QuantizerConfig
from coreai_opt.quantization._graph.insert import is_fq_node
from coreai_opt.quantization.config import ModuleQuantizerConfig, OpQuantizerConfig
from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QuantizationScheme,
    default_activation_quantization_spec,
    default_weight_quantization_spec,
)

# --------------------------------------------------------------------------- helpers


def fq_module(gm: fx.GraphModule, fq: fx.Node) -> nn.Module:
    """The FQ module an FQ call runs."""
    return gm.get_submodule(str(fq.target))


def weight_fq(gm: fx.GraphModule, param: str) -> nn.Module | None:
    """The FQ module that reads the parameter *param* (e.g. ``"fc.weight"``), or None."""
    found = [
        n
        for n in fq_nodes(gm)
        if n.args[0].op == "get_attr" and n.args[0].target == param  # type: ignore[union-attr]
    ]
    assert len(found) <= 1, f"{param} has {len(found)} FQ calls"
    return fq_module(gm, found[0]) if found else None


def weight_fq_params(gm: fx.GraphModule) -> set[str]:
    """Targets of the parameters that a weight FQ reads."""
    return {
        str(n.args[0].target)  # type: ignore[union-attr]
        for n in fq_nodes(gm)
        if n.args[0].op == "get_attr"  # type: ignore[union-attr]
    }


def activation_fqs(gm: fx.GraphModule) -> list[fx.Node]:
    """FQ calls that read an activation (anything but a ``get_attr``)."""
    return [n for n in fq_nodes(gm) if n.args[0].op != "get_attr"]  # type: ignore[union-attr]


def reads_fq(gm: fx.GraphModule, op: str, index: int = 0) -> bool:
    """True when tensor input *index* of op *op* is the output of an FQ call."""
    return is_fq_node(node(gm, op).all_input_nodes[index])


def placement(gm: fx.GraphModule) -> list[tuple[object, ...]]:
    """A comparable picture of the FQs: per call, what it reads, who reads it, which
    module (numbered by first use) and the module's dtype / granularity / qscheme /
    float_range."""
    first_use: dict[str, int] = {}
    rows = []
    for fq in fq_nodes(gm):
        target = str(fq.target)
        first_use.setdefault(target, len(first_use))
        m = fq_module(gm, fq)
        rows.append(
            (
                fq.args[0].name,  # type: ignore[union-attr]
                tuple(sorted(u.name for u in fq.users)),
                first_use[target],
                m.dtype,
                repr(m.granularity),
                str(m.qscheme),
                tuple(m.qparams_calculator.float_range),
            )
        )
    return rows


def from_yaml(tmp_path: Path, text: str) -> QuantizerConfig:
    """A QuantizerConfig read from a ``config.yaml`` file holding *text*."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = QuantizerConfig.from_yaml(str(path))
    assert config is not None
    return config


def type_key(cls: type) -> str:
    """The fully-qualified class name a module_type_configs key needs."""
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------- models


class ConvAndLinear(nn.Module):
    """A conv branch and a linear → softmax branch (softmax is not a pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(8, 8)

    def forward(self, image: torch.Tensor, vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.conv(image), torch.softmax(self.fc(vec), dim=-1)


def conv_and_linear_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of :class:`ConvAndLinear`."""
    torch.manual_seed(0)
    return torch.randn(2, 3, 6, 6), torch.randn(4, 8)


class SelfAttention(nn.Module):
    """The guide's ``mymodelSelfAttention``: q/k/v projections, softmax(q kᵀ) v."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(self.q(x), self.k(x).transpose(-2, -1))
        return torch.matmul(torch.softmax(scores, dim=-1), self.v(x))


class AttentionModel(nn.Module):
    """Two SelfAttention layers, then a head and a matmul outside any attention layer."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([SelfAttention(), SelfAttention()])
        self.head = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        y = self.head(x)
        return torch.matmul(y, y.transpose(-2, -1))


def attention_inputs() -> torch.Tensor:
    """Input of :class:`AttentionModel` / :class:`MhaModel` style models."""
    torch.manual_seed(0)
    return torch.randn(2, 5, 8)


def matmuls_in(gm: fx.GraphModule, scope_prefix: str) -> list[fx.Node]:
    """The matmul nodes that ran inside the module at *scope_prefix* (or its children)."""
    out = []
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target is not torch.ops.aten.matmul.default:
            continue
        paths = [v[0] for v in (n.meta.get("nn_module_stack") or {}).values()]
        if any(p == scope_prefix or p.startswith(scope_prefix + ".") for p in paths):
            out.append(n)
    return out


class EmbedProject(nn.Module):
    """Embedding → Linear → Conv1d → ConvTranspose1d (channel counts multiple of 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 32)
        self.fc = nn.Linear(32, 64)
        self.conv = nn.Conv1d(64, 32, 1)
        self.deconv = nn.ConvTranspose1d(32, 8, 1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.fc(self.emb(idx)).transpose(1, 2)
        return self.deconv(self.conv(h))


def idx_input() -> torch.Tensor:
    """Token indices for :class:`EmbedProject`."""
    torch.manual_seed(0)
    return torch.randint(0, 10, (2, 5))


class Decoder(nn.Module):
    """``decoder``: one ConvTranspose2d called ``deconv1``."""

    def __init__(self) -> None:
        super().__init__()
        self.deconv1 = nn.ConvTranspose2d(32, 64, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv1(x)


class EncoderDecoder(nn.Module):
    """Conv2d → Linear over channels → decoder.deconv1 (the axis-override example)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 32)
        self.decoder = Decoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.decoder(h)


# --------------------------------------------------------------------------- defaults


def test_default_config_equals_its_explicit_form() -> None:
    """QuantizerConfig() is W8A8: the same placement as the spelled-out defaults."""
    explicit = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_input_spec={"*": default_activation_quantization_spec()},
            op_output_spec={"*": default_activation_quantization_spec()},
            op_state_spec={"weight": default_weight_quantization_spec()},
        )
    )
    gm_default = prepare(ConvAndLinear(), QuantizerConfig(), *conv_and_linear_inputs())
    gm_explicit = prepare(ConvAndLinear(), explicit, *conv_and_linear_inputs())
    assert placement(gm_default) == placement(gm_explicit)
    assert read_values(gm_default) == {
        "image",
        "vec",
        "conv_weight",
        "fc_weight",
        "conv2d",
        "linear",
    }
    for fq in activation_fqs(gm_default):
        m = fq_module(gm_default, fq)
        assert m.dtype == torch.int8 and isinstance(m.granularity, PerTensorGranularity)
    for param in ("conv.weight", "fc.weight"):
        m = weight_fq(gm_default, param)
        assert m is not None and m.granularity == PerChannelGranularity(axis=0)


# --------------------------------------------------------------------------- W_MXFP4_A_FP8

MXFP4_FP8_YAML = """
quantization_spec:
  spec1: &fp8_activation
    dtype: float8_e4m3fn

  spec2: &mxfp4_weight
    dtype: float4_e2m1fn_x2
    granularity: { type: per_block, block_size: 32 }
    scale_dtype: float8_e8m0fnu

quantization_config:
  global_config:
    op_input_spec:
      "*": *fp8_activation
    op_output_spec:
      "*": *fp8_activation
    op_state_spec:
      weight: *mxfp4_weight
"""


def mxfp4_fp8_config() -> QuantizerConfig:
    """The guide's W_MXFP4_A_FP8 example, programmatic form."""
    fp8_activation = QuantizationSpec(dtype=torch.float8_e4m3fn)
    mxfp4_weight = QuantizationSpec(
        dtype=torch.float4_e2m1fn_x2,
        granularity=PerBlockGranularity(block_size=32),
        scale_dtype=torch.float8_e8m0fnu,
    )
    return QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_input_spec={"*": fp8_activation},
            op_output_spec={"*": fp8_activation},
            op_state_spec={"weight": mxfp4_weight},
        )
    )


def test_mxfp4_weights_fp8_activations(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(4, 64)
    gm = prepare(model, mxfp4_fp8_config(), x)
    assert read_values(gm) == {"_0_weight", "_2_weight", "input_1", "relu", "linear_1"}
    for param, blocks in (("0.weight", (32, 2)), ("2.weight", (8, 1))):
        m = weight_fq(gm, param)
        assert m is not None
        assert m.dtype == torch.float4_e2m1fn_x2
        assert m.granularity == PerBlockGranularity(axis=1, block_size=32)  # Linear default
        assert m.qparams_calculator.scale_dtype == torch.float8_e8m0fnu
        scale = m.qparams_calculator.scale
        assert tuple(scale.shape) == blocks
        assert torch.equal(torch.exp2(torch.log2(scale).round()), scale)  # powers of two
    for fq in activation_fqs(gm):
        m = fq_module(gm, fq)
        assert m.dtype == torch.float8_e4m3fn
        assert isinstance(m.granularity, PerTensorGranularity)
        assert m.qscheme == QuantizationScheme.SYMMETRIC
    # linear → relu is one pattern: no FQ between them
    assert not reads_fq(gm, "relu")
    gm_yaml = prepare(model, from_yaml(tmp_path, MXFP4_FP8_YAML), x)
    assert placement(gm_yaml) == placement(gm)


# --------------------------------------------------------------------------- skip linear


SKIP_LINEAR_OP_YAML = """
quantization_config:
  global_config:
    op_type_config:
      linear: null
"""

SKIP_LINEAR_MODULE_YAML = """
quantization_config:
  module_type_configs:
    torch.nn.modules.linear.Linear: null
"""


def _assert_linear_skipped(gm: fx.GraphModule) -> None:
    assert read_values(gm) == {"image", "conv_weight", "conv2d"}
    assert weight_fq(gm, "fc.weight") is None
    linear = node(gm, "linear")
    assert [n.name for n in linear.all_input_nodes] == ["vec", "fc_weight", "fc_bias"]
    assert not fqs_reading(gm, "linear")
    assert weight_fq(gm, "conv.weight") is not None  # the rest stays W8A8


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(
            QuantizerConfig(global_config=ModuleQuantizerConfig(op_type_config={"linear": None})),
            id="op_type_config",
        ),
        pytest.param(
            QuantizerConfig(module_type_configs={"torch.nn.modules.linear.Linear": None}),
            id="module_type_fqn",
        ),
        pytest.param(
            QuantizerConfig(module_type_configs={nn.Linear: None}), id="module_type_class"
        ),
    ],
)
def test_skip_linear(config: QuantizerConfig) -> None:
    _assert_linear_skipped(prepare(ConvAndLinear(), config, *conv_and_linear_inputs()))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(SKIP_LINEAR_OP_YAML, id="op_type_config"),
        pytest.param(SKIP_LINEAR_MODULE_YAML, id="module_type_configs"),
    ],
)
def test_skip_linear_yaml_matches_programmatic(tmp_path: Path, text: str) -> None:
    programmatic = QuantizerConfig(
        global_config=ModuleQuantizerConfig(op_type_config={"linear": None})
    )
    gm = prepare(ConvAndLinear(), programmatic, *conv_and_linear_inputs())
    gm_yaml = prepare(ConvAndLinear(), from_yaml(tmp_path, text), *conv_and_linear_inputs())
    _assert_linear_skipped(gm_yaml)
    assert placement(gm_yaml) == placement(gm)


# --------------------------------------------------------------------------- skip inside a module


def test_skip_softmax_inside_a_module_type_keeps_the_rest_w8a8() -> None:
    """Softmax is no graph-mode pattern, so its neighbours' FQs stay (a decline on one
    side of an edge leaves the other side's FQ): the placement equals W8A8's."""
    x = attention_inputs()
    by_type = QuantizerConfig(
        module_type_configs={SelfAttention: ModuleQuantizerConfig(op_type_config={"softmax": None})}
    )
    by_name = QuantizerConfig(
        module_name_configs={"layers.0": ModuleQuantizerConfig(op_type_config={"softmax": None})}
    )
    gm_default = prepare(AttentionModel(), QuantizerConfig(), x)
    for config in (by_type, by_name):
        gm = prepare(AttentionModel(), config, x)
        assert placement(gm) == placement(gm_default)
        for param in ("layers.0.q.weight", "layers.1.v.weight", "head.weight"):
            assert weight_fq(gm, param) is not None
        # softmax's consumer (the second matmul) still quantizes its input
        assert reads_fq(gm, "matmul_1", 0)


def test_skip_an_op_type_only_inside_a_module_type() -> None:
    """op_type_config {"matmul": None} under mymodelSelfAttention: its matmuls lose
    their own slots (the softmax output is no longer quantized), the outer matmul keeps
    them."""
    x = attention_inputs()
    config = QuantizerConfig(
        module_type_configs={SelfAttention: ModuleQuantizerConfig(op_type_config={"matmul": None})}
    )
    gm = prepare(AttentionModel(), config, x)
    for layer in ("layers.0", "layers.1"):
        scores, context = matmuls_in(gm, layer)
        assert not fqs_reading(gm, scores.name)  # feeds softmax only
        assert not is_fq_node(context.all_input_nodes[0])  # softmax output
        # the projections (linear) still quantize their outputs
        assert is_fq_node(scores.all_input_nodes[0])
    outer = matmuls_in(gm, "")[-1]
    assert not any(
        p.startswith("layers") for p in (v[0] for v in outer.meta["nn_module_stack"].values())
    )
    assert len(fqs_reading(gm, outer.name)) == 1
    assert reads_fq(gm, outer.name, 0)  # the head's output FQ
    for param in ("layers.0.q.weight", "layers.1.k.weight", "head.weight"):
        assert weight_fq(gm, param) is not None


def test_skip_an_op_type_only_inside_a_named_module() -> None:
    x = attention_inputs()
    config = QuantizerConfig(
        module_name_configs={"layers.0": ModuleQuantizerConfig(op_type_config={"matmul": None})}
    )
    gm = prepare(AttentionModel(), config, x)
    scores0, context0 = matmuls_in(gm, "layers.0")
    scores1, context1 = matmuls_in(gm, "layers.1")
    assert not fqs_reading(gm, scores0.name)
    assert not is_fq_node(context0.all_input_nodes[0])
    assert len(fqs_reading(gm, scores1.name)) == 1  # layers.1 keeps W8A8
    assert is_fq_node(context1.all_input_nodes[0])


# --------------------------------------------------------------------------- concat output


class TwoBranchConcat(nn.Module):
    """Two scaled branches joined by ``torch.concat`` (op type ``concat``)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.concat([a * 2, b * 3], dim=1)


def test_skip_only_the_output_of_concat() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    activation_spec = default_activation_quantization_spec()
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_type_config={
                "concat": OpQuantizerConfig(
                    op_input_spec={"*": activation_spec}, op_output_spec=None
                )
            },
        )
    )
    gm = prepare(TwoBranchConcat(), config, a, b)
    concat = node(gm, "concat")
    assert all(is_fq_node(n) for n in concat.all_input_nodes)
    assert not fqs_reading(gm, "concat")
    gm_default = prepare(TwoBranchConcat(), QuantizerConfig(), a, b)
    assert fqs_reading(gm_default, "concat")  # W8A8 quantizes it


# --------------------------------------------------------------------------- only some layers


class LinearPlusConv(nn.Module):
    """A Linear and a Conv1d over the same input, added."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.conv = nn.Conv1d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.conv(x)


ONLY_LINEAR_YAML = """
quantization_spec:
  spec1: &int8_activation
    dtype: int8
    granularity:
      type: per_tensor

  spec2: &int8_weight
    dtype: int8
    granularity:
      type: per_channel

quantization_config:
  global_config: null

  module_type_configs:
    torch.nn.modules.linear.Linear:
      op_input_spec:
        "*": *int8_activation
      op_output_spec:
        "*": *int8_activation
      op_state_spec:
        weight: *int8_weight
"""


def test_quantize_only_linear_layers(tmp_path: Path) -> None:
    int8_activation = QuantizationSpec(dtype="int8", granularity={"type": "per_tensor"})
    int8_weight = QuantizationSpec(dtype="int8", granularity={"type": "per_channel"})
    config = QuantizerConfig(
        global_config=None,
        module_type_configs={
            "torch.nn.modules.linear.Linear": ModuleQuantizerConfig(
                op_input_spec={"*": int8_activation},
                op_output_spec={"*": int8_activation},
                op_state_spec={"weight": int8_weight},
            )
        },
    )
    torch.manual_seed(0)
    x = torch.randn(3, 2, 8)
    gm = prepare(LinearPlusConv(), config, x)
    assert read_values(gm) == {"x", "fc_weight", "linear"}
    conv = node(gm, "conv1d")
    assert [n.name for n in conv.all_input_nodes] == ["x", "conv_weight", "conv_bias"]
    assert not fqs_reading(gm, "conv1d") and not fqs_reading(gm, "add")
    fc_w = weight_fq(gm, "fc.weight")
    assert fc_w is not None and fc_w.granularity == PerChannelGranularity(axis=0)  # resolved
    gm_yaml = prepare(LinearPlusConv(), from_yaml(tmp_path, ONLY_LINEAR_YAML), x)
    assert placement(gm_yaml) == placement(gm)


ONLY_OP_NAME_YAML = """
quantization_spec:
  spec1: &int8_activation
    dtype: int8
    granularity:
      type: per_tensor

  spec2: &int8_weight
    dtype: int8
    granularity:
      type: per_channel

quantization_config:
  global_config:
    op_input_spec: null
    op_output_spec:
    op_state_spec:
    op_name_config:
      linear_2:
        op_input_spec:
          "*": *int8_activation
        op_output_spec:
          "*": *int8_activation
        op_state_spec:
          weight: *int8_weight
"""


def test_quantize_only_one_op_by_its_fx_name(tmp_path: Path) -> None:
    """The guide's ``linear_23``: here ``linear_2``, the third Linear's FX node."""
    int8_activation = QuantizationSpec(dtype="int8", granularity={"type": "per_tensor"})
    int8_weight = QuantizationSpec(dtype="int8", granularity={"type": "per_channel"})
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_input_spec=None,
            op_output_spec=None,
            op_state_spec=None,
            op_name_config={
                "linear_2": OpQuantizerConfig(
                    op_input_spec={"*": int8_activation},
                    op_output_spec={"*": int8_activation},
                    op_state_spec={"weight": int8_weight},
                )
            },
        )
    )
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(4)])
    x = torch.randn(3, 8)
    gm = prepare(model, config, x)
    assert read_values(gm) == {"linear_1", "_2_weight", "linear_2"}
    assert weight_fq_params(gm) == {"2.weight"}
    assert reads_fq(gm, "linear_2", 0) and reads_fq(gm, "linear_2", 1)
    assert reads_fq(gm, "linear_3", 0)  # linear_2's output FQ
    assert not reads_fq(gm, "linear", 0) and not reads_fq(gm, "linear_1", 0)
    assert not fqs_reading(gm, "linear_3")
    gm_yaml = prepare(model, from_yaml(tmp_path, ONLY_OP_NAME_YAML), x)
    assert placement(gm_yaml) == placement(gm)


# --------------------------------------------------------------------------- weight-only


@pytest.mark.parametrize(
    ("config", "dtype", "expected"),
    [
        pytest.param(
            QuantizerConfig.presets.w8(),
            torch.int8,
            {
                "emb.weight": (PerChannelGranularity(axis=0), (10, 1)),
                "fc.weight": (PerChannelGranularity(axis=0), (64, 1)),
                "conv.weight": (PerChannelGranularity(axis=0), (32, 1, 1)),
                "deconv.weight": (PerChannelGranularity(axis=1), (1, 8, 1)),
            },
            id="w8",
        ),
        pytest.param(
            QuantizerConfig.presets.w4_per_block(),
            torch.int4,
            {
                "emb.weight": (PerBlockGranularity(axis=1, block_size=32), (10, 1)),
                "fc.weight": (PerBlockGranularity(axis=1, block_size=32), (64, 1)),
                "conv.weight": (PerBlockGranularity(axis=1, block_size=32), (32, 2, 1)),
                "deconv.weight": (PerBlockGranularity(axis=0, block_size=32), (1, 8, 1)),
            },
            id="w4_per_block",
        ),
    ],
)
def test_weight_only_presets(
    config: QuantizerConfig,
    dtype: torch.dtype,
    expected: dict[str, tuple[object, tuple[int, ...]]],
) -> None:
    gm = prepare(EmbedProject(), config, idx_input())
    assert not activation_fqs(gm)
    assert weight_fq_params(gm) == set(expected)
    for param, (granularity, scale_shape) in expected.items():
        m = weight_fq(gm, param)
        assert m is not None
        assert m.dtype == dtype
        assert m.granularity == granularity
        assert tuple(m.qparams_calculator.scale.shape) == scale_shape


def test_preset_with_a_module_type_override_and_chaining() -> None:
    """presets.w4() then Embedding → presets.w8(); the chained form is the same."""
    config = QuantizerConfig.presets.w4()
    config.set_module_type(nn.Embedding, ModuleQuantizerConfig.presets.w8())
    chained = QuantizerConfig.presets.w4().set_module_type(
        nn.Embedding, ModuleQuantizerConfig.presets.w8()
    )
    gm = prepare(EmbedProject(), config, idx_input())
    assert not activation_fqs(gm)
    emb = weight_fq(gm, "emb.weight")
    assert emb is not None and emb.dtype == torch.int8
    for param in ("fc.weight", "conv.weight", "deconv.weight"):
        m = weight_fq(gm, param)
        assert m is not None and m.dtype == torch.int4
    assert placement(prepare(EmbedProject(), chained, idx_input())) == placement(gm)


def test_only_for_and_without_equal_their_setter_forms() -> None:
    only_for = QuantizerConfig.presets.w4().only_for(nn.Linear, nn.Conv1d)
    setters = QuantizerConfig(global_config=None)
    setters.set_module_type(nn.Linear, ModuleQuantizerConfig.presets.w4())
    setters.set_module_type(nn.Conv1d, ModuleQuantizerConfig.presets.w4())
    gm = prepare(EmbedProject(), only_for, idx_input())
    assert weight_fq_params(gm) == {"fc.weight", "conv.weight"}
    assert placement(prepare(EmbedProject(), setters, idx_input())) == placement(gm)

    without = QuantizerConfig.presets.w4().without(nn.Embedding, "deconv")
    setters = QuantizerConfig.presets.w4()
    setters.set_module_type(nn.Embedding, None)
    setters.set_module_name("deconv", None)
    gm = prepare(EmbedProject(), without, idx_input())
    assert weight_fq_params(gm) == {"fc.weight", "conv.weight"}
    assert placement(prepare(EmbedProject(), setters, idx_input())) == placement(gm)


EXPLICIT_TYPES_YAML = """
quantization_spec:
  spec1: &int8_weight
    dtype: int8
    granularity:
      type: per_channel

  spec2: &int4_weight
    dtype: int4
    granularity:
      type: per_block
      block_size: 32

quantization_config:
  global_config: null

  module_type_configs:
    torch.nn.modules.linear.Linear:
      op_input_spec:
      op_output_spec:
      op_state_spec:
        weight: *int4_weight

    torch.nn.modules.sparse.Embedding:
      op_input_spec:
      op_output_spec:
      op_state_spec:
        weight: *int8_weight
"""


def test_explicit_specs_per_module_type(tmp_path: Path) -> None:
    config = QuantizerConfig(global_config=None)
    linear_config = ModuleQuantizerConfig(
        op_input_spec=None,
        op_output_spec=None,
        op_state_spec={
            "weight": QuantizationSpec(
                dtype=torch.int4, granularity=PerBlockGranularity(block_size=32)
            )
        },
    )
    embedding_config = ModuleQuantizerConfig(
        op_input_spec=None,
        op_output_spec=None,
        op_state_spec={
            "weight": QuantizationSpec(dtype=torch.int8, granularity=PerChannelGranularity())
        },
    )
    config.set_module_type("torch.nn.modules.linear.Linear", linear_config)
    config.set_module_type("torch.nn.modules.sparse.Embedding", embedding_config)
    gm = prepare(EmbedProject(), config, idx_input())
    assert not activation_fqs(gm)
    assert weight_fq_params(gm) == {"emb.weight", "fc.weight"}
    fc, emb = weight_fq(gm, "fc.weight"), weight_fq(gm, "emb.weight")
    assert fc is not None and emb is not None
    assert fc.dtype == torch.int4 and fc.granularity == PerBlockGranularity(axis=1, block_size=32)
    assert emb.dtype == torch.int8 and emb.granularity == PerChannelGranularity(axis=0)
    gm_yaml = prepare(EmbedProject(), from_yaml(tmp_path, EXPLICIT_TYPES_YAML), idx_input())
    assert placement(gm_yaml) == placement(gm)


# --------------------------------------------------------------------------- module boundaries


class MhaModel(nn.Module):
    """nn.MultiheadAttention on separate query / key / value inputs plus a float mask,
    followed by a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.post = nn.Linear(8, 8)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        out, _ = self.mha(q, k, v, attn_mask=mask, need_weights=False)
        return self.post(out)


def mha_inputs() -> tuple[torch.Tensor, ...]:
    """query (2, 5, 8), key / value (2, 6, 8), attn_mask (5, 6)."""
    torch.manual_seed(0)
    return torch.randn(2, 5, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8), torch.randn(5, 6)


MHA_BOUNDARY_YAML = """
quantization_spec:
  spec1: &int8_activation
    dtype: int8
    granularity:
      type: per_tensor

quantization_config:
  global_config:
    op_input_spec:
      "*": *int8_activation
    op_output_spec:
      "*": *int8_activation

  module_type_configs:
    torch.nn.modules.activation.MultiheadAttention:
      op_input_spec:
      op_output_spec:

      module_input_spec:
        0: *int8_activation
        1: *int8_activation
        2: *int8_activation
      module_output_spec:
        "*": *int8_activation
"""


def test_module_boundary_specs_on_multihead_attention(tmp_path: Path) -> None:
    int8_activation = QuantizationSpec(dtype="int8", granularity={"type": "per_tensor"})
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_input_spec={"*": int8_activation},
            op_output_spec={"*": int8_activation},
        ),
        module_type_configs={
            "torch.nn.modules.activation.MultiheadAttention": ModuleQuantizerConfig(
                op_input_spec=None,
                op_output_spec=None,
                module_input_spec={0: int8_activation, 1: int8_activation, 2: int8_activation},
                module_output_spec={"*": int8_activation},
            )
        },
    )
    inputs = mha_inputs()
    gm = prepare(MhaModel(), config, *inputs)
    act_reads = {n.args[0].name for n in activation_fqs(gm)}  # type: ignore[union-attr]
    inside = [
        n
        for n in gm.graph.nodes
        if n.op == "call_function"
        and any(v[0] == "mha" for v in (n.meta.get("nn_module_stack") or {}).values())
    ]
    mha_out = inside[-1]  # the attention output, the only value leaving the module
    assert [u.name for u in mha_out.users if u not in inside] != []
    # query / key / value and the attention output; not the mask, nothing inside
    assert act_reads == {"q", "k", "v", mha_out.name, "linear_4"}
    assert not fqs_reading(gm, "mask")
    assert not any(fqs_reading(gm, n.name) for n in inside if n is not mha_out)
    for fq in activation_fqs(gm):
        m = fq_module(gm, fq)
        assert m.dtype == torch.int8 and isinstance(m.granularity, PerTensorGranularity)
    # the post Linear reads the module output FQ (one FQ for that edge)
    assert reads_fq(gm, "linear_4", 0)
    assert node(gm, "linear_4").all_input_nodes[0].args[0] is mha_out
    gm_yaml = prepare(MhaModel(), from_yaml(tmp_path, MHA_BOUNDARY_YAML), *inputs)
    assert placement(gm_yaml) == placement(gm)


# --------------------------------------------------------------------------- axis override


AXIS_OVERRIDE_YAML = """
quantization_config:
  global_config:
    op_state_spec:
      weight:
        dtype: int4
        granularity:
          type: per_block
          block_size: 32
  module_name_configs:
    decoder.deconv1:
      op_state_spec:
        weight:
          dtype: int4
          granularity:
            type: per_block
            axis: 1
            block_size: 32
"""


def test_override_the_default_axis_for_one_layer(tmp_path: Path) -> None:
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_state_spec={
                "weight": QuantizationSpec(
                    dtype=torch.int4, granularity=PerBlockGranularity(block_size=32)
                )
            },
        ),
        module_name_configs={
            "decoder.deconv1": ModuleQuantizerConfig(
                op_state_spec={
                    "weight": QuantizationSpec(
                        dtype=torch.int4, granularity=PerBlockGranularity(axis=1, block_size=32)
                    )
                },
            ),
        },
    )
    torch.manual_seed(0)
    x = torch.randn(1, 32, 4, 4)
    gm = prepare(EncoderDecoder(), config, x)
    expected = {
        "conv.weight": (PerBlockGranularity(axis=1, block_size=32), (32, 1, 1, 1)),
        "fc.weight": (PerBlockGranularity(axis=1, block_size=32), (32, 1)),
        # ConvTranspose2d weight (C_in=32, C_out=64, 2, 2): default axis 0 → (1, 64, 1, 1);
        # the explicit axis=1 blocks C_out instead
        "decoder.deconv1.weight": (PerBlockGranularity(axis=1, block_size=32), (32, 2, 1, 1)),
    }
    assert weight_fq_params(gm) == set(expected)
    for param, (granularity, scale_shape) in expected.items():
        m = weight_fq(gm, param)
        assert m is not None and m.dtype == torch.int4
        assert m.granularity == granularity
        assert tuple(m.qparams_calculator.scale.shape) == scale_shape
    # activations keep the default W8A8 activation spec
    assert activation_fqs(gm)
    gm_yaml = prepare(EncoderDecoder(), from_yaml(tmp_path, AXIS_OVERRIDE_YAML), x)
    assert placement(gm_yaml) == placement(gm)

    without_override = QuantizerConfig(global_config=config.global_config)
    gm_default = prepare(EncoderDecoder(), without_override, x)
    deconv = weight_fq(gm_default, "decoder.deconv1.weight")
    assert deconv is not None
    assert deconv.granularity == PerBlockGranularity(axis=0, block_size=32)
    assert tuple(deconv.qparams_calculator.scale.shape) == (1, 64, 1, 1)


# --------------------------------------------------------------------------- precedence


def test_a_disabled_scope_is_re_enabled_by_a_more_specific_level() -> None:
    """Block → None disables both blocks; a module_name config re-enables one linear."""
    config = QuantizerConfig(
        module_type_configs={type_key(Block): None},
        module_name_configs={"submodule_a.linear1": ModuleQuantizerConfig()},
    )
    torch.manual_seed(0)
    x = torch.randn(3, 16)
    gm = prepare(TwoBlocks(), config, x)
    assert weight_fq_params(gm) == {"submodule_a.linear1.weight"}
    a_linear1 = next(
        n
        for n in gm.graph.nodes
        if n.op == "call_function" and reads_weight(n, "submodule_a.linear1.weight")
    )
    assert reads_fq(gm, a_linear1.name, 0)
    # the add at the root stays under the global W8A8
    assert reads_fq(gm, "add", 0) and reads_fq(gm, "add", 1) and fqs_reading(gm, "add")


def reads_weight(op: fx.Node, param: str) -> bool:
    """True when *op* reads the parameter *param* (directly or through its FQ)."""
    for inp in op.all_input_nodes:
        src = inp.args[0] if is_fq_node(inp) else inp
        if isinstance(src, fx.Node) and src.op == "get_attr" and src.target == param:
            return True
    return False
