"""ModelInspector in graph mode: argument checks, op records, edges, module tree, queries."""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Iterable

import pytest
import torch
from inspection_helpers import qualname
from torch import fx, nn

from coreai_opt.inspection import (
    BoundaryEdge,
    InputEdge,
    ModelInspector,
    ModelSummary,
    ModuleContext,
    ModuleInfo,
    OpInfo,
    SourceFrame,
)
from coreai_opt.inspection._errors import InvalidExecutionModeError
from coreai_opt.quantization import ExecutionMode, Quantizer

# -- models -----------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """conv -> relu."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class Head(nn.Module):
    """linear(x) + skip: two module inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + skip


class Net(nn.Module):
    """submodule_a (conv, relu), a mean, submodule_b (linear, add), a split, an add, a relu."""

    def __init__(self) -> None:
        super().__init__()
        self.submodule_a = ConvBlock()
        self.submodule_b = Head()
        self.register_buffer("offset", torch.ones(2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.submodule_a(x).mean(dim=(2, 3))
        z = self.submodule_b(y, y * 2)
        lo, hi = torch.split(z, 2, dim=1)
        return torch.relu(hi + self.offset), lo


EXAMPLE = (torch.randn(2, 3, 8, 8),)
NET_OPS = [
    # (op_name, op_type, module it is placed in, is_state)
    ("submodule_a_conv_weight", "get_attr", "submodule_a.conv", True),
    ("submodule_a_conv_bias", "get_attr", "submodule_a.conv", True),
    ("submodule_b_linear_weight", "get_attr", "submodule_b.linear", True),
    ("submodule_b_linear_bias", "get_attr", "submodule_b.linear", True),
    ("offset", "get_attr", "", True),
    ("x", "placeholder", "", False),
    ("conv2d", "conv2d", "submodule_a.conv", False),
    ("relu", "relu", "submodule_a.relu", False),
    ("mean", "mean", "", False),
    ("mul", "mul", "", False),
    ("linear", "linear", "submodule_b.linear", False),
    ("add", "add", "submodule_b", False),
    ("split", "split", "", False),
    ("add_1", "add", "", False),
    ("relu_1", "relu", "", False),
    ("output", "output", "", False),
]


def names(ops: Iterable[OpInfo]) -> list[str]:
    return [op.op_name for op in ops]


@pytest.fixture(scope="module")
def inspector() -> ModelInspector:
    torch.manual_seed(0)
    return ModelInspector(Net(), EXAMPLE, ExecutionMode.GRAPH)


def op(inspector: ModelInspector, name: str) -> OpInfo:
    (found,) = inspector.get_matched_ops_for_op_name(name)
    return found


# -- the documented example -------------------------------------------------------------------


def test_config_guide_example() -> None:
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    inspector = ModelInspector(model, example_inputs=(torch.randn(1, 10),), execution_mode="graph")
    compute = [
        o for o in inspector.ops if not o.is_state and o.op_type not in {"placeholder", "output"}
    ]
    assert [(o.op_name, o.op_type, o.module_name) for o in compute] == [
        ("linear", "linear", "0"),
        ("relu", "relu", "1"),
        ("linear_1", "linear", "2"),
    ]
    root = inspector.summary.model
    assert root.module_type == "torch.nn.modules.container.Sequential"
    assert [(n, m.module_type) for n, m in root.named_children()] == [
        ("0", "torch.nn.modules.linear.Linear"),
        ("1", "torch.nn.modules.activation.ReLU"),
        ("2", "torch.nn.modules.linear.Linear"),
    ]
    assert names(inspector.get_matched_ops_for_op_type("linear")) == ["linear", "linear_1"]
    assert names(inspector.get_matched_ops_for_module_type(nn.ReLU)) == ["relu"]
    text = inspector.format_summary(colorize=False)
    assert "◆ linear_1 [linear]" in text
    assert "■ 2 (torch.nn.modules.linear.Linear)" in text


# -- op records -----------------------------------------------------------------------------


def test_every_node_becomes_an_op_in_graph_order(inspector: ModelInspector) -> None:
    got = [(o.op_name, o.op_type, o.module_name, o.is_state) for o in inspector.ops]
    assert got == NET_OPS
    # getitem nodes are folded into the edges, not listed as ops
    assert not any(o.op_name.startswith("getitem") for o in inspector.ops)
    assert inspector.summary.model.all_ops() == inspector.ops


def test_module_stack_root_first_with_qualified_types(inspector: ModelInspector) -> None:
    assert op(inspector, "conv2d").module_stack == (
        ModuleContext("", qualname(Net)),
        ModuleContext("submodule_a", qualname(ConvBlock)),
        ModuleContext("submodule_a.conv", "torch.nn.modules.conv.Conv2d"),
    )
    assert op(inspector, "add").module_stack == (
        ModuleContext("", qualname(Net)),
        ModuleContext("submodule_b", qualname(Head)),
    )
    assert op(inspector, "mean").module_stack == (ModuleContext("", qualname(Net)),)
    assert op(inspector, "add").module_type == qualname(Head)


def test_source_frames_are_the_forward_frames(inspector: ModelInspector) -> None:
    frames = op(inspector, "conv2d").source_frames
    assert frames and all(f.function_name == "forward" for f in frames)
    lines, start = inspect.getsourcelines(ConvBlock.forward)
    offset = next(i for i, line in enumerate(lines) if "self.relu(self.conv(x))" in line)
    assert SourceFrame(__file__, start + offset, "forward", "return self.relu(self.conv(x))") in (
        frames
    )
    # outermost first: Net.forward, ConvBlock.forward, then torch's Conv2d.forward
    assert frames[0].code_context == "y = self.submodule_a(x).mean(dim=(2, 3))"
    assert frames[-1].filename.endswith("conv.py")
    assert op(inspector, "x").source_frames == ()


def test_state_ops(inspector: ModelInspector) -> None:
    state = [o for o in inspector.ops if o.is_state]
    assert names(state) == [
        "submodule_a_conv_weight",
        "submodule_a_conv_bias",
        "submodule_b_linear_weight",
        "submodule_b_linear_bias",
        "offset",
    ]
    weight = op(inspector, "submodule_a_conv_weight")
    assert weight.inputs == ()
    assert weight.outputs == {0: (op(inspector, "conv2d"),)}
    assert [c.module_name for c in weight.module_stack] == ["", "submodule_a", "submodule_a.conv"]
    conv_module = inspector.summary.model.get_submodule("submodule_a.conv")
    assert names(conv_module.ops) == ["submodule_a_conv_weight", "submodule_a_conv_bias", "conv2d"]
    assert op(inspector, "offset") in inspector.summary.model.ops
    assert not op(inspector, "conv2d").is_state


# -- edges ----------------------------------------------------------------------------------


def test_input_edges_name_producer_and_output_index(inspector: ModelInspector) -> None:
    conv = op(inspector, "conv2d")
    assert conv.inputs == (
        InputEdge(op(inspector, "x"), 0),
        InputEdge(op(inspector, "submodule_a_conv_weight"), 0),
        InputEdge(op(inspector, "submodule_a_conv_bias"), 0),
    )
    # hi = split(...)[1]: the getitem is folded into output index 1 of split
    add_1 = op(inspector, "add_1")
    assert add_1.inputs == (
        InputEdge(op(inspector, "split"), 1),
        InputEdge(op(inspector, "offset")),
    )
    assert add_1.inputs[0].op.op_type == "split"
    assert op(inspector, "output").inputs == (
        InputEdge(op(inspector, "relu_1"), 0),
        InputEdge(op(inspector, "split"), 0),
    )


def test_outputs_map_output_index_to_readers(inspector: ModelInspector) -> None:
    assert op(inspector, "split").outputs == {
        0: (op(inspector, "output"),),
        1: (op(inspector, "add_1"),),
    }
    assert op(inspector, "mean").outputs == {0: (op(inspector, "mul"), op(inspector, "linear"))}
    assert op(inspector, "output").outputs == {}
    x = op(inspector, "x")
    assert x.outputs == {0: (op(inspector, "conv2d"),)} and x.inputs == ()


def test_root_boundary_is_the_model_inputs_and_outputs(inspector: ModelInspector) -> None:
    root = inspector.summary.model
    assert root.input_ops == {0: [BoundaryEdge(op(inspector, "conv2d"), 0)]}
    assert root.output_ops == {
        0: BoundaryEdge(op(inspector, "relu_1"), 0),
        1: BoundaryEdge(op(inspector, "split"), 0),
    }


def test_submodule_boundaries(inspector: ModelInspector) -> None:
    root = inspector.summary.model
    head = root.get_submodule("submodule_b")
    # two tensors enter (mean for linear's input 0, mul for add's input 1); state does not count
    assert head.input_ops == {
        0: [BoundaryEdge(op(inspector, "linear"), 0)],
        1: [BoundaryEdge(op(inspector, "add"), 1)],
    }
    assert head.output_ops == {0: BoundaryEdge(op(inspector, "add"), 0)}
    block = root.get_submodule("submodule_a")
    assert block.input_ops == {0: [BoundaryEdge(op(inspector, "conv2d"), 0)]}
    assert block.output_ops == {0: BoundaryEdge(op(inspector, "relu"), 0)}
    relu = root.get_submodule("submodule_a.relu")
    assert relu.input_ops == {0: [BoundaryEdge(op(inspector, "relu"), 0)]}


def test_one_tensor_read_twice_inside_is_one_module_input() -> None:
    class Twice(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x.sigmoid()

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Twice()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x + 1)

    inspector = ModelInspector(Outer(), (torch.randn(3),), "graph")
    inner = inspector.summary.model.get_submodule("inner")
    assert {k: [(e.op.op_name, e.index) for e in v] for k, v in inner.input_ops.items()} == {
        0: [("sigmoid", 0), ("mul", 0)]
    }
    assert inner.output_ops == {0: BoundaryEdge(op(inspector, "mul"), 0)}


# -- module tree ----------------------------------------------------------------------------


def test_module_tree_navigation(inspector: ModelInspector) -> None:
    summary = inspector.summary
    assert isinstance(summary, ModelSummary) and summary.mode is ExecutionMode.GRAPH
    root = summary.model
    assert isinstance(root, ModuleInfo)
    assert (root.module_name, root.module_type) == ("", qualname(Net))
    assert [n for n, _ in root.named_children()] == ["submodule_a", "submodule_b"]
    assert [m.module_name for m in root.children()] == ["submodule_a", "submodule_b"]
    assert [n for n, _ in root.named_modules()] == [
        "",
        "submodule_a",
        "submodule_a.conv",
        "submodule_a.relu",
        "submodule_b",
        "submodule_b.linear",
    ]
    assert [m.module_name for m in root.modules()] == [n for n, _ in root.named_modules()]
    block = root.get_submodule("submodule_a")
    assert [n for n, _ in block.named_modules()] == ["", "conv", "relu"]
    assert root.get_submodule("") is root
    assert block.get_submodule("conv") is root.get_submodule("submodule_a.conv")
    assert root.child_modules["submodule_b"].module_type == qualname(Head)
    assert names(block.all_ops()) == [
        "submodule_a_conv_weight",
        "submodule_a_conv_bias",
        "conv2d",
        "relu",
    ]
    assert names(root.ops) == ["offset", "x", "mean", "mul", "split", "add_1", "relu_1", "output"]


@pytest.mark.parametrize("path", ["nope", "submodule_a.nope", "submodule_a.conv.weight"])
def test_get_submodule_missing_raises_key_error(inspector: ModelInspector, path: str) -> None:
    with pytest.raises(KeyError, match=path.rpartition(".")[2]):
        inspector.summary.model.get_submodule(path)


def test_module_list_container_gets_its_type() -> None:
    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = layer(x)
            return x

    inspector = ModelInspector(Stack(), (torch.randn(1, 2),), "graph")
    layers = inspector.summary.model.get_submodule("layers")
    assert layers.module_type == "torch.nn.modules.container.ModuleList"
    assert [n for n, _ in layers.named_children()] == ["0", "1"]
    assert names(inspector.get_matched_ops_for_module_name(r"layers\.1")) == [
        "layers_1_weight",
        "layers_1_bias",
        "linear_1",
    ]


# -- queries --------------------------------------------------------------------------------


def test_query_op_type_is_exact(inspector: ModelInspector) -> None:
    assert names(inspector.get_matched_ops_for_op_type("add")) == ["add", "add_1"]
    assert names(inspector.get_matched_ops_for_op_type("relu")) == ["relu", "relu_1"]
    assert inspector.get_matched_ops_for_op_type("ad") == ()
    assert inspector.get_matched_ops_for_op_type("Add") == ()
    assert isinstance(inspector.get_matched_ops_for_op_type("conv2d"), tuple)


def test_query_op_name_is_a_full_regex_match(inspector: ModelInspector) -> None:
    assert names(inspector.get_matched_ops_for_op_name("add")) == ["add"]
    assert names(inspector.get_matched_ops_for_op_name(r"add(_\d+)?")) == ["add", "add_1"]
    assert names(inspector.get_matched_ops_for_op_name("relu.*")) == ["relu", "relu_1"]
    assert inspector.get_matched_ops_for_op_name("dd") == ()


def test_query_module_name_matches_any_module_of_the_stack(inspector: ModelInspector) -> None:
    assert names(inspector.get_matched_ops_for_module_name("submodule_a")) == [
        "submodule_a_conv_weight",
        "submodule_a_conv_bias",
        "conv2d",
        "relu",
    ]
    assert names(inspector.get_matched_ops_for_module_name(r"submodule_a\.relu")) == ["relu"]
    assert names(inspector.get_matched_ops_for_module_name(r"submodule_b(\..*)?")) == [
        "submodule_b_linear_weight",
        "submodule_b_linear_bias",
        "linear",
        "add",
    ]
    assert inspector.get_matched_ops_for_module_name("submodule") == ()
    assert len(inspector.get_matched_ops_for_module_name("")) == len(NET_OPS)


def test_query_module_type_by_class_or_qualified_name(inspector: ModelInspector) -> None:
    linear_ops = ["submodule_b_linear_weight", "submodule_b_linear_bias", "linear"]
    assert names(inspector.get_matched_ops_for_module_type(nn.Linear)) == linear_ops
    assert (
        names(inspector.get_matched_ops_for_module_type("torch.nn.modules.linear.Linear"))
        == linear_ops
    )
    assert inspector.get_matched_ops_for_module_type("torch.nn.Linear") == ()
    assert names(inspector.get_matched_ops_for_module_type(Head)) == [*linear_ops, "add"]
    assert names(inspector.get_matched_ops_for_module_type(nn.ReLU)) == ["relu"]
    # exact type: a subclass of Conv2d does not match Conv2d
    assert inspector.get_matched_ops_for_module_type(nn.Conv1d) == ()
    with pytest.raises(TypeError, match="module_type"):
        inspector.get_matched_ops_for_module_type(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "query", ["get_matched_ops_for_op_name", "get_matched_ops_for_module_name"]
)
def test_bad_regex_is_a_value_error_naming_it(inspector: ModelInspector, query: str) -> None:
    argument = query.removeprefix("get_matched_ops_for_")
    with pytest.raises(ValueError, match=rf"{argument}='conv\(' is not a valid regular expression"):
        getattr(inspector, query)("conv(")


# -- OpInfo and the frozen records -----------------------------------------------------------


def test_op_info_equality_and_hash_by_name() -> None:
    a = OpInfo("conv2d", "conv2d")
    b = OpInfo("conv2d", "linear", is_state=True)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != OpInfo("conv2d_1", "conv2d")
    a.op_type = "something_else"  # other fields may change
    with pytest.raises(AttributeError, match="op_name"):
        a.op_name = "renamed"
    assert a.op_name == "conv2d"
    assert a.outputs == {} and a.inputs == () and not a.is_state


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (SourceFrame("f.py", 1, "forward", "x"), "lineno"),
        (ModuleContext("a", "pkg.A"), "module_name"),
        (InputEdge(OpInfo("a"), 0), "index"),
        (BoundaryEdge(OpInfo("a"), 0), "index"),
        (ModelSummary(ModuleInfo("", None), ExecutionMode.GRAPH), "mode"),
    ],
)
def test_frozen_records(record: object, field: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, field, None)


def test_reprs_do_not_walk_the_graph(inspector: ModelInspector) -> None:
    text = repr(op(inspector, "add_1"))
    assert "op_name='add_1'" in text and "'split[1]'" in text
    assert repr(InputEdge(op(inspector, "split"), 1)) == "InputEdge(op='split', index=1)"
    assert "child_modules=['submodule_a', 'submodule_b']" in repr(inspector.summary.model)


# -- argument checks ------------------------------------------------------------------------


def test_model_must_be_a_module() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        ModelInspector(lambda x: x, EXAMPLE, "graph")  # type: ignore[arg-type]


def test_example_inputs_none_only_for_graph_module_in_graph_mode() -> None:
    with pytest.raises(ValueError, match="example_inputs=None"):
        ModelInspector(Net(), None, "graph")
    gm = torch.export.export(Net(), EXAMPLE, strict=False).module()
    with pytest.raises(ValueError, match="example_inputs=None"):
        ModelInspector(gm, None, "eager")


@pytest.mark.parametrize("compressor", [nn.Module, "Quantizer", object, 3])
def test_compressor_must_be_a_quantizer_class(compressor: object) -> None:
    with pytest.raises(ValueError, match="compressor must be None or the Quantizer class"):
        ModelInspector(Net(), EXAMPLE, "graph", compressor=compressor)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["turbo", "", 3, None])
def test_unknown_execution_mode(mode: object) -> None:
    with pytest.raises(InvalidExecutionModeError, match="execution_mode") as caught:
        ModelInspector(Net(), EXAMPLE, mode)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert "'graph'" in str(caught.value) and "'eager'" in str(caught.value)


def test_execution_mode_spellings() -> None:
    assert ModelInspector(Net(), EXAMPLE, "GRAPH").execution_mode is ExecutionMode.GRAPH
    with pytest.warns(DeprecationWarning):
        inspector = ModelInspector(Net(), EXAMPLE, "pt2e")
    assert inspector.summary.mode is ExecutionMode.GRAPH


def test_eager_mode_inspects_the_same_model() -> None:
    inspector = ModelInspector(Net(), EXAMPLE, ExecutionMode.EAGER)
    assert inspector.summary.mode is ExecutionMode.EAGER and inspector.graph_module is None
    assert "submodule_a.conv.conv2d" in names(inspector.ops)


def test_eager_mode_warns_about_graph_only_arguments() -> None:
    with pytest.warns(UserWarning) as record:
        inspector = ModelInspector(
            Net(), EXAMPLE, "eager", dynamic_shapes={"x": None}, export_with_no_grad=False
        )
    assert inspector.execution_mode is ExecutionMode.EAGER
    messages = [str(w.message) for w in record]
    assert any(m.startswith("dynamic_shapes=") for m in messages)
    assert any(m.startswith("export_with_no_grad=False") for m in messages)


def test_eager_mode_refuses_a_graph_module() -> None:
    gm = torch.export.export(Net(), EXAMPLE, strict=False).module()
    with pytest.raises(TypeError, match="GraphModule"):
        ModelInspector(gm, EXAMPLE, "eager")


def test_export_failure_keeps_its_type_and_adds_hints() -> None:
    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:
                return x + 1
            return x - 1

    with pytest.raises(Exception) as caught:  # torch's own error type
        ModelInspector(DataDependent(), (torch.randn(2),), "graph")
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "export_with_no_grad=False" in notes and "dynamic_shapes" in notes


# -- export options ---------------------------------------------------------------------------


def test_dynamic_shapes_are_passed_to_export(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = torch.export.Dim("batch", min=2, max=64)
    seen: dict[str, object] = {}
    real_export = torch.export.export

    def spy(*args: object, **kwargs: object) -> object:
        seen.update(kwargs, grad=torch.is_grad_enabled())
        return real_export(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.export, "export", spy)
    inspector = ModelInspector(Net(), EXAMPLE, "graph", dynamic_shapes={"x": {0: batch}})
    assert seen["dynamic_shapes"] == {"x": {0: batch}} and seen["strict"] is False
    assert seen["grad"] is False
    x = next(n for n in inspector.graph_module.graph.nodes if n.op == "placeholder")
    assert isinstance(x.meta["val"].shape[0], torch.SymInt)
    # the exported graph runs on another batch size (guards are not checked either way)
    assert inspector.graph_module(torch.randn(5, 3, 8, 8))[0].shape == (5, 2)

    static = ModelInspector(Net(), EXAMPLE, "graph", export_with_no_grad=False)
    assert seen["dynamic_shapes"] is None and seen["grad"] is True
    x = next(n for n in static.graph_module.graph.nodes if n.op == "placeholder")
    assert x.meta["val"].shape[0] == 2 and not isinstance(x.meta["val"].shape[0], torch.SymInt)


def test_graph_module_with_example_inputs_none_is_used_as_given(
    inspector: ModelInspector,
) -> None:
    gm = torch.export.export(Net(), EXAMPLE, strict=False).module()
    given = ModelInspector(gm, None, "graph")
    assert given.graph_module is gm
    assert [(o.op_name, o.op_type, o.module_name) for o in given.ops] == [
        (o.op_name, o.op_type, o.module_name) for o in inspector.ops
    ]
    # the root type comes from the recorded module stacks
    assert given.summary.model.module_type == qualname(Net)
    with pytest.warns(UserWarning, match="dynamic_shapes is ignored"):
        ModelInspector(gm, None, "graph", dynamic_shapes={"x": None})


def test_graph_module_without_export_metadata() -> None:
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x)) + 1

    gm = fx.symbolic_trace(Plain())
    for node in gm.graph.nodes:  # drop what newer tracers record
        node.meta.pop("nn_module_stack", None)
        node.meta.pop("torch_fn", None)
    inspector = ModelInspector(gm, None, "graph")
    got = {o.op_name: (o.op_type, o.module_name) for o in inspector.ops}
    assert got["fc"] == ("Linear", "fc")
    assert got["relu"] == ("relu", "")
    assert inspector.summary.model.get_submodule("fc").module_type == (
        "torch.nn.modules.linear.Linear"
    )


# -- compressor ---------------------------------------------------------------------------------


class KeepConvAndLinear(Quantizer):
    """Stands in for the graph-mode implementation of get_compressible_op_names."""

    calls: list[tuple[object, object]] = []  # noqa: RUF012

    @classmethod
    def get_compressible_op_names(cls, model: nn.Module, execution_mode: object) -> set[str]:
        cls.calls.append((model, execution_mode))
        return {"conv2d", "linear"}


class KeepNothing(Quantizer):
    """A compressor that finds nothing to compress."""

    @classmethod
    def get_compressible_op_names(cls, model: nn.Module, execution_mode: object) -> set[str]:
        return set()


def test_compressor_keeps_only_its_compressible_ops() -> None:
    KeepConvAndLinear.calls.clear()
    inspector = ModelInspector(Net(), EXAMPLE, "graph", compressor=KeepConvAndLinear)
    ((model, mode),) = KeepConvAndLinear.calls
    assert model is inspector.graph_module and mode is ExecutionMode.GRAPH
    assert names(inspector.ops) == ["conv2d", "linear"]
    assert names(inspector.get_matched_ops_for_op_type("relu")) == []
    assert names(inspector.get_matched_ops_for_module_name("submodule_.*")) == ["conv2d", "linear"]
    root = inspector.summary.model
    # modules without kept ops are left out of the tree; edges still describe the whole graph
    assert [n for n, _ in root.named_modules()] == [
        "",
        "submodule_a",
        "submodule_a.conv",
        "submodule_b",
        "submodule_b.linear",
    ]
    assert root.ops == [] and names(root.all_ops()) == ["conv2d", "linear"]
    conv = root.get_submodule("submodule_a.conv").ops[0]
    assert [e.op.op_name for e in conv.inputs] == [
        "x",
        "submodule_a_conv_weight",
        "submodule_a_conv_bias",
    ]
    assert names(conv.outputs[0]) == ["relu"]
    assert root.input_ops == {0: [BoundaryEdge(conv, 0)]}


def test_compressor_with_nothing_to_compress() -> None:
    inspector = ModelInspector(Net(), EXAMPLE, "graph", compressor=KeepNothing)
    assert inspector.ops == ()
    assert inspector.get_matched_ops_for_op_name(".*") == ()
    assert list(inspector.summary.model.children()) == []
    assert inspector.format_summary() == "(no compressible operations found)"


def test_quantizer_itself_is_accepted_as_compressor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        Quantizer,
        "get_compressible_op_names",
        classmethod(lambda cls, model, mode: {"add", "add_1"}),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inspector = ModelInspector(Net(), EXAMPLE, "graph", compressor=Quantizer)
    assert names(inspector.ops) == ["add", "add_1"]


def test_invalid_execution_mode_error_is_shared_with_quantization() -> None:
    import coreai_opt.inspection as inspection
    from coreai_opt.quantization import config

    assert issubclass(InvalidExecutionModeError, ValueError)
    assert inspection.InvalidExecutionModeError is InvalidExecutionModeError
    if hasattr(config, "InvalidExecutionModeError"):  # once the quantization package has it
        assert config.InvalidExecutionModeError is InvalidExecutionModeError
