"""Eager mode's op names and fake-quantizer placement against the Python oracle (oracle.py).

The dispatcher interceptor (csrc/eager) and the TorchFunctionMode oracle must agree on every
model built from registry ops: op names (``get_compressible_op_names``), the fake-quantizer
submodules and weight parametrizations, and therefore the prepared model's state_dict keys.
The attention containers differ by design; :func:`test_attention_containers_differ_by_design`
documents how.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from eager_helpers import (
    eager_config,
    fq_paths,
    oracle_fq_paths,
    oracle_state_dict_keys,
    prepare_eager,
    record_and_prepare,
)
from eager_models import TwoSubmodules
from oracle import OPTIONAL_OP_TYPES, record_ops
from torch import nn

from coreai_opt.quantization import ModuleQuantizerConfig, Quantizer
from coreai_opt.quantization.config import OpQuantizerConfig


class RegistryZoo(nn.Module):
    """Every default registry op type, through modules, functions, Tensor methods,
    operators and in-place forms."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 3, 3)
        self.c2 = nn.Conv2d(2, 3, 3, padding=1)
        self.c3 = nn.Conv3d(2, 3, 1)
        self.t1 = nn.ConvTranspose1d(3, 2, 2)
        self.t2 = nn.ConvTranspose2d(3, 2, 2)
        self.emb = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 4)
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor, idx: torch.Tensor
    ) -> torch.Tensor:
        a = self.t1(self.c1(x1))
        b = self.gap(self.t2(self.pool(self.c2(x2))))
        b = F.adaptive_avg_pool2d(F.max_pool2d(b, 1), 1)
        c = F.conv3d(x3, self.c3.weight)
        e = self.emb(idx)
        f = self.fc(e)
        g = f @ e.transpose(-1, -2)
        g = torch.matmul(g, e).matmul(torch.ones(4, 4)) + f
        g = g.mul(f) - f
        g.add_(f)
        g += f
        g.mul_(2)
        g *= f
        g.sub_(f)
        g -= 1
        h = torch.mul(torch.sub(g, f), 3).sub(1)
        h = torch.add(h, f).add(h)
        return a.sum() + b.sum() + c.sum() + h.sum()


def zoo_inputs() -> tuple[torch.Tensor, ...]:
    """Inputs of :class:`RegistryZoo`."""
    return (
        torch.randn(2, 2, 8),
        torch.randn(2, 2, 8, 8),
        torch.randn(1, 2, 3, 3, 3),
        torch.randint(0, 10, (2, 5)),
    )


class OptionalOps(nn.Module):
    """Every optional op type (quantized only when a config names it)."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(4)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = torch.bmm(x, y)
        c = torch.cat([a, x], dim=1)
        c = F.softmax(c, -1)
        c = self.act(self.ln(c))
        c = F.silu(F.gelu(c))
        d = F.avg_pool2d(c.unsqueeze(0), 2)
        return d.mean(-1).sum() + c.mean()


def optional_inputs() -> tuple[torch.Tensor, ...]:
    """Inputs of :class:`OptionalOps`."""
    return torch.randn(2, 3, 4), torch.randn(2, 4, 4)


def test_config_guide_two_add_module_names() -> None:
    """config_guide.md: ``submodule_a.add``, ``submodule_a.add_1``, ``submodule_b.add``, ..."""
    x = torch.randn(2, 3)
    ops, _, model, float_keys = record_and_prepare(TwoSubmodules(), (x,))
    names = ["submodule_a.add", "submodule_a.add_1", "submodule_b.add", "submodule_b.add_1"]
    assert [op.op_name for op in ops] == names
    assert Quantizer.get_compressible_op_names(model, "eager") == set(names)
    assert fq_paths(model) == oracle_fq_paths(ops)
    assert {
        "submodule_a.add_quantize_input",
        "submodule_a.add_quantize_other",
        "submodule_a.add_quantize_output_0",
        "submodule_b.add_1_quantize_output_0",
    } <= fq_paths(model)
    assert set(model.state_dict()) == oracle_state_dict_keys(float_keys, ops)


def test_registry_zoo_matches_oracle() -> None:
    """All ten default op types, module and functional forms, Tensor methods, operators and
    in-place forms: same op names, same fake-quantizers, same state_dict keys."""
    torch.manual_seed(0)
    ops, _, model, float_keys = record_and_prepare(RegistryZoo(), zoo_inputs())
    op_names = [op.op_name for op in ops]
    assert len(op_names) == len(set(op_names))
    assert {"add_", "add__1", "mul_", "mul__1", "sub_", "sub__1", "matmul_2"} <= set(op_names)
    assert {op.op_type for op in ops} == {
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "linear",
        "embedding",
        "max_pool2d",
        "adaptive_avg_pool2d",
        "add",
        "mul",
        "sub",
        "matmul",
    }
    assert Quantizer.get_compressible_op_names(model, "eager") == set(op_names)
    assert fq_paths(model) == oracle_fq_paths(ops)
    # Spot checks of the rules the oracle encodes.
    paths = fq_paths(model)
    assert "emb.embedding_quantize_input" not in paths  # int indices: weight only
    assert {"emb.parametrizations.weight.0", "emb.embedding_quantize_output_0"} <= paths
    assert "c3.parametrizations.weight.0" in paths  # F.conv3d(x, self.c3.weight) at top level
    assert "conv3d_quantize_input" in paths
    assert "sub__1_quantize_other" not in paths  # `g -= 1`: wrapped number
    assert "matmul_2_quantize_other" in paths  # a fresh tensor (torch.ones) is an activation
    assert set(model.state_dict()) == oracle_state_dict_keys(float_keys, ops)


def test_prepare_keeps_every_float_tensor() -> None:
    """The prepared model keeps every float tensor: bias and non-weight state untouched."""
    model = RegistryZoo()
    float_state = copy.deepcopy(model.state_dict())
    _, prepared = prepare_eager(model, zoo_inputs())
    state = prepared.state_dict()
    for key, value in float_state.items():
        module, _, name = key.rpartition(".")
        moved = f"{module}.parametrizations.{name}.original"
        assert torch.equal(state[moved] if moved in state else state[key], value), key


@pytest.mark.parametrize(
    "extra",
    [(), ("softmax",), ("layer_norm", "relu"), tuple(sorted(OPTIONAL_OP_TYPES))],
    ids=["none", "softmax", "layer_norm+relu", "all"],
)
def test_optional_types_only_when_named_in_op_type_config(extra: tuple[str, ...]) -> None:
    """bmm, cat, softmax, layer_norm, relu, gelu, silu, avg_pool2d and mean are counted
    for naming always but quantized only when ``op_type_config`` names them."""
    config = eager_config(
        ModuleQuantizerConfig(op_type_config={t: OpQuantizerConfig() for t in extra})
    )
    ops, _, model, float_keys = record_and_prepare(OptionalOps(), optional_inputs(), config)
    assert fq_paths(model) == oracle_fq_paths(ops, extra)
    assert set(model.state_dict()) == oracle_state_dict_keys(float_keys, ops, extra)
    if not extra:
        assert fq_paths(model) == set()
    assert Quantizer.get_compressible_op_names(model, "eager") == {op.op_name for op in ops}


def test_optional_type_quantized_when_named_in_op_name_config() -> None:
    """An op_name_config entry (regex) enables an optional op by name only."""
    config = eager_config(
        ModuleQuantizerConfig(
            op_name_config={"soft.*": OpQuantizerConfig(), r"ln\.layer_norm": OpQuantizerConfig()}
        )
    )
    _, model = prepare_eager(OptionalOps(), optional_inputs(), config)
    assert fq_paths(model) == {
        "softmax_quantize_input",
        "softmax_quantize_output_0",
        "ln.layer_norm_quantize_input",
        "ln.layer_norm_quantize_output_0",
        "ln.parametrizations.weight.0",
    }


def test_get_compressible_op_names_float_model_and_prepared() -> None:
    """A float model answers with example_inputs (and is left unchanged); a prepared model
    answers from its prepare pass; a float model without inputs is a ValueError."""
    model = RegistryZoo()
    inputs = zoo_inputs()
    expected = {op.op_name for op in record_ops(copy.deepcopy(model), inputs)}
    keys = list(model.state_dict())
    assert Quantizer.get_compressible_op_names(model, "eager", inputs) == expected
    assert list(model.state_dict()) == keys and fq_paths(model) == set()
    with pytest.raises(ValueError, match="example_inputs"):
        Quantizer.get_compressible_op_names(model, "eager")
    prepare_eager(model, inputs)
    assert Quantizer.get_compressible_op_names(model, "eager") == expected
    optional = OptionalOps()
    assert Quantizer.get_compressible_op_names(optional, "eager", optional_inputs()) == {
        "bmm",
        "cat",
        "softmax",
        "ln.layer_norm",
        "act.relu",
        "gelu",
        "silu",
        "avg_pool2d",
        "mean",
        "mean_1",
        "add",
    }


class SdpaBlock(nn.Module):
    """A projection, then F.scaled_dot_product_attention, then an add."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x).view(2, 5, 2, 4).transpose(1, 2)
        return F.scaled_dot_product_attention(q, q, q) + 1


class MhaBlock(nn.Module):
    """nn.MultiheadAttention, sequence-first, asking for the attention weights."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x)[0]


def test_attention_containers_differ_by_design() -> None:
    """How the attention containers differ from the oracle, by design.

    * ``F.scaled_dot_product_attention``: one opaque call for both. The oracle does not
      count it (not a registry function); the interceptor registers a pass-through kernel
      for ``aten::scaled_dot_product_attention`` that switches interception off for its
      C++ body, so the matmul / softmax / bmm it runs are neither named nor quantized.
      Here the two agree exactly.
    * ``nn.MultiheadAttention``: the oracle (like the reference's TorchFunctionMode) sees
      one ``F.multi_head_attention_forward`` call, not a registry op: nothing is named or
      quantized inside ``attn``. The dispatch key sees the aten ops that Python body runs:
      the packed in-projection and the out-projection are ``F.linear`` calls
      (``attn.linear``, ``attn.linear_1``, quantized), the query scaling is ``attn.mul``,
      and ``bmm`` / ``softmax`` / ``mean`` are named (optional types: not quantized). The
      out-projection's weight is read from ``attn.out_proj`` (whose forward never runs)
      and parametrized there; ``in_proj_weight`` is not called "weight" and stays float.
      On the fast path (eval, no grad, batch_first, ``need_weights=False``) the body is
      one ``aten::_native_multi_head_attention`` call, passed through whole: nothing
      inside is named.
    """
    x = torch.randn(2, 5, 8)
    ops, _, model, float_keys = record_and_prepare(SdpaBlock(), (x,))
    assert [op.op_name for op in ops] == ["q.linear", "add"]
    assert Quantizer.get_compressible_op_names(model, "eager") == {"q.linear", "add"}
    assert fq_paths(model) == oracle_fq_paths(ops)
    assert set(model.state_dict()) == oracle_state_dict_keys(float_keys, ops)

    x = torch.randn(5, 2, 8)
    ops, _, model, _ = record_and_prepare(MhaBlock(), (x,))
    assert [op.op_name for op in ops] == []
    assert Quantizer.get_compressible_op_names(model, "eager") == {
        "attn.linear",
        "attn.linear_1",
        "attn.mul",
        "attn.bmm",
        "attn.bmm_1",
        "attn.softmax",
        "attn.mean",
    }
    assert fq_paths(model) == {
        "attn.linear_quantize_input",
        "attn.linear_quantize_output_0",
        "attn.mul_quantize_input",
        "attn.mul_quantize_output_0",
        "attn.linear_1_quantize_input",
        "attn.linear_1_quantize_output_0",
        "attn.out_proj.parametrizations.weight.0",
    }

    fast = nn.MultiheadAttention(8, 2, batch_first=True).eval()

    class Fast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = fast

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x, need_weights=False)[0]

    _, model = prepare_eager(Fast(), (torch.randn(2, 5, 8),))
    assert Quantizer.get_compressible_op_names(model, "eager") == set()
    assert fq_paths(model) == set()
