"""The Python eager-mode oracle (oracle.py) against the documented naming and placement rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from eager_models import TwoSubmodules
from oracle import (
    DEFAULT_OP_TYPES,
    OPTIONAL_OP_TYPES,
    OracleOp,
    oracle_fq_names,
    oracle_weight_fqs,
    record_ops,
)
from torch import nn


def names(ops: list[OracleOp]) -> list[str]:
    """Op names in execution order."""
    return [op.op_name for op in ops]


def by_name(ops: list[OracleOp]) -> dict[str, OracleOp]:
    """Ops keyed by name."""
    return {op.op_name: op for op in ops}


def test_config_guide_two_add_module() -> None:
    ops = record_ops(TwoSubmodules(), (torch.randn(2, 3),))
    assert names(ops) == [
        "submodule_a.add",
        "submodule_a.add_1",
        "submodule_b.add",
        "submodule_b.add_1",
    ]
    op = ops[1]
    assert (op.module_path, op.local_name, op.op_type, op.func) == (
        "submodule_a",
        "add_1",
        "add",
        "add",
    )
    assert op.quantizable_inputs == ("input", "other")
    assert op.states == ()
    assert (op.n_float_outputs, op.quantizable_outputs) == (1, (0,))
    assert oracle_fq_names(ops)["submodule_b"] == [
        "add_quantize_input",
        "add_quantize_other",
        "add_quantize_output_0",
        "add_1_quantize_input",
        "add_1_quantize_other",
        "add_1_quantize_output_0",
    ]


def test_top_level_ops_have_bare_names() -> None:
    class Top(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.add(x, y).add(y) * y - y

    ops = record_ops(Top(), (torch.randn(4), torch.randn(4)))
    assert names(ops) == ["add", "add_1", "mul", "sub"]
    assert {op.module_path for op in ops} == {""}
    assert set(oracle_fq_names(ops)) == {""}


def test_scalar_operand_counts_but_is_not_quantizable() -> None:
    class ScalarAdd(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (x + 1) + y

    ops = record_ops(ScalarAdd(), (torch.randn(4), torch.randn(4)))
    assert names(ops) == ["add", "add_1"]
    assert ops[0].quantizable_inputs == ("input",)
    assert ops[1].quantizable_inputs == ("input", "other")
    assert oracle_fq_names(ops)[""] == [
        "add_quantize_input",
        "add_quantize_output_0",
        "add_1_quantize_input",
        "add_1_quantize_other",
        "add_1_quantize_output_0",
    ]


def test_call_without_quantizable_tensor_still_counts() -> None:
    """0.3.0: an add of one-element tensors takes the name ``add``; the next is ``add_1``."""

    class Mixed(nn.Module):
        def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            t = s + s  # numel 1: nothing to quantize
            i = torch.arange(4) + torch.arange(4)  # integer: nothing to quantize
            return x + t + i

    ops = record_ops(Mixed(), (torch.randn(4), torch.randn(1)))
    assert names(ops) == ["add", "add_1", "add_2", "add_3"]
    assert [op.quantizable_inputs for op in ops] == [(), (), ("input",), ("input",)]
    assert [op.n_float_outputs for op in ops] == [0, 0, 1, 1]
    fq = oracle_fq_names(ops)[""]
    assert not any(n.startswith(("add_quantize", "add_1_quantize")) for n in fq)
    assert fq[0] == "add_2_quantize_input"


def test_in_place_add_is_add_underscore() -> None:
    class InPlace(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            z = x + y
            z += y
            z.add_(x)
            return z.mul_(y)

    ops = record_ops(InPlace(), (torch.randn(4), torch.randn(4)))
    assert names(ops) == ["add", "add_", "add__1", "mul_"]
    assert [op.op_type for op in ops] == ["add", "add", "add", "mul"]
    assert ops[1].quantizable_inputs == ("input", "other")
    assert "add__quantize_output_0" in oracle_fq_names(ops)[""]


def test_dunders_and_rsub() -> None:
    """Reflected operators are the op itself; ``1 - x`` is aten::rsub and not counted."""

    class Dunders(nn.Module):
        def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            a = 2 + x  # add
            b = 3 * a  # mul
            c = 1 - b  # rsub: ignored
            d = c - 1  # sub
            e = torch.rsub(d, x)  # ignored
            return (e @ m) @ m  # matmul, matmul_1

    ops = record_ops(Dunders(), (torch.randn(2, 2), torch.randn(2, 2)))
    assert names(ops) == ["add", "mul", "sub", "matmul", "matmul_1"]
    assert ops[0].quantizable_inputs == ("input",)
    assert ops[3].quantizable_inputs == ("input", "other")


def test_explicit_dunder_calls_map_to_the_family() -> None:
    class Explicit(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            a = x.__add__(y)
            b = x.__radd__(a)
            return torch.Tensor.__rsub__(b, 1)

    ops = record_ops(Explicit(), (torch.randn(3), torch.randn(3)))
    assert names(ops) == ["add", "add_1"]


class Block(nn.Module):
    """One add, one linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x + x)


class Reuse(nn.Module):
    """Calls the same block twice, with adds of its own around."""

    def __init__(self) -> None:
        super().__init__()
        self.block = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x) + x
        return self.block(x) + x


def test_module_called_twice_gives_the_same_names() -> None:
    model = Reuse()
    every = record_ops(model, (torch.randn(2, 4),), dedupe=False)
    assert names(every) == [
        "block.add",
        "block.fc.linear",
        "add",
        "block.add",
        "block.fc.linear",
        "add_1",
    ]
    assert every[:2] == every[3:5]
    once = record_ops(model, (torch.randn(2, 4),))
    assert names(once) == ["block.add", "block.fc.linear", "add", "add_1"]
    assert oracle_fq_names(every) == oracle_fq_names(once)
    assert oracle_weight_fqs(once) == ["block.fc.weight"]


class ConvBnReluFc(nn.Module):
    """conv-bn-relu, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.bn(self.conv(x))).flatten(1))


def test_conv_bn_relu_linear() -> None:
    ops = by_name(record_ops(ConvBnReluFc().eval(), (torch.randn(2, 3, 4, 4),)))
    assert list(ops) == ["conv.conv2d", "relu.relu", "fc.linear"]  # no batch_norm, flatten
    for name, fqns in (
        ("conv.conv2d", ("conv.weight", "conv.bias")),
        ("fc.linear", ("fc.weight", "fc.bias")),
    ):
        op = ops[name]
        assert op.states == ("weight", "bias")
        assert op.state_fqns == fqns
        assert op.state_args == ("weight", "bias")
        assert op.quantizable_inputs == ("input",)
        assert op.quantizable_outputs == (0,)
    assert ops["relu.relu"].op_type == "relu"
    recorded = list(ops.values())
    assert oracle_fq_names(recorded) == {
        "conv": ["conv2d_quantize_input", "conv2d_quantize_output_0"],
        "fc": ["linear_quantize_input", "linear_quantize_output_0"],
    }
    assert oracle_fq_names(recorded, {"relu"})["relu"] == [
        "relu_quantize_input",
        "relu_quantize_output_0",
    ]
    assert oracle_weight_fqs(recorded) == ["conv.weight", "fc.weight"]
    assert oracle_weight_fqs(recorded, state_names=("weight", "bias")) == [
        "conv.bias",
        "conv.weight",
        "fc.bias",
        "fc.weight",
    ]


def test_inplace_relu_module() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(self.act(x * 1.0))

    assert names(record_ops(M(), (torch.randn(3),))) == ["mul", "act.relu_", "relu"]


def test_weight_used_by_another_module() -> None:
    """A parameter read by an op in another module is a state under its local name."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            h = self.emb(idx)
            return F.linear(h, self.emb.weight)

    ops = record_ops(Tied(), (torch.tensor([[1, 2, 3]]),))
    assert names(ops) == ["emb.embedding", "linear"]
    emb, lin = ops
    assert emb.quantizable_inputs == ()  # integer indices
    assert (emb.states, lin.states) == (("weight",), ("weight",))
    assert (lin.state_fqns, lin.state_args) == (("emb.weight",), ("weight",))
    assert oracle_fq_names(ops) == {
        "emb": ["embedding_quantize_output_0"],
        "": ["linear_quantize_input", "linear_quantize_output_0"],
    }
    assert oracle_weight_fqs(ops) == ["emb.weight"]


class Attention(nn.Module):
    """Hand-written attention: q k^T by bmm, softmax, and a matmul with v."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = torch.bmm(q, k.transpose(1, 2)).softmax(-1)
        probs = F.softmax(scores, dim=-1)
        return torch.cat([probs @ v, v], dim=-1).mean(0)


def test_optional_types_only_when_asked() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = Attention()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x)

    ops = record_ops(Model(), (torch.randn(2, 3, 4),))
    assert names(ops) == [
        "attn.bmm",
        "attn.softmax",
        "attn.softmax_1",
        "attn.matmul",
        "attn.cat",
        "attn.mean",
    ]
    assert [op.op_type for op in ops] == ["bmm", "softmax", "softmax", "matmul", "cat", "mean"]
    assert ops[0].quantizable_inputs == ("input", "mat2")
    assert ops[4].quantizable_inputs == ("tensors_0", "tensors_1")
    assert oracle_fq_names(ops) == {
        "attn": ["matmul_quantize_input", "matmul_quantize_other", "matmul_quantize_output_0"]
    }
    with_optional = oracle_fq_names(ops, {"softmax", "bmm"})["attn"]
    assert with_optional[:3] == ["bmm_quantize_input", "bmm_quantize_mat2", "bmm_quantize_output_0"]
    assert "softmax_1_quantize_input" in with_optional
    assert not any(n.startswith(("cat", "mean")) for n in with_optional)
    with pytest.raises(ValueError, match="unknown op types"):
        oracle_fq_names(ops, {"sdpa"})


def test_torch_function_internals_are_not_counted() -> None:
    """F.linear, F.layer_norm, F.gelu are one op each; non-registry funcs are ignored."""

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln = nn.LayerNorm(8)
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.gelu(self.fc(self.ln(x)))
            return h.view(-1)[: h.numel()].reshape(h.shape) + x.size(0)

    ops = record_ops(Mlp(), (torch.randn(2, 8),))
    assert names(ops) == ["ln.layer_norm", "fc.linear", "gelu", "add"]
    every = record_ops(Mlp(), (torch.randn(2, 8),), include_unregistered=True)
    assert {"view", "reshape", "size"} <= {op.func for op in every}
    assert [op.op_name for op in every if op.op_type is not None] == names(ops)


def test_default_registry_is_the_reference_ten() -> None:
    families = {
        "conv1d/2d/3d": {"conv1d", "conv2d", "conv3d"},
        "conv_transpose1d/2d/3d": {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"},
        "linear": {"linear"},
        "embedding": {"embedding"},
        "max_pool2d": {"max_pool2d"},
        "adaptive_avg_pool2d": {"adaptive_avg_pool2d"},
        "add": {"add"},
        "matmul": {"matmul"},
        "mul": {"mul"},
        "sub": {"sub"},
    }
    assert set().union(*families.values()) == DEFAULT_OP_TYPES
    assert not DEFAULT_OP_TYPES & OPTIONAL_OP_TYPES


class AllFamilies(nn.Module):
    """One module per registry family besides linear / conv2d / the binary ops."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 2, 3)
        self.c3 = nn.Conv3d(2, 2, 1)
        self.t1 = nn.ConvTranspose1d(2, 2, 3)
        self.t2 = nn.ConvTranspose2d(2, 2, 3)
        self.t3 = nn.ConvTranspose3d(2, 2, 1)
        self.emb = nn.Embedding(5, 4)
        self.mp = nn.MaxPool2d(2)
        self.ap = nn.AdaptiveAvgPool2d(1)
        self.scale = nn.Parameter(torch.randn(4))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        self.c1(x1), self.t1(x1), self.c3(x3), self.t3(x3), self.t2(x2)
        self.mp(x2), self.ap(x2)
        F.max_pool2d(x2, 2, return_indices=True)  # max_pool2d_with_indices: not counted
        return self.emb(torch.tensor([1, 2])) * self.scale


def test_every_registry_family() -> None:
    inputs = (torch.randn(1, 2, 5), torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2, 2))
    ops = record_ops(AllFamilies(), inputs)
    assert names(ops) == [
        "c1.conv1d",
        "t1.conv_transpose1d",
        "c3.conv3d",
        "t3.conv_transpose3d",
        "t2.conv_transpose2d",
        "mp.max_pool2d",
        "ap.adaptive_avg_pool2d",
        "emb.embedding",
        "mul",
    ]
    assert all(op.quantizable_inputs == ("input",) for op in ops[:7])
    assert all(op.states == ("weight", "bias") for op in ops[:5])
    emb, mul = ops[-2:]
    assert (emb.quantizable_inputs, emb.states, emb.quantizable_outputs) == ((), ("weight",), (0,))
    assert (mul.quantizable_inputs, mul.states, mul.state_fqns, mul.state_args) == (
        ("input",),
        ("scale",),
        ("scale",),
        ("other",),
    )
    assert oracle_weight_fqs(ops)[:2] == ["c1.weight", "c3.weight"]
    assert "scale" not in oracle_weight_fqs(ops)
