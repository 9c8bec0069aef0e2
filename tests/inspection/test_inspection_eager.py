"""ModelInspector in eager mode: op names as eager configs match them, edges, module
boundaries, queries, the summary text, the compressor filter and the argument checks."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import pytest
import torch
import torch.nn.functional as F
from inspection_helpers import line_of, qualname, shown_path
from torch import nn

from coreai_opt.inspection import (
    BoundaryEdge,
    InputEdge,
    ModelInspector,
    ModelSummary,
    ModuleContext,
    OpInfo,
    SourceFrame,
)
from coreai_opt.quantization import ExecutionMode, Quantizer

# -- models -----------------------------------------------------------------------------------


class TwoAddModule(nn.Module):
    """config_guide.md's example: two adds."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x + x
        b = a + a
        return b


class TwoSubmodules(nn.Module):
    """config_guide.md's example: two TwoAddModules in sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.submodule_a = TwoAddModule()
        self.submodule_b = TwoAddModule()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.submodule_a(x)
        x = self.submodule_b(x)
        return x


class ConvBnReluLinear(nn.Module):
    """conv -> bn -> relu -> pool -> flatten -> linear (bn and flatten are not intercepted)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(self.pool(y), 1))


TWO_ADD_INPUTS = (torch.randn(2, 3),)
CBRL_INPUTS = (torch.randn(2, 3, 8, 8),)


def names(ops: Iterable[OpInfo]) -> list[str]:
    return [op.op_name for op in ops]


def compute_ops(inspector: ModelInspector) -> list[OpInfo]:
    """The intercepted ops (no boundary or state ops)."""
    return [
        op
        for op in inspector.ops
        if not op.is_state and op.op_type not in ("placeholder", "output")
    ]


def op(inspector: ModelInspector, name: str) -> OpInfo:
    (found,) = [o for o in inspector.ops if o.op_name == name]
    return found


@pytest.fixture(scope="module")
def two_add() -> ModelInspector:
    return ModelInspector(TwoSubmodules(), TWO_ADD_INPUTS, ExecutionMode.EAGER)


@pytest.fixture(scope="module")
def cbrl() -> ModelInspector:
    torch.manual_seed(0)
    return ModelInspector(ConvBnReluLinear(), CBRL_INPUTS, "eager")


# -- names ------------------------------------------------------------------------------------


def test_config_guide_op_names(two_add: ModelInspector) -> None:
    assert names(compute_ops(two_add)) == [
        "submodule_a.add",
        "submodule_a.add_1",
        "submodule_b.add",
        "submodule_b.add_1",
    ]
    assert {o.op_type for o in compute_ops(two_add)} == {"add"}
    assert names(two_add.ops) == [
        "input_0",
        "submodule_a.add",
        "submodule_a.add_1",
        "submodule_b.add",
        "submodule_b.add_1",
        "output_0",
    ]
    assert two_add.summary.model.all_ops() == two_add.ops


def test_config_guide_sequential_example() -> None:
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    inspector = ModelInspector(model, example_inputs=(torch.randn(1, 10),), execution_mode="eager")
    assert [(o.op_name, o.op_type, o.module_name) for o in compute_ops(inspector)] == [
        ("0.linear", "linear", "0"),
        ("1.relu", "relu", "1"),
        ("2.linear", "linear", "2"),
    ]
    assert names(inspector.get_matched_ops_for_op_type("linear")) == ["0.linear", "2.linear"]
    assert names(inspector.get_matched_ops_for_module_type(nn.ReLU)) == ["1.relu"]
    text = inspector.format_summary(colorize=False)
    assert "◆ 2.linear [linear]" in text and "■ 2 (torch.nn.modules.linear.Linear)" in text


def test_names_are_the_compressible_op_names() -> None:
    for model, inputs in ((TwoSubmodules(), TWO_ADD_INPUTS), (ConvBnReluLinear(), CBRL_INPUTS)):
        inspector = ModelInspector(model, inputs, "eager")
        assert set(names(compute_ops(inspector))) == Quantizer.get_compressible_op_names(
            model, "eager", inputs
        )


def test_conv_bn_relu_linear_ops(cbrl: ModelInspector) -> None:
    got = [(o.op_name, o.op_type, o.module_name, o.is_state) for o in cbrl.ops]
    assert got == [
        ("input_0", "placeholder", "", False),
        ("conv.weight", "get_attr", "conv", True),
        ("conv.bias", "get_attr", "conv", True),
        ("conv.conv2d", "conv2d", "conv", False),
        ("relu.relu", "relu", "relu", False),
        ("pool.adaptive_avg_pool2d", "adaptive_avg_pool2d", "pool", False),
        ("fc.weight", "get_attr", "fc", True),
        ("fc.bias", "get_attr", "fc", True),
        ("fc.linear", "linear", "fc", False),
        ("output_0", "output", "", False),
    ]


def test_module_stack_root_first_with_qualified_types(cbrl: ModelInspector) -> None:
    assert op(cbrl, "conv.conv2d").module_stack == (
        ModuleContext("", qualname(ConvBnReluLinear)),
        ModuleContext("conv", "torch.nn.modules.conv.Conv2d"),
    )
    assert op(cbrl, "fc.weight").module_stack == op(cbrl, "fc.linear").module_stack
    assert op(cbrl, "input_0").module_stack == (ModuleContext("", qualname(ConvBnReluLinear)),)


def test_source_frames_are_the_forward_frames(cbrl: ModelInspector) -> None:
    frames = op(cbrl, "conv.conv2d").source_frames
    assert frames and all(f.function_name == "forward" for f in frames)
    code = "y = self.relu(self.bn(self.conv(x)))"
    assert frames[0] == SourceFrame(
        __file__, line_of(ConvBnReluLinear.forward, code), "forward", code
    )
    assert frames[-1].filename.endswith("conv.py")  # torch's Conv2d.forward, innermost
    assert op(cbrl, "input_0").source_frames == () and op(cbrl, "fc.weight").source_frames == ()


# -- edges ------------------------------------------------------------------------------------


def test_edges_of_the_config_guide_example(two_add: ModelInspector) -> None:
    x = op(two_add, "input_0")
    a_add, a_add_1 = op(two_add, "submodule_a.add"), op(two_add, "submodule_a.add_1")
    b_add, b_add_1 = op(two_add, "submodule_b.add"), op(two_add, "submodule_b.add_1")
    assert a_add.inputs == (InputEdge(x, 0), InputEdge(x, 0))  # x + x
    assert a_add_1.inputs == (InputEdge(a_add), InputEdge(a_add))
    assert b_add.inputs == (InputEdge(a_add_1), InputEdge(a_add_1))
    assert op(two_add, "output_0").inputs == (InputEdge(b_add_1),)
    assert x.outputs == {0: (a_add,)}  # one reader, listed once
    assert a_add_1.outputs == {0: (b_add,)}
    assert b_add_1.outputs == {0: (op(two_add, "output_0"),)}


def test_edges_pass_through_ops_that_are_not_intercepted(cbrl: ModelInspector) -> None:
    # batch_norm and flatten are not ops in eager mode: the data flows through them
    assert op(cbrl, "relu.relu").inputs == (InputEdge(op(cbrl, "conv.conv2d")),)
    assert op(cbrl, "fc.linear").inputs == (
        InputEdge(op(cbrl, "pool.adaptive_avg_pool2d")),
        InputEdge(op(cbrl, "fc.weight")),
        InputEdge(op(cbrl, "fc.bias")),
    )
    assert op(cbrl, "conv.conv2d").outputs == {0: (op(cbrl, "relu.relu"),)}
    # bn's parameters and buffers are read by batch_norm only: no state ops
    assert not any(o.op_name.startswith("bn.") for o in cbrl.ops)


def test_state_ops(cbrl: ModelInspector) -> None:
    weight = op(cbrl, "conv.weight")
    assert weight.is_state and weight.inputs == ()
    assert weight.outputs == {0: (op(cbrl, "conv.conv2d"),)}
    assert names(cbrl.summary.model.get_submodule("conv").ops) == [
        "conv.weight",
        "conv.bias",
        "conv.conv2d",
    ]


def test_a_tied_weight_is_one_state_op_named_by_its_first_owner() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(5, 4)
            self.head = nn.Linear(4, 5, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(ids))

    inspector = ModelInspector(Tied(), (torch.tensor([[1, 2]]),), "eager")
    weight, emb, head = (op(inspector, n) for n in ("emb.weight", "emb.embedding", "head.linear"))
    assert [o.op_name for o in inspector.ops if o.is_state] == ["emb.weight"]
    assert weight.module_name == "emb"
    assert weight.outputs == {0: (emb, head)}
    assert emb.inputs == (InputEdge(weight), InputEdge(op(inspector, "input_0")))
    assert head.inputs == (InputEdge(emb), InputEdge(weight))


def test_intercepted_ops_keep_their_names_over_state_ops() -> None:
    class Table(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Parameter(torch.randn(5, 4))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return F.embedding(ids, self.embedding)

    inspector = ModelInspector(Table(), (torch.tensor([1, 2]),), "eager")
    assert [(o.op_name, o.op_type) for o in inspector.ops] == [
        ("input_0", "placeholder"),
        ("embedding_1", "get_attr"),  # the parameter named "embedding" gives way
        ("embedding", "embedding"),
        ("output_0", "output"),
    ]


def test_in_place_ops_become_the_producer() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.bn = nn.BatchNorm2d(2)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.bn(self.conv(x))
            out += x
            return self.relu(out)

    inspector = ModelInspector(Residual(), (torch.randn(1, 2, 4, 4),), "eager")
    assert names(compute_ops(inspector)) == ["conv.conv2d", "add_", "relu.relu_"]
    add_ = op(inspector, "add_")
    assert add_.op_type == "add"
    assert add_.inputs == (
        InputEdge(op(inspector, "conv.conv2d")),
        InputEdge(op(inspector, "input_0")),
    )
    assert op(inspector, "relu.relu_").inputs == (InputEdge(add_),)
    assert op(inspector, "output_0").inputs == (InputEdge(op(inspector, "relu.relu_")),)


def test_scalar_arguments_give_no_edge() -> None:
    class Scale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x * 2) + 1

    inspector = ModelInspector(Scale(), (torch.randn(3),), "eager")
    assert [(o.op_name, names(e.op for e in o.inputs)) for o in compute_ops(inspector)] == [
        ("mul", ["input_0"]),
        ("add", ["mul"]),
    ]


def test_each_returned_tensor_gets_an_output_op() -> None:
    class Pool(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"pooled": F.max_pool2d(x, 2), "same": x}

    inspector = ModelInspector(Pool(), (torch.randn(1, 1, 4, 4),), "eager")
    pool, x = op(inspector, "max_pool2d"), op(inspector, "input_0")
    assert names(inspector.ops) == ["input_0", "max_pool2d", "output_0", "output_1"]
    assert op(inspector, "output_0").inputs == (InputEdge(pool, 0),)
    assert op(inspector, "output_1").inputs == (InputEdge(x, 0),)
    assert x.outputs == {0: (pool, op(inspector, "output_1"))}
    root = inspector.summary.model
    assert root.output_ops == {0: BoundaryEdge(pool, 0), 1: BoundaryEdge(x, 0)}
    assert "module outputs: max_pool2d, input_0" in inspector.format_summary(colorize=False)


def test_a_module_called_twice_keeps_its_first_ops() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(3, 3)
            self.fc2 = nn.Linear(3, 3)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc2(self.act(self.fc1(x))))

    model = Shared()
    inspector = ModelInspector(model, (torch.randn(2, 3),), "eager")
    assert names(compute_ops(inspector)) == ["fc1.linear", "act.relu", "fc2.linear"]
    relu = op(inspector, "act.relu")
    assert relu.inputs == (InputEdge(op(inspector, "fc1.linear")),)  # the first call's
    # the second call's output still feeds the model output through the same op
    assert relu.outputs == {0: (op(inspector, "fc2.linear"), op(inspector, "output_0"))}
    assert op(inspector, "fc2.linear").outputs == {0: (relu,)}
    assert set(names(compute_ops(inspector))) == Quantizer.get_compressible_op_names(
        model, "eager", (torch.randn(2, 3),)
    )


# -- module boundaries ------------------------------------------------------------------------


def test_boundaries_of_the_config_guide_example(two_add: ModelInspector) -> None:
    root = two_add.summary.model
    a = root.get_submodule("submodule_a")
    b = root.get_submodule("submodule_b")
    a_add, a_add_1 = op(two_add, "submodule_a.add"), op(two_add, "submodule_a.add_1")
    assert a.input_ops == {0: [BoundaryEdge(a_add, 0), BoundaryEdge(a_add, 1)]}
    assert a.output_ops == {0: BoundaryEdge(a_add_1, 0)}
    assert b.input_ops == {
        0: [
            BoundaryEdge(op(two_add, "submodule_b.add"), 0),
            BoundaryEdge(op(two_add, "submodule_b.add"), 1),
        ]
    }
    assert b._input_sources == {0: InputEdge(a_add_1, 0)}
    assert root.input_ops == a.input_ops
    assert root.output_ops == {0: BoundaryEdge(op(two_add, "submodule_b.add_1"), 0)}


def test_boundaries_through_ops_that_are_not_intercepted(cbrl: ModelInspector) -> None:
    root = cbrl.summary.model
    relu = root.get_submodule("relu")
    assert relu.input_ops == {0: [BoundaryEdge(op(cbrl, "relu.relu"), 0)]}
    assert relu._input_sources == {0: InputEdge(op(cbrl, "conv.conv2d"))}  # through bn
    fc = root.get_submodule("fc")
    assert fc.input_ops == {0: [BoundaryEdge(op(cbrl, "fc.linear"), 0)]}  # through flatten
    assert fc.output_ops == {0: BoundaryEdge(op(cbrl, "fc.linear"), 0)}
    # states never cross a boundary
    assert root.get_submodule("conv").input_ops == {0: [BoundaryEdge(op(cbrl, "conv.conv2d"), 0)]}


def test_boundary_indices_are_the_module_argument_positions() -> None:
    class Gate(nn.Module):
        def forward(
            self, x: torch.Tensor, unused: torch.Tensor, gate: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x * gate

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = Gate()

        def forward(self, x: torch.Tensor, u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
            passed, gated = self.gate(x, u, g.sigmoid())
            return passed + gated

    inputs = (torch.randn(3), torch.randn(3), torch.randn(3))
    inspector = ModelInspector(Outer(), inputs, "eager")
    assert names(compute_ops(inspector)) == ["gate.mul", "add"]  # sigmoid: not intercepted
    mul = op(inspector, "gate.mul")
    gate = inspector.summary.model.get_submodule("gate")
    assert gate.input_ops == {0: [BoundaryEdge(mul, 0)], 1: [], 2: [BoundaryEdge(mul, 1)]}
    assert gate._input_sources == {
        0: InputEdge(op(inspector, "input_0")),
        1: InputEdge(op(inspector, "input_1")),
        2: InputEdge(op(inspector, "input_2")),  # through sigmoid
    }
    # output 0 is the module's input passed through: no op inside produced it
    assert gate.output_ops == {1: BoundaryEdge(mul, 0)}
    root = inspector.summary.model
    assert root.input_ops == {
        0: [BoundaryEdge(mul, 0), BoundaryEdge(op(inspector, "add"), 0)],
        1: [],
        2: [BoundaryEdge(mul, 1)],
    }
    assert root.output_ops == {0: BoundaryEdge(op(inspector, "add"), 0)}


# -- module tree and queries ------------------------------------------------------------------


def test_module_tree(cbrl: ModelInspector) -> None:
    summary = cbrl.summary
    assert isinstance(summary, ModelSummary) and summary.mode is ExecutionMode.EAGER
    root = summary.model
    assert (root.module_name, root.module_type) == ("", qualname(ConvBnReluLinear))
    # bn runs no intercepted op, so it holds none and is not listed
    assert [(n, m.module_type) for n, m in root.named_children()] == [
        ("conv", "torch.nn.modules.conv.Conv2d"),
        ("relu", "torch.nn.modules.activation.ReLU"),
        ("pool", "torch.nn.modules.pooling.AdaptiveAvgPool2d"),
        ("fc", "torch.nn.modules.linear.Linear"),
    ]
    assert names(root.ops) == ["input_0", "output_0"]


def test_queries(cbrl: ModelInspector) -> None:
    assert names(cbrl.get_matched_ops_for_op_type("conv2d")) == ["conv.conv2d"]
    assert cbrl.get_matched_ops_for_op_type("batch_norm") == ()
    assert names(cbrl.get_matched_ops_for_op_name(r"fc\..*")) == [
        "fc.weight",
        "fc.bias",
        "fc.linear",
    ]
    assert names(cbrl.get_matched_ops_for_op_name("relu")) == []  # full match
    assert names(cbrl.get_matched_ops_for_op_name(r".*relu")) == ["relu.relu"]
    assert names(cbrl.get_matched_ops_for_module_name("relu|pool")) == [
        "relu.relu",
        "pool.adaptive_avg_pool2d",
    ]
    linear_ops = ["fc.weight", "fc.bias", "fc.linear"]
    assert names(cbrl.get_matched_ops_for_module_type(nn.Linear)) == linear_ops
    assert (
        names(cbrl.get_matched_ops_for_module_type("torch.nn.modules.linear.Linear")) == linear_ops
    )
    assert len(cbrl.get_matched_ops_for_module_type(ConvBnReluLinear)) == len(cbrl.ops)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        cbrl.get_matched_ops_for_op_name("fc(")


def test_queries_on_the_config_guide_example(two_add: ModelInspector) -> None:
    assert names(two_add.get_matched_ops_for_op_name(r"submodule_a\.add(_\d+)?")) == [
        "submodule_a.add",
        "submodule_a.add_1",
    ]
    assert names(two_add.get_matched_ops_for_module_name("submodule_b")) == [
        "submodule_b.add",
        "submodule_b.add_1",
    ]
    assert len(two_add.get_matched_ops_for_module_type(TwoAddModule)) == 4
    assert len(two_add.get_matched_ops_for_op_type("add")) == 4


# -- summary ----------------------------------------------------------------------------------


def test_summary_of_the_config_guide_example(two_add: ModelInspector) -> None:
    path = shown_path(__file__)
    first = line_of(TwoAddModule.forward, "a = x + x")
    second = line_of(TwoAddModule.forward, "b = a + a")
    expected = f"""\
Legend:
  ■ module_name (module_type)
  ◆ op_name [op_type]

({qualname(TwoSubmodules)})
module inputs: input_0
module outputs: submodule_b.add_1
├── ■ submodule_a ({qualname(TwoAddModule)})
│   module inputs: input_0
│   module outputs: submodule_a.add_1
│   ├── ◆ submodule_a.add [add]
│   │   op inputs: input_0, input_0
│   │   op outputs: submodule_a.add_1
│   │   filepath: {path}:{first}
│   │   code: a = x + x
│   └── ◆ submodule_a.add_1 [add]
│       op inputs: submodule_a.add, submodule_a.add
│       op outputs: submodule_b.add
│       filepath: {path}:{second}
│       code: b = a + a
└── ■ submodule_b ({qualname(TwoAddModule)})
    module inputs: submodule_a.add_1
    module outputs: submodule_b.add_1
    ├── ◆ submodule_b.add [add]
    │   op inputs: submodule_a.add_1, submodule_a.add_1
    │   op outputs: submodule_b.add_1
    │   filepath: {path}:{first}
    │   code: a = x + x
    └── ◆ submodule_b.add_1 [add]
        op inputs: submodule_b.add, submodule_b.add
        op outputs: output_0
        filepath: {path}:{second}
        code: b = a + a"""
    assert two_add.format_summary(colorize=False) == expected


def test_summary_of_conv_bn_relu_linear(cbrl: ModelInspector) -> None:
    text = cbrl.format_summary(colorize=False)
    path = shown_path(__file__)
    conv_line = line_of(ConvBnReluLinear.forward, "y = self.relu(")
    fc_line = line_of(ConvBnReluLinear.forward, "return self.fc(")
    lines = text.splitlines()
    assert lines[:4] == [
        "Legend:",
        "  ■ module_name (module_type)",
        "  ◆ op_name [op_type]",
        "",
    ]
    assert lines[4:7] == [
        f"({qualname(ConvBnReluLinear)})",
        "module inputs: input_0",
        "module outputs: fc.linear",
    ]
    assert lines[7:19] == [
        "├── ■ conv (torch.nn.modules.conv.Conv2d)",
        "│   module inputs: input_0",
        "│   module outputs: conv.conv2d",
        "│   ├── ◆ conv.weight [get_attr]",
        "│   │   op outputs: conv.conv2d",
        "│   ├── ◆ conv.bias [get_attr]",
        "│   │   op outputs: conv.conv2d",
        "│   └── ◆ conv.conv2d [conv2d]",
        "│       op inputs: input_0, conv.weight, conv.bias",
        "│       op outputs: relu.relu",
        f"│       filepath: {path}:{conv_line}",
        "│       code: y = self.relu(self.bn(self.conv(x)))",
    ]
    assert lines[-5:] == [
        "    └── ◆ fc.linear [linear]",
        "        op inputs: pool.adaptive_avg_pool2d, fc.weight, fc.bias",
        "        op outputs: output_0",
        f"        filepath: {path}:{fc_line}",
        "        code: return self.fc(torch.flatten(self.pool(y), 1))",
    ]
    assert "■ relu (torch.nn.modules.activation.ReLU)\n│   module inputs: conv.conv2d" in text
    assert "[placeholder]" not in text and "[output]" not in text and "■ bn" not in text
    coloured = cbrl.format_summary(colorize=True)
    assert "\x1b[" in coloured and "\x1b" not in text


# -- compressor filter ------------------------------------------------------------------------


def test_compressor_keeps_the_compressible_ops(cbrl: ModelInspector) -> None:
    model = ConvBnReluLinear()
    inspector = ModelInspector(model, CBRL_INPUTS, "eager", compressor=Quantizer)
    assert set(names(inspector.ops)) == Quantizer.get_compressible_op_names(
        model, "eager", CBRL_INPUTS
    )
    assert names(inspector.ops) == names(compute_ops(cbrl))
    # edges still name the ops filtered out
    assert inspector.ops[0].inputs[0].op.op_name == "input_0"
    assert "◆ conv.weight" not in inspector.format_summary(colorize=False)


def test_compressor_subclass_filters_the_tree() -> None:
    class OnlyConvs(Quantizer):
        @classmethod
        def get_compressible_op_names(
            cls, model: nn.Module, execution_mode: object, example_inputs: object = None
        ) -> set[str]:
            assert execution_mode is ExecutionMode.EAGER and example_inputs is CBRL_INPUTS
            return {"conv.conv2d"}

    inspector = ModelInspector(ConvBnReluLinear(), CBRL_INPUTS, "eager", compressor=OnlyConvs)
    assert names(inspector.ops) == ["conv.conv2d"]
    root = inspector.summary.model
    assert [n for n, _ in root.named_modules()] == ["", "conv"]
    # boundaries are computed on every op
    assert root.get_submodule("conv").output_ops == {0: BoundaryEdge(inspector.ops[0], 0)}
    assert inspector.get_matched_ops_for_op_type("linear") == ()

    class Nothing(Quantizer):
        @classmethod
        def get_compressible_op_names(cls, *args: object) -> set[str]:
            return set()

    empty = ModelInspector(ConvBnReluLinear(), CBRL_INPUTS, "eager", compressor=Nothing)
    assert empty.ops == ()
    assert empty.format_summary() == "(no compressible operations found)"


# -- arguments and side effects ---------------------------------------------------------------


def test_example_inputs_none_is_refused() -> None:
    with pytest.raises(ValueError, match="example_inputs=None"):
        ModelInspector(TwoSubmodules(), None, "eager")


def test_a_graph_module_is_refused() -> None:
    gm = torch.export.export(TwoSubmodules(), TWO_ADD_INPUTS, strict=False).module()
    with pytest.raises(TypeError, match="GraphModule"):
        ModelInspector(gm, TWO_ADD_INPUTS, "eager")


def test_graph_only_arguments_warn_and_are_ignored() -> None:
    with pytest.warns(UserWarning) as caught:
        inspector = ModelInspector(
            TwoSubmodules(), TWO_ADD_INPUTS, "eager", dynamic_shapes={"x": None}
        )
    assert any(str(w.message).startswith("dynamic_shapes=") for w in caught)
    assert len(compute_ops(inspector)) == 4
    with pytest.warns(UserWarning, match="export_with_no_grad=False"):
        ModelInspector(TwoSubmodules(), TWO_ADD_INPUTS, "eager", export_with_no_grad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ModelInspector(TwoSubmodules(), TWO_ADD_INPUTS, "eager", export_with_no_grad=True)


def test_accessors_and_list_inputs() -> None:
    model = TwoSubmodules()
    inspector = ModelInspector(model, list(TWO_ADD_INPUTS), "EAGER")
    assert inspector.model is model and inspector.execution_mode is ExecutionMode.EAGER
    assert inspector.graph_module is None
    assert repr(inspector) == "ModelInspector(model=TwoSubmodules, execution_mode='eager', ops=6)"


def test_training_flags_and_grad_mode_are_untouched() -> None:
    model = ConvBnReluLinear().train()
    running_mean = model.bn.running_mean.clone()
    ModelInspector(model, CBRL_INPUTS, "eager")
    assert all(m.training for m in model.modules())
    assert torch.is_grad_enabled()
    assert torch.equal(model.bn.running_mean, running_mean)  # ran in eval mode
