"""Config semantics in eager mode (behaviour.md §4-§6 with §12, config_guide.md's eager
examples): which spec reaches which tensor.

Every test reads the placed fake-quantizers back (paths and quantized dtypes); the spec a
tensor got is told apart by its dtype (int8 defaults vs int4 / uint8 overrides).
"""

from __future__ import annotations

import logging
import textwrap

import pydantic
import pytest
import torch
import torch.nn.functional as F
from eager_helpers import eager_config, fq_dtypes, fq_paths, prepare_eager, warnings_of
from eager_models import Tied
from torch import nn

from coreai_opt.quantization import (
    ModuleQuantizerConfig,
    QuantizationSpec,
    Quantizer,
    QuantizerConfig,
)
from coreai_opt.quantization.config import KVCacheQuantConfig, OpQuantizerConfig
from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
)

INT4 = QuantizationSpec(dtype="int4")
UINT8 = QuantizationSpec(dtype="uint8", qscheme="asymmetric")
INT8 = QuantizationSpec(dtype="int8")
I8, I4, U8 = torch.int8, torch.int4, torch.uint8


class LinearAdd(nn.Module):
    """``fc(x) + y``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + y


def linear_add_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of :class:`LinearAdd`."""
    return torch.randn(2, 4), torch.randn(2, 4)


def prepare_linear_add(global_config: ModuleQuantizerConfig | None) -> dict[str, torch.dtype]:
    """Prepare a :class:`LinearAdd` with *global_config*; its fake-quantizer dtypes."""
    _, model = prepare_eager(LinearAdd(), linear_add_inputs(), eager_config(global_config))
    return fq_dtypes(model)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            ModuleQuantizerConfig(),
            {
                "fc.linear_quantize_input": I8,
                "fc.linear_quantize_output_0": I8,
                "fc.parametrizations.weight.0": I8,
                "add_quantize_input": I8,
                "add_quantize_other": I8,
                "add_quantize_output_0": I8,
            },
        ),
        (
            ModuleQuantizerConfig(op_input_spec={1: INT4}, op_output_spec=None, op_state_spec=None),
            {"add_quantize_other": I4},
        ),
        (
            ModuleQuantizerConfig(
                op_input_spec={0: None, "*": INT4}, op_output_spec=None, op_state_spec={"*": UINT8}
            ),
            {
                "add_quantize_other": I4,
                "fc.parametrizations.weight.0": U8,
                "fc.parametrizations.bias.0": U8,
            },
        ),
        (
            ModuleQuantizerConfig(
                op_input_spec={"0": INT4, "*": UINT8},
                op_output_spec={0: INT4},
                op_state_spec={"bias": UINT8, "weight": None},
            ),
            {
                "fc.linear_quantize_input": I4,
                "fc.linear_quantize_output_0": I4,
                "fc.parametrizations.bias.0": U8,
                "add_quantize_input": I4,
                "add_quantize_other": U8,
                "add_quantize_output_0": I4,
            },
        ),
        (
            ModuleQuantizerConfig(op_input_spec=None, op_output_spec=None, op_state_spec=None),
            {},
        ),
        (None, {}),
    ],
    ids=["defaults", "index-1", "decline-0-star", "digit-key-bias", "all-none", "global-none"],
)
def test_op_specs_by_index_star_and_none(
    config: ModuleQuantizerConfig | None, expected: dict[str, torch.dtype]
) -> None:
    """op_input_spec / op_output_spec by schema position and ``"*"`` (an explicit key beats
    ``"*"``; a None value declines), op_state_spec by attribute name and ``"*"``; an
    explicit None field or a None global config quantizes nothing."""
    assert prepare_linear_add(config) == expected


def test_explicit_none_field_is_stored_as_star_none() -> None:
    """0.3.0: an explicit None spec field is ``{"*": None}``; omitted means the defaults."""
    config = ModuleQuantizerConfig(op_input_spec=None)
    assert config.op_input_spec == {"*": None}
    assert set(config.op_output_spec) == {"*"} and config.op_output_spec["*"] is not None


class Two(nn.Module):
    """Two linears and two adds at the top level."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.fc1(x) + x
        return self.fc2(a) + a


def test_op_type_and_op_name_config() -> None:
    """op_type_config by registry key; op_name_config by regex fullmatch on
    ``"<module>.<op>"`` beats op_type_config, and the last matching key wins."""
    x = torch.randn(2, 4)
    off = OpQuantizerConfig(op_input_spec=None, op_output_spec=None, op_state_spec=None)
    config = eager_config(
        ModuleQuantizerConfig(
            op_type_config={
                "add": OpQuantizerConfig(op_input_spec={"*": INT4}, op_output_spec=None)
            },
            op_name_config={
                "add_1": off,
                r"fc\d\.linear": OpQuantizerConfig(op_state_spec={"weight": INT4}),
                r"fc2\..*": OpQuantizerConfig(op_state_spec={"weight": UINT8}, op_output_spec=None),
                "fc1": off,  # matches no op name (fullmatch): no effect
            },
        )
    )
    _, model = prepare_eager(Two(), (x,), config)
    assert fq_dtypes(model) == {
        "fc1.linear_quantize_input": I8,
        "fc1.linear_quantize_output_0": I8,
        "fc1.parametrizations.weight.0": I4,
        "add_quantize_input": I4,
        "add_quantize_other": I4,
        "fc2.linear_quantize_input": I8,
        "fc2.parametrizations.weight.0": U8,
    }


def test_op_type_config_none_skips_linear_as_in_config_guide() -> None:
    """config_guide: ``op_type_config={"linear": None}`` and
    ``module_type_configs={"torch.nn.modules.linear.Linear": None}`` both leave the
    linears float (the adds stay quantized)."""
    x = torch.randn(2, 4)
    by_op = eager_config(ModuleQuantizerConfig(op_type_config={"linear": None}))
    by_module = eager_config(module_type_configs={"torch.nn.modules.linear.Linear": None})
    expected = {
        "add_quantize_input",
        "add_quantize_other",
        "add_quantize_output_0",
        "add_1_quantize_input",
        "add_1_quantize_other",
        "add_1_quantize_output_0",
    }
    for config in (by_op, by_module):
        _, model = prepare_eager(Two(), (x,), config)
        assert fq_paths(model) == expected


class Attention(nn.Module):
    """A self-attention-like block: projections, matmul, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(-1, -2)
        return F.softmax(scores, dim=-1) @ x


class Encoder(nn.Module):
    """Two attention blocks and a softmax of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ModuleList([Attention(), Attention()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layer:
            x = block(x)
        return F.softmax(x, dim=-1)


def _softmax_fqs(model: nn.Module) -> set[str]:
    return {p for p in fq_paths(model) if "softmax" in p}


def test_skip_softmax_in_module_type_and_module_name() -> None:
    """config_guide examples 3 and 4 in eager mode, with the softmax quantized globally
    (an optional type): declined inside every Attention (by type) or in one block (by
    name); everything else keeps its quantization."""
    x = torch.randn(2, 5, 8)
    enable = {"softmax": OpQuantizerConfig()}
    skip = ModuleQuantizerConfig(op_type_config={"softmax": None})
    everywhere = eager_config(ModuleQuantizerConfig(op_type_config=enable))
    _, model = prepare_eager(Encoder(), (x,), everywhere)
    all_softmax = {
        "softmax_quantize_input",
        "softmax_quantize_output_0",
        "layer.0.softmax_quantize_input",
        "layer.0.softmax_quantize_output_0",
        "layer.1.softmax_quantize_input",
        "layer.1.softmax_quantize_output_0",
    }
    assert _softmax_fqs(model) == all_softmax
    by_type = eager_config(
        ModuleQuantizerConfig(op_type_config=enable), module_type_configs={Attention: skip}
    )
    _, model = prepare_eager(Encoder(), (x,), by_type)
    assert _softmax_fqs(model) == {"softmax_quantize_input", "softmax_quantize_output_0"}
    assert "layer.0.q.linear_quantize_input" in fq_paths(model)
    by_name = eager_config(
        ModuleQuantizerConfig(op_type_config=enable), module_name_configs={r"layer\.0": skip}
    )
    _, model = prepare_eager(Encoder(), (x,), by_name)
    assert _softmax_fqs(model) == all_softmax - {
        "layer.0.softmax_quantize_input",
        "layer.0.softmax_quantize_output_0",
    }


class Concat(nn.Module):
    """``torch.cat`` of two linear outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=-1)


def test_concat_inputs_only() -> None:
    """config_guide example 5 in eager mode (the eager op type of torch.cat / concat is
    ``cat``): all list elements quantized, the output not."""
    config = eager_config(
        ModuleQuantizerConfig(
            op_type_config={
                "cat": OpQuantizerConfig(op_input_spec={"*": INT4}, op_output_spec=None)
            }
        )
    )
    _, model = prepare_eager(Concat(), (torch.randn(2, 4),), config)
    dtypes = fq_dtypes(model)
    assert dtypes["cat_quantize_tensors_0"] == I4 and dtypes["cat_quantize_tensors_1"] == I4
    assert not any(p.startswith("cat_quantize_output") for p in dtypes)


def test_quantize_only_linear_layers_programmatic_and_yaml() -> None:
    """config_guide: global_config None + a Linear module-type config, in Python and in
    YAML (anchors in quantization_spec), give the same placement: only the linears."""
    int8_activation = QuantizationSpec(dtype="int8", granularity={"type": "per_tensor"})
    int8_weight = QuantizationSpec(dtype="int8", granularity={"type": "per_channel"})
    programmatic = QuantizerConfig(
        execution_mode="eager",
        global_config=None,
        module_type_configs={
            "torch.nn.modules.linear.Linear": ModuleQuantizerConfig(
                op_input_spec={"*": int8_activation},
                op_output_spec={"*": int8_activation},
                op_state_spec={"weight": int8_weight},
            )
        },
    )
    yaml_config = QuantizerConfig.from_yaml(
        textwrap.dedent(
            """
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
              execution_mode: eager
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
        )
    )
    x = torch.randn(2, 4)
    expected = {
        f"{fc}.{name}"
        for fc in ("fc1", "fc2")
        for name in (
            "linear_quantize_input",
            "linear_quantize_output_0",
            "parametrizations.weight.0",
        )
    }
    for config in (programmatic, yaml_config):
        _, model = prepare_eager(Two(), (x,), config)
        assert fq_paths(model) == expected
        assert model.fc1.parametrizations.weight[0].granularity == PerChannelGranularity(axis=0)


def test_quantize_only_one_op_by_name() -> None:
    """config_guide: every spec None globally, one op enabled through op_name_config."""
    spec = QuantizationSpec(dtype="int8", granularity={"type": "per_tensor"})
    config = eager_config(
        ModuleQuantizerConfig(
            op_input_spec=None,
            op_output_spec=None,
            op_state_spec=None,
            op_name_config={
                r"fc2\.linear": OpQuantizerConfig(
                    op_input_spec={"*": spec},
                    op_output_spec={"*": spec},
                    op_state_spec={"weight": QuantizationSpec(granularity={"type": "per_channel"})},
                )
            },
        )
    )
    _, model = prepare_eager(Two(), (torch.randn(2, 4),), config)
    assert fq_paths(model) == {
        "fc2.linear_quantize_input",
        "fc2.linear_quantize_output_0",
        "fc2.parametrizations.weight.0",
    }


class EmbedLinear(nn.Module):
    """Embedding then linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 8)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(idx))


def test_presets_set_module_type_only_for_without() -> None:
    """config_guide: presets (weight-only) with set_module_type / only_for / without."""
    idx = torch.randint(0, 10, (2, 3))
    w4_w8 = QuantizerConfig.presets.w4(execution_mode="eager").set_module_type(
        nn.Embedding, ModuleQuantizerConfig.presets.w8()
    )
    _, model = prepare_eager(EmbedLinear(), (idx,), w4_w8)
    assert fq_dtypes(model) == {
        "emb.parametrizations.weight.0": I8,
        "fc.parametrizations.weight.0": I4,
    }
    only = QuantizerConfig.presets.w8(execution_mode="eager").only_for(nn.Embedding)
    _, model = prepare_eager(EmbedLinear(), (idx,), only)
    assert fq_dtypes(model) == {"emb.parametrizations.weight.0": I8}
    without = eager_config().without(nn.Embedding, "fc")
    _, model = prepare_eager(EmbedLinear(), (idx,), without)
    assert fq_dtypes(model) == {}
    partial = eager_config().without("fc")
    _, model = prepare_eager(EmbedLinear(), (idx,), partial)
    assert fq_paths(model) == {"emb.parametrizations.weight.0", "emb.embedding_quantize_output_0"}


class Block(nn.Module):
    """Two linears."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class Stack(nn.Module):
    """Two blocks and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.other = Block()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.other(self.block(x)))


def test_module_name_beats_module_type_beats_global() -> None:
    """Precedence: module_name_configs > module_type_configs > global_config; a module's
    config is inherited by its descendants."""
    config = eager_config(
        ModuleQuantizerConfig(op_state_spec={"weight": UINT8}),
        module_type_configs={Block: ModuleQuantizerConfig(op_state_spec={"weight": INT4})},
        module_name_configs={"other": ModuleQuantizerConfig(op_state_spec={"weight": INT8})},
    )
    _, model = prepare_eager(Stack(), (torch.randn(2, 4),), config)
    dtypes = fq_dtypes(model)
    weights = {k: v for k, v in dtypes.items() if "parametrizations" in k}
    assert weights == {
        "block.fc1.parametrizations.weight.0": I4,
        "block.fc2.parametrizations.weight.0": I4,
        "other.fc1.parametrizations.weight.0": I8,
        "other.fc2.parametrizations.weight.0": I8,
        "head.parametrizations.weight.0": U8,
    }


def test_module_input_and_output_spec_override_at_boundaries() -> None:
    """module_input_spec / module_output_spec replace the op spec of the op that reads a
    module input / produces a module output (innermost matching module first); an
    explicit None declines there; inner tensors keep the op specs."""
    config = eager_config(
        module_name_configs={
            "block": ModuleQuantizerConfig(
                module_input_spec={0: INT4}, module_output_spec={0: None}
            ),
            "other": ModuleQuantizerConfig(module_output_spec={"*": UINT8}),
        }
    )
    _, model = prepare_eager(Stack(), (torch.randn(2, 4),), config)
    dtypes = fq_dtypes(model)
    assert dtypes["block.fc1.linear_quantize_input"] == I4
    assert dtypes["block.fc1.linear_quantize_output_0"] == I8
    assert dtypes["block.fc2.linear_quantize_input"] == I8
    assert "block.fc2.linear_quantize_output_0" not in dtypes
    assert dtypes["other.fc1.linear_quantize_input"] == I8  # not block's output spec
    assert dtypes["other.fc2.linear_quantize_output_0"] == U8
    assert dtypes["head.linear_quantize_input"] == I8


class Squash(nn.Module):
    """tanh (never intercepted) then ``* 1.5``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * 1.5


class SquashNet(nn.Module):
    """Squash between the input and a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.squash = Squash()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.squash(x))


def test_module_boundary_spec_on_tensor_no_intercepted_op_reads() -> None:
    """A module input that only reaches a non-intercepted op (tanh) is fake-quantized in the
    module's hooks (``input_quantize_0``); the output spec goes to the op producing it."""
    config = eager_config(
        module_type_configs={
            Squash: ModuleQuantizerConfig(
                op_input_spec=None,
                op_output_spec=None,
                module_input_spec={0: INT4},
                module_output_spec={"*": UINT8},
            )
        }
    )
    x = torch.randn(2, 4)
    _, model = prepare_eager(SquashNet(), (x,), config)
    dtypes = fq_dtypes(model)
    assert dtypes["squash.input_quantize_0"] == I4
    assert dtypes["squash.mul_quantize_output_0"] == U8
    assert "squash.mul_quantize_input" not in dtypes
    sq, fc = model.squash, model.fc
    with torch.no_grad():
        h = sq.mul_quantize_output_0(torch.tanh(sq.input_quantize_0(x)) * 1.5)
        h = fc.linear_quantize_output_0(F.linear(fc.linear_quantize_input(h), fc.weight, fc.bias))
        assert torch.equal(model(x), h)


class Mha(nn.Module):
    """nn.MultiheadAttention called with query = key = value (sequence first)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x)[0]


def test_config_guide_module_boundary_example_multihead_attention(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """config_guide's module-boundary example: inside MultiheadAttention only the boundary
    tensors are quantized (query = key = value is one tensor: the first index wins, with
    a log warning); its out-projection weight keeps the op_state_spec default."""
    act = QuantizationSpec(dtype="int8", granularity={"type": "per_tensor"})
    config = eager_config(
        ModuleQuantizerConfig(op_input_spec={"*": act}, op_output_spec={"*": act}),
        module_type_configs={
            "torch.nn.modules.activation.MultiheadAttention": ModuleQuantizerConfig(
                op_input_spec=None,
                op_output_spec=None,
                module_input_spec={0: act, 1: act, 2: act},
                module_output_spec={"*": act},
            )
        },
    )
    with caplog.at_level(logging.WARNING):
        _, model = prepare_eager(Mha(), (torch.randn(5, 2, 8),), config)
    assert "first index wins" in caplog.text
    paths = fq_paths(model)
    inside = {p for p in paths if p.startswith("attn.")}
    assert "attn.out_proj.parametrizations.weight.0" in inside
    activation = inside - {"attn.out_proj.parametrizations.weight.0"}
    # One FQ for the (single) input tensor, one per output tensor; nothing else inside.
    inputs = {p for p in activation if "input" in p}
    outputs = activation - inputs
    assert len(inputs) == 1 and len(outputs) == 2, activation


def test_no_log_warning_without_module_level_specs(caplog: pytest.LogCaptureFixture) -> None:
    """The "same tensor at several module inputs" warning concerns module-level specs
    only: W8A8 on ``attn(x, x, x)`` logs nothing."""
    with caplog.at_level(logging.WARNING):
        prepare_eager(Mha(), (torch.randn(5, 2, 8),))
    assert "first index wins" not in caplog.text


def test_module_state_spec() -> None:
    """module_state_spec of the owning module beats op_state_spec; None declines."""
    per_tensor_int4 = QuantizationSpec(dtype="int4", granularity=PerTensorGranularity())
    config = eager_config(
        module_type_configs={
            nn.Linear: ModuleQuantizerConfig(module_state_spec={"weight": per_tensor_int4})
        },
        module_name_configs={"head": ModuleQuantizerConfig(module_state_spec={"weight": None})},
    )
    _, model = prepare_eager(Stack(), (torch.randn(2, 4),), config)
    weights = {k: v for k, v in fq_dtypes(model).items() if "parametrizations" in k}
    assert weights == {
        f"{b}.{fc}.parametrizations.weight.0": I4
        for b in ("block", "other")
        for fc in ("fc1", "fc2")
    }
    assert model.block.fc1.parametrizations.weight[0].granularity == PerTensorGranularity()
    assert "head.linear_quantize_input" in fq_paths(model)


def test_tied_weights_share_one_fake_quantizer() -> None:
    """A weight shared by two modules gets one fake-quantizer, parametrized on both owners
    (one ``original``), and both reads are fake-quantized."""
    idx = torch.randint(0, 6, (2, 3))
    _, model = prepare_eager(Tied(), (idx,))
    emb, head = model.emb.parametrizations.weight, model.head.parametrizations.weight
    assert emb[0] is head[0]
    assert emb.original is head.original
    assert torch.equal(model.emb.weight, model.head.weight)
    keys = set(model.state_dict())
    assert {"emb.parametrizations.weight.original", "head.parametrizations.weight.original"} <= keys
    with torch.no_grad():
        e = model.emb.embedding_quantize_output_0(F.embedding(idx, model.emb.weight))
        h = model.head
        expected = h.linear_quantize_output_0(F.linear(h.linear_quantize_input(e), h.weight))
        assert torch.equal(model(idx), expected)
        assert not torch.equal(model.emb.weight, emb.original)


def test_tied_weight_takes_highest_priority_owner_spec() -> None:
    """A tied state takes the module_state_spec of its highest-priority owner
    (module_name before module_type)."""
    idx = torch.randint(0, 6, (2, 3))
    config = eager_config(
        module_type_configs={
            nn.Embedding: ModuleQuantizerConfig(module_state_spec={"weight": UINT8})
        },
        module_name_configs={"head": ModuleQuantizerConfig(module_state_spec={"weight": INT4})},
    )
    _, model = prepare_eager(Tied(), (idx,), config)
    assert model.emb.parametrizations.weight[0].dtype == I4


class CrossAlias(nn.Module):
    """A linear whose weight is also registered on another module as ``kernel``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Module()
        self.b.kernel = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x)


class LocalAlias(nn.Module):
    """One parameter under two names of the same module; forward reads the alias."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 4))
        self.kernel = self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.kernel)


@pytest.mark.parametrize(
    ("model_cls", "specs", "winner", "expected"),
    [
        (CrossAlias, {"kernel": INT8, "weight": INT4}, "weight", I4),
        (CrossAlias, {"weight": INT4, "kernel": UINT8}, "kernel", U8),
        (LocalAlias, {"weight": INT8, "kernel": INT4}, "kernel", I4),
    ],
    ids=["cross-module-weight-last", "cross-module-kernel-last", "same-module"],
)
def test_last_declared_alias_key_wins_with_warning(
    model_cls: type[nn.Module],
    specs: dict[str, QuantizationSpec],
    winner: str,
    expected: torch.dtype,
) -> None:
    """Several alias names of one state matching op_state_spec keys: the last declared key
    wins, with a UserWarning naming it; the alias the forward reads is fake-quantized."""
    x = torch.randn(2, 4)
    config = eager_config(ModuleQuantizerConfig(op_state_spec=specs))
    model = model_cls()
    with warnings_of() as messages:
        prepare_eager(model, (x,), config)
    assert any("last declared" in m and repr(winner) in m for m in messages), messages
    weights = {k: v for k, v in fq_dtypes(model).items() if "parametrizations" in k}
    assert set(weights.values()) == {expected}
    if model_cls is LocalAlias:
        assert model.kernel is model.weight or torch.equal(model.kernel, model.weight)
        fq = model.parametrizations.weight[0]
        with torch.no_grad():
            h = F.linear(model.linear_quantize_input(x), fq(model.parametrizations.weight.original))
            assert torch.equal(model(x), model.linear_quantize_output_0(h))


def test_weight_axis_defaults_and_explicit_override() -> None:
    """config_guide's axis example: per-block weights with the axis omitted resolve per
    module type (Conv2d / Linear: 1, ConvTranspose2d: 0); an explicit axis in a
    module_name config is kept."""

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.deconv1 = nn.ConvTranspose2d(8, 8, 2)
            self.deconv2 = nn.ConvTranspose2d(8, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.deconv2(self.deconv1(x))

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 1)
            self.decoder = Decoder()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.decoder(self.conv(x)).mean((-1, -2)))

    def weight_spec(axis: int | None) -> QuantizationSpec:
        return QuantizationSpec(
            dtype=torch.int4, granularity=PerBlockGranularity(axis=axis, block_size=4)
        )

    config = eager_config(
        ModuleQuantizerConfig(op_state_spec={"weight": weight_spec(None)}),
        module_name_configs={
            r"decoder\.deconv1": ModuleQuantizerConfig(op_state_spec={"weight": weight_spec(1)})
        },
    )
    _, model = prepare_eager(Model(), (torch.randn(1, 8, 3, 3),), config)
    axes = {
        name: model.get_submodule(name).parametrizations.weight[0].granularity.axis
        for name in ("conv", "decoder.deconv1", "decoder.deconv2", "fc")
    }
    assert axes == {"conv": 1, "decoder.deconv1": 1, "decoder.deconv2": 0, "fc": 1}


@pytest.mark.parametrize("field", ["op_input_spec", "op_output_spec"])
def test_non_positional_op_spec_key_is_not_implemented(field: str) -> None:
    """Eager mode addresses op tensors by int position or "*": another key is refused when
    the Quantizer is built (global, op_type_config and op_name_config alike)."""
    bad = OpQuantizerConfig(**{field: {"input": INT8}})
    configs = [
        eager_config(ModuleQuantizerConfig(**{field: {"input": INT8}})),
        eager_config(ModuleQuantizerConfig(op_type_config={"add": bad})),
        eager_config(module_name_configs={"fc": ModuleQuantizerConfig(op_name_config={"x": bad})}),
    ]
    for config in configs:
        with pytest.raises(NotImplementedError, match="'input'"):
            Quantizer(LinearAdd(), config)


def test_preserved_attributes_warns() -> None:
    """preserved_attributes is a graph-mode option: eager mode warns and keeps everything."""
    model = LinearAdd()
    model.extra = "kept"
    with warnings_of() as messages:
        quantizer = Quantizer(model, eager_config(preserved_attributes=["extra"]))
    assert any("preserved_attributes" in m for m in messages)
    assert quantizer.prepare(linear_add_inputs()).extra == "kept"


def test_prepare_twice_warns_and_returns_model() -> None:
    """A second prepare (same or another Quantizer) warns and returns the model unchanged."""
    model = LinearAdd()
    inputs = linear_add_inputs()
    quantizer, _ = prepare_eager(model, inputs)
    paths = fq_paths(model)
    with warnings_of() as messages:
        again = quantizer.prepare(inputs)
        other = Quantizer(model, eager_config()).prepare(inputs)
    assert again is model and other is model
    assert sum("already prepared" in m for m in messages) == 2
    assert fq_paths(model) == paths


@pytest.mark.parametrize(
    "kwargs",
    [{"dynamic_shapes": {"x": None, "y": None}}, {"export_with_no_grad": False}],
    ids=["dynamic_shapes", "export_with_no_grad"],
)
def test_graph_only_prepare_arguments_warn(kwargs: dict[str, object]) -> None:
    """dynamic_shapes / export_with_no_grad are torch.export options: eager warns, prepares."""
    model = LinearAdd()
    with warnings_of() as messages:
        prepared = Quantizer(model, eager_config()).prepare(linear_add_inputs(), **kwargs)
    assert prepared is model and fq_paths(model)
    assert any(next(iter(kwargs)) in m for m in messages)


def test_kv_cache_configs_refused_in_eager() -> None:
    """kv_cache_quant_configs are graph-mode only: refused at construction and by
    set_execution_mode("eager")."""
    kv = {
        "index_copy_": KVCacheQuantConfig(
            op_quantizer_config=OpQuantizerConfig(
                op_input_spec={2: INT8}, op_output_spec=None, op_state_spec=None
            )
        )
    }
    with pytest.raises(pydantic.ValidationError, match="graph"):
        QuantizerConfig(execution_mode="eager", kv_cache_quant_configs=kv)
    config = QuantizerConfig(kv_cache_quant_configs=kv)
    with pytest.raises(pydantic.ValidationError, match="graph"):
        config.set_execution_mode("eager")


def test_unknown_op_type_key_warns_with_the_eager_op_types() -> None:
    """The config guide's graph-mode op type "concat" is "cat" in eager mode: a key eager
    mode never intercepts would silently match nothing, so the quantizer warns."""
    config = QuantizerConfig(
        execution_mode="eager",
        global_config=ModuleQuantizerConfig(op_type_config={"concat": OpQuantizerConfig()}),
    )
    with pytest.warns(UserWarning, match=r"\['concat'\] name no op type.*'cat'"):
        Quantizer(nn.Linear(2, 2), config)
