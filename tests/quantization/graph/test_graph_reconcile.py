"""Graph-mode reconciliation (behaviour.md §7 and §12 "Graph mode"): which spec each
edge gets, which edges share one fake-quantizer, op-intrinsic output ranges, the
annotation patterns, config priorities and dynamic shapes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from graph_helpers import fq_nodes, fqs_reading, node, prepare, read_values
from torch import fx, nn
from torch.nn import functional as F

from coreai_opt.quantization import QuantizationSpec, Quantizer, QuantizerConfig
from coreai_opt.quantization._graph.insert import is_fq_node
from coreai_opt.quantization.config import ModuleQuantizerConfig, OpQuantizerConfig
from coreai_opt.quantization.spec import (
    PerChannelGranularity,
    PerTensorGranularity,
    QuantizationScheme,
)

INT4 = QuantizationSpec(dtype=torch.int4)
UINT8 = QuantizationSpec(dtype=torch.uint8, qscheme=QuantizationScheme.ASYMMETRIC)
FP8 = QuantizationSpec(dtype=torch.float8_e4m3fn)

# --------------------------------------------------------------------------- helpers


def only_fq(gm: fx.GraphModule, value: str) -> nn.Module:
    """The FQ module of the single FQ call that reads *value*."""
    calls = fqs_reading(gm, value)
    assert len(calls) == 1, f"{value} is read by {len(calls)} FQ calls"
    return gm.get_submodule(str(calls[0].target))


def input_fq(gm: fx.GraphModule, op: str, index: int = 0) -> fx.Node | None:
    """The FQ call that tensor input *index* of *op* is, or None when it is not one."""
    inp = node(gm, op).all_input_nodes[index]
    return inp if is_fq_node(inp) else None


def weight_fq_calls(gm: fx.GraphModule, param: str) -> list[fx.Node]:
    """FQ calls that read the parameter *param*."""
    return [
        n
        for n in fq_nodes(gm)
        if n.args[0].op == "get_attr" and n.args[0].target == param  # type: ignore[union-attr]
    ]


def qparams(fq: nn.Module) -> tuple[float, int]:
    """(scale, zero_point) of a per-tensor FQ after calibration."""
    calc = fq.qparams_calculator
    return float(calc.scale.flatten()[0]), int(calc.zero_point.flatten()[0])


class Fn(nn.Module):
    """A model that applies *fn* to its inputs."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(*args)


class LinearThen(nn.Module):
    """Linear(8, 8) followed by *act*, optionally a second Linear(8, 4)."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor], second: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.act = act
        self.fc2 = nn.Linear(8, 4) if second else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.fc1(x))
        return self.fc2(y) if self.fc2 is not None else y


def x8() -> torch.Tensor:
    """A (16, 8) input with a fixed seed; Linear layers built after it are seeded too."""
    torch.manual_seed(0)
    return torch.randn(16, 8) * 3


# --------------------------------------------------------------------------- intrinsic ranges


def test_sigmoid_into_linear_is_asymmetric_over_the_data_range() -> None:
    x = x8()
    model = LinearThen(torch.sigmoid, second=True).eval()
    gm = prepare(model, QuantizerConfig(), x)
    fq = only_fq(gm, "sigmoid")
    assert input_fq(gm, "linear_1") is not None  # the sigmoid/linear edge: one FQ
    assert fq.qscheme == QuantizationScheme.ASYMMETRIC
    assert tuple(fq.qparams_calculator.float_range) == (None, None)
    with torch.no_grad():
        data_max = torch.sigmoid(model.fc1(x)).max().item()
    scale, zero_point = qparams(fq)
    assert scale == pytest.approx(data_max / 255, rel=1e-5)  # [0, data max], not [0, 1]
    assert scale < 1 / 255
    assert zero_point == -128


def test_sigmoid_at_the_graph_output_keeps_zero_one() -> None:
    gm = prepare(LinearThen(torch.sigmoid), QuantizerConfig(), x8())
    fq = only_fq(gm, "sigmoid")
    assert tuple(fq.qparams_calculator.float_range) == (0.0, 1.0)
    assert fq.qscheme == QuantizationScheme.ASYMMETRIC
    assert fq.dtype == torch.int8
    scale, zero_point = qparams(fq)
    assert scale == pytest.approx(1 / 255, rel=1e-6)
    assert zero_point == -128


@pytest.mark.parametrize("second", [False, True], ids=["graph_output", "into_linear"])
def test_relu_output_scale_is_max_over_255(second: bool) -> None:
    x = x8()
    model = LinearThen(torch.relu, second=second).eval()
    gm = prepare(model, QuantizerConfig(), x)
    fq = only_fq(gm, "relu")
    assert fq.qscheme == QuantizationScheme.ASYMMETRIC
    # shared with the linear's input [None, None], the unpinned bound wins
    expected_range = (None, None) if second else (0.0, None)
    assert tuple(fq.qparams_calculator.float_range) == expected_range
    with torch.no_grad():
        data_max = torch.relu(model.fc1(x)).max().item()
    scale, zero_point = qparams(fq)
    assert scale == pytest.approx(data_max / 255, rel=1e-5)
    assert zero_point == -128


@pytest.mark.parametrize(
    ("act", "name", "scheme", "float_range", "scale", "zero_point"),
    [
        pytest.param(torch.tanh, "tanh", "symmetric", (-1.0, 1.0), 1 / 127.5, 0, id="tanh"),
        pytest.param(F.relu6, "relu6", "asymmetric", (0.0, 6.0), 6 / 255, -128, id="relu6"),
        pytest.param(F.hardsigmoid, "hardsigmoid", "asymmetric", (0.0, 1.0), 1 / 255, -128),
        pytest.param(
            lambda t: F.hardtanh(t, -2.0, 3.0),
            "hardtanh",
            "asymmetric",
            (-2.0, 3.0),
            5 / 255,
            -128 + round(2.0 / (5 / 255)),
            id="hardtanh(-2,3)",
        ),
        pytest.param(
            lambda t: F.hardtanh(t, -2.0, 2.0),
            "hardtanh",
            "symmetric",
            (-2.0, 2.0),
            2 / 127.5,
            0,
            id="hardtanh(-2,2)",
        ),
    ],
)
def test_op_intrinsic_output_range(
    act: Callable[[torch.Tensor], torch.Tensor],
    name: str,
    scheme: str,
    float_range: tuple[float, float],
    scale: float,
    zero_point: int,
) -> None:
    gm = prepare(LinearThen(act), QuantizerConfig(), x8())
    fq = only_fq(gm, name)
    assert fq.qscheme == QuantizationScheme(scheme)
    assert tuple(fq.qparams_calculator.float_range) == float_range
    got_scale, got_zero_point = qparams(fq)
    assert got_scale == pytest.approx(scale, rel=1e-6)
    assert got_zero_point == zero_point


def test_intrinsic_range_is_the_per_bound_union_with_the_consumer() -> None:
    """sigmoid [0, 1] shared with a consumer asking for [-1, 2] → [-1, 2]."""
    consumer = QuantizationSpec(float_range=[-1.0, 2.0])
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_name_config={"linear_1": OpQuantizerConfig(op_input_spec={"*": consumer})}
        )
    )
    gm = prepare(LinearThen(torch.sigmoid, second=True), config, x8())
    fq = only_fq(gm, "sigmoid")
    assert tuple(fq.qparams_calculator.float_range) == (-1.0, 2.0)
    assert fq.qscheme == QuantizationScheme.ASYMMETRIC
    assert input_fq(gm, "linear_1") is fqs_reading(gm, "sigmoid")[0]


def test_intrinsic_ranges_apply_to_integer_dtypes_only() -> None:
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(op_input_spec={"*": FP8}, op_output_spec={"*": FP8})
    )
    gm = prepare(LinearThen(torch.sigmoid), config, x8())
    fq = only_fq(gm, "sigmoid")
    assert fq.dtype == torch.float8_e4m3fn
    assert fq.qscheme == QuantizationScheme.SYMMETRIC
    assert tuple(fq.qparams_calculator.float_range) == (None, None)


# --------------------------------------------------------------------------- sharing


class CatOfSigmoids(nn.Module):
    """cat([sigmoid(a), sigmoid(b)])."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sigmoid(a), torch.sigmoid(b)], dim=1)


def cat_fq_targets(gm: fx.GraphModule, cat: str) -> tuple[set[str], list[str]]:
    """(FQ modules the cat inputs come from, FQ modules reading the cat output)."""
    inputs = {str(n.target) for n in node(gm, cat).all_input_nodes if is_fq_node(n)}
    outputs = [str(n.target) for n in fqs_reading(gm, cat)]
    return inputs, outputs


def test_cat_of_sigmoids_shares_one_fq() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    gm = prepare(CatOfSigmoids(), QuantizerConfig(), a, b)
    inputs, outputs = cat_fq_targets(gm, "cat")
    assert len(node(gm, "cat").all_input_nodes) == 2
    assert all(is_fq_node(n) for n in node(gm, "cat").all_input_nodes)
    assert len(inputs) == 1
    assert set(outputs) <= inputs


@pytest.mark.parametrize("op", ["transpose", "permute"])
def test_rank_keeping_pass_through_shares_one_fq_between_two_linears(op: str) -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(8, 8)
            self.fc2 = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc1(x)
            y = y.transpose(1, 2) if op == "transpose" else y.permute(0, 2, 1)
            return self.fc2(y)

    torch.manual_seed(0)
    gm = prepare(Model(), QuantizerConfig(), torch.randn(2, 4, 8))
    fq = only_fq(gm, "linear")
    mover = node(gm, op)
    assert mover.all_input_nodes[0] is fqs_reading(gm, "linear")[0]
    assert not fqs_reading(gm, op)  # no second FQ after the pass-through op
    assert node(gm, "linear_1").all_input_nodes[0] is mover
    assert isinstance(fq.granularity, PerTensorGranularity)


def test_rank_changing_op_passes_the_qscheme_downstream() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(8, 8)
            self.fc2 = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.sigmoid(self.fc1(x)).reshape(-1, 4))

    torch.manual_seed(0)
    gm = prepare(Model(), QuantizerConfig(), torch.randn(2, 8))
    linear_1_input = node(gm, "linear_1").all_input_nodes[0]
    while not is_fq_node(linear_1_input):
        linear_1_input = linear_1_input.all_input_nodes[0]
    fq = gm.get_submodule(str(linear_1_input.target))
    assert fq.qscheme == QuantizationScheme.ASYMMETRIC


@pytest.mark.parametrize("side", ["consumer", "producer"])
def test_a_decline_on_one_side_of_an_edge_leaves_the_other_sides_fq(side: str) -> None:
    declined = (
        OpQuantizerConfig(op_input_spec={0: None})
        if side == "consumer"
        else OpQuantizerConfig(op_output_spec=None)
    )
    name = "linear_1" if side == "consumer" else "linear"
    config = QuantizerConfig(global_config=ModuleQuantizerConfig(op_name_config={name: declined}))
    torch.manual_seed(0)
    gm = prepare(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4)), config, torch.randn(3, 8))
    fq = input_fq(gm, "linear_1")
    assert fq is not None and fq.args[0] is node(gm, "linear")
    assert len(fqs_reading(gm, "linear")) == 1
    assert gm.get_submodule(str(fq.target)).dtype == torch.int8


def test_declined_on_both_sides_has_no_fq() -> None:
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_name_config={
                "linear": OpQuantizerConfig(op_output_spec=None),
                "linear_1": OpQuantizerConfig(op_input_spec={0: None}),
            }
        )
    )
    torch.manual_seed(0)
    gm = prepare(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4)), config, torch.randn(3, 8))
    assert not fqs_reading(gm, "linear")
    assert input_fq(gm, "linear_1") is None


class TiedHead(nn.Module):
    """Embedding whose weight a Linear head reuses (one parameter read by two ops)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(idx))


def tied_weight_fqs(gm: fx.GraphModule) -> list[fx.Node]:
    """FQ calls reading the tied weight (exported under either owner's name)."""
    return [
        n
        for n in fq_nodes(gm)
        if n.args[0].op == "get_attr"  # type: ignore[union-attr]
        and n.args[0].target in ("emb.weight", "head.weight")  # type: ignore[union-attr]
    ]


def tokens() -> torch.Tensor:
    """Token indices for :class:`TiedHead`."""
    torch.manual_seed(0)
    return torch.randint(0, 10, (2, 5))


def test_a_weight_read_by_two_ops_gets_one_fq() -> None:
    gm = prepare(TiedHead(), QuantizerConfig(), tokens())
    (fq,) = tied_weight_fqs(gm)
    assert {u.name for u in fq.users} == {"embedding", "linear"}
    assert node(gm, "embedding").all_input_nodes[0] is fq
    assert node(gm, "linear").all_input_nodes[1] is fq


def test_a_shared_weight_follows_its_highest_priority_consumer() -> None:
    config = QuantizerConfig(
        module_name_configs={"head": ModuleQuantizerConfig(op_state_spec={"weight": INT4})}
    )
    gm = prepare(TiedHead(), config, tokens())
    (fq,) = tied_weight_fqs(gm)
    assert gm.get_submodule(str(fq.target)).dtype == torch.int4
    assert {u.name for u in fq.users} == {"embedding", "linear"}


@pytest.mark.parametrize(
    ("head_state_spec", "quantized"),
    [
        pytest.param({"weight": None}, False, id="explicit_none_declines"),
        pytest.param({"bias": INT4}, True, id="no_key_matched_defers"),
    ],
)
def test_explicit_none_differs_from_no_key_matched(
    head_state_spec: dict[str, QuantizationSpec | None], quantized: bool
) -> None:
    """The highest-priority consumer of a shared weight decides when it says something
    (a decline included); when none of its keys matches, the next consumer decides."""
    config = QuantizerConfig(
        module_name_configs={"head": ModuleQuantizerConfig(op_state_spec=head_state_spec)}
    )
    gm = prepare(TiedHead(), config, tokens())
    fqs = tied_weight_fqs(gm)
    if not quantized:
        assert not fqs
        return
    (fq,) = fqs
    module = gm.get_submodule(str(fq.target))
    assert module.dtype == torch.int8  # the embedding's (global) spec
    assert module.granularity == PerChannelGranularity(axis=0)


# --------------------------------------------------------------------------- patterns


class Conv(nn.Module):
    def __init__(self, transposed: bool = False) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(3, 4, 3) if transposed else nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.emb(idx)


class Lin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _img() -> tuple[torch.Tensor, ...]:
    return (torch.randn(2, 3, 8, 8),)


def _vec2() -> tuple[torch.Tensor, ...]:
    return torch.randn(4, 8), torch.randn(4, 8)


PATTERNS: list[
    tuple[str, Callable[[], nn.Module], Callable[[], tuple[torch.Tensor, ...]], str, set[str]]
] = [
    # (id, model, inputs, op node, values its FQs read)
    ("conv", Conv, _img, "conv2d", {"x", "conv_weight", "conv2d"}),
    (
        "conv_transpose",
        lambda: Conv(transposed=True),
        _img,
        "conv_transpose2d",
        {"x", "conv_weight", "conv_transpose2d"},
    ),
    ("linear", Lin, lambda: (torch.randn(4, 8),), "linear", {"x", "fc_weight", "linear"}),
    (
        "matmul",
        lambda: Fn(torch.matmul),
        lambda: (torch.randn(2, 4, 8), torch.randn(2, 8, 3)),
        "matmul",
        {"args_0", "args_1", "matmul"},
    ),
    ("add", lambda: Fn(torch.add), _vec2, "add", {"args_0", "args_1", "add"}),
    ("mul", lambda: Fn(torch.mul), _vec2, "mul", {"args_0", "args_1", "mul"}),
    ("sub", lambda: Fn(torch.sub), _vec2, "sub", {"args_0", "args_1", "sub"}),
    (
        "einsum",
        lambda: Fn(lambda a, b: torch.einsum("ij,jk->ik", a, b)),
        lambda: (torch.randn(4, 8), torch.randn(8, 3)),
        "einsum",
        {"args_0", "args_1", "einsum"},
    ),
]


@pytest.mark.parametrize(
    ("make", "inputs", "op", "reads"),
    [pytest.param(m, i, o, r, id=name) for name, m, i, o, r in PATTERNS],
)
def test_weighted_and_nary_patterns_quantize_inputs_state_and_output(
    make: Callable[[], nn.Module],
    inputs: Callable[[], tuple[torch.Tensor, ...]],
    op: str,
    reads: set[str],
) -> None:
    torch.manual_seed(0)
    gm = prepare(make(), QuantizerConfig(), *inputs())
    placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    reads = {placeholders[int(r[-1])] if r.startswith("args_") else r for r in reads}
    assert read_values(gm) == reads
    assert all(is_fq_node(n) for n in node(gm, op).all_input_nodes if n.op != "get_attr")
    assert len(fqs_reading(gm, op)) == 1


def test_embedding_indices_are_not_quantized() -> None:
    gm = prepare(Embed(), QuantizerConfig(), tokens())
    assert read_values(gm) == {"emb_weight", "embedding"}
    weight, idx = node(gm, "embedding").all_input_nodes
    assert is_fq_node(weight) and idx.op == "placeholder"


def test_add_with_a_scalar_quantizes_the_tensor_only() -> None:
    torch.manual_seed(0)
    gm = prepare(Fn(lambda a: a + 1), QuantizerConfig(), torch.randn(4, 8))
    add = node(gm, "add")
    assert is_fq_node(add.args[0]) and add.args[1] == 1  # type: ignore[arg-type]
    assert len(fqs_reading(gm, "add")) == 1
    assert len(fq_nodes(gm)) == 2


@pytest.mark.parametrize(
    ("fn", "op"),
    [
        pytest.param(lambda a: torch.flatten(a, 1), "flatten", id="flatten"),
        pytest.param(lambda a: F.max_pool2d(a, 2), "max_pool2d", id="max_pool2d"),
    ],
)
def test_value_moving_shared_ops_keep_the_input_fq(
    fn: Callable[[torch.Tensor], torch.Tensor], op: str
) -> None:
    torch.manual_seed(0)
    gm = prepare(Fn(fn), QuantizerConfig(), torch.randn(2, 3, 8, 8))
    assert is_fq_node(node(gm, op).all_input_nodes[0])
    assert not fqs_reading(gm, op)
    assert len(fq_nodes(gm)) == 1


@pytest.mark.parametrize(
    ("fn", "op"),
    [
        pytest.param(lambda a: F.avg_pool2d(a, 2), "avg_pool2d", id="avg_pool2d"),
        pytest.param(
            lambda a: F.adaptive_avg_pool2d(a, 1), "adaptive_avg_pool2d", id="adaptive_avg_pool2d"
        ),
        pytest.param(lambda a: a.mean(dim=(2, 3), keepdim=True), "mean", id="mean_keepdim"),
        pytest.param(
            lambda a: a.mean(dim=(2, 3)),
            "mean",
            id="mean_reducing_rank",
        ),
    ],
)
def test_averaging_ops_call_the_shared_fq_again_on_their_output(
    fn: Callable[[torch.Tensor], torch.Tensor], op: str
) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    gm = prepare(Fn(fn), QuantizerConfig(), x)
    before = node(gm, op).all_input_nodes[0]
    (after,) = fqs_reading(gm, op)
    assert is_fq_node(before)
    assert after.target == before.target  # the same module, called again
    assert len({n.target for n in fq_nodes(gm)}) == 1
    assert gm(x).shape == Fn(fn)(x).shape


def test_cat_pattern_shares_one_fq() -> None:
    torch.manual_seed(0)
    gm = prepare(
        Fn(lambda a, b: torch.cat([a, b], dim=0)),
        QuantizerConfig(),
        torch.randn(2, 4),
        torch.randn(3, 4),
    )
    inputs, outputs = cat_fq_targets(gm, "cat")
    assert all(is_fq_node(n) for n in node(gm, "cat").all_input_nodes)
    assert len(inputs) == 1 and set(outputs) <= inputs


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def test_conv_bn_relu_has_no_fq_between_conv_bn_and_relu() -> None:
    torch.manual_seed(0)
    gm = prepare(ConvBnRelu(), QuantizerConfig(), torch.randn(2, 3, 8, 8))
    conv = node(gm, "conv2d")
    relu = node(gm, "relu")
    assert is_fq_node(conv.all_input_nodes[0]) and is_fq_node(conv.all_input_nodes[1])
    # walk back from relu to conv along every input: no FQ on the way
    stack, path = [relu.all_input_nodes[0]], []
    while stack:
        current = stack.pop()
        if current is conv or current in path:
            continue
        assert not is_fq_node(current), f"FQ {current.name} between conv and relu"
        path.append(current)
        stack.extend(current.all_input_nodes)
    assert any(n.op == "call_module" or "batch_norm" in n.name for n in path)
    assert len(fqs_reading(gm, "relu")) == 1
    assert len(fq_nodes(gm)) == 3  # input, (folded) weight, relu output


@pytest.mark.parametrize("users", [1, 2])
def test_a_chain_whose_inner_node_has_several_users_is_not_matched_whole(users: int) -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x)
            return torch.relu(y) + y if users == 2 else torch.relu(y)

    torch.manual_seed(0)
    gm = prepare(Model(), QuantizerConfig(), torch.randn(3, 8))
    if users == 1:  # linear → relu is one pattern: nothing in between
        assert node(gm, "relu").all_input_nodes[0] is node(gm, "linear")
    else:  # linear alone: its output is quantized for relu and add
        (fq,) = fqs_reading(gm, "linear")
        assert node(gm, "relu").all_input_nodes[0] is fq
        assert fq in node(gm, "add").all_input_nodes


# --------------------------------------------------------------------------- per-tensor forcing

PER_CHANNEL_1 = QuantizationSpec(granularity=PerChannelGranularity(axis=1))


@pytest.mark.parametrize(
    ("fn", "per_channel"),
    [
        pytest.param(lambda t: t.clone(), True, id="clone"),
        pytest.param(lambda t: F.max_pool2d(t, 2), True, id="max_pool2d"),
        pytest.param(lambda t: F.avg_pool2d(t, 2), True, id="avg_pool2d"),
        pytest.param(
            lambda t: F.adaptive_avg_pool2d(t, 1),
            True,
            id="adaptive_avg_pool2d",
        ),
        pytest.param(lambda t: t.mean(dim=(2, 3), keepdim=True), True, id="mean_hw"),
        pytest.param(lambda t: t.mean(dim=1, keepdim=True), False, id="mean_over_the_axis"),
        pytest.param(lambda t: t.transpose(2, 3), True, id="transpose_hw"),
        pytest.param(lambda t: t.transpose(1, 2), False, id="transpose_moves_the_axis"),
        pytest.param(lambda t: t.permute(0, 1, 3, 2), True, id="permute_keeps_the_axis"),
        pytest.param(lambda t: t.permute(0, 2, 1, 3), False, id="permute_moves_the_axis"),
        pytest.param(lambda t: torch.flatten(t, 2), False, id="flatten_always"),
    ],
)
def test_a_shared_fq_becomes_per_tensor_only_when_its_axis_is_invalidated(
    fn: Callable[[torch.Tensor], torch.Tensor], per_channel: bool
) -> None:
    """conv (per-channel axis-1 output) → *fn* → mul asking for the same spec."""

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return fn(self.conv(x)) * 2

    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_input_spec={"*": PER_CHANNEL_1}, op_output_spec={"*": PER_CHANNEL_1}
        )
    )
    torch.manual_seed(0)
    gm = prepare(Model(), config, torch.randn(2, 3, 8, 8))
    fq = only_fq(gm, "conv2d")
    # the mul reads the conv's FQ through fn (averages call it again): one FQ module
    mul_input = node(gm, "mul").all_input_nodes[0]
    if is_fq_node(mul_input):
        assert mul_input.target == fqs_reading(gm, "conv2d")[0].target
    assert len({n.target for n in fq_nodes(gm) if n.args[0].op != "get_attr"}) == 3  # type: ignore[union-attr]
    expected = PerChannelGranularity(axis=1) if per_channel else PerTensorGranularity()
    assert fq.granularity == expected


# --------------------------------------------------------------------------- priorities


@pytest.mark.parametrize("levels", ["global", "type", "name"])
def test_module_name_beats_module_type_beats_global(levels: str) -> None:
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(),  # int8
    )
    if levels in ("type", "name"):
        config.set_module_type(
            nn.Linear,
            ModuleQuantizerConfig(
                op_input_spec={"*": INT4},
                op_output_spec={"*": INT4},
                op_state_spec={
                    "weight": QuantizationSpec(
                        dtype=torch.int4, granularity=PerChannelGranularity()
                    )
                },
            ),
        )
    if levels == "name":
        config.set_module_name(
            "fc",
            ModuleQuantizerConfig(
                op_input_spec={"*": UINT8},
                op_output_spec={"*": UINT8},
                op_state_spec={
                    "weight": QuantizationSpec(
                        dtype=torch.uint8, granularity=PerChannelGranularity()
                    )
                },
            ),
        )
    expected = {"global": torch.int8, "type": torch.int4, "name": torch.uint8}[levels]
    torch.manual_seed(0)
    gm = prepare(Lin(), config, torch.randn(4, 8))
    for value in ("x", "fc_weight", "linear"):
        assert only_fq(gm, value).dtype == expected


def test_op_name_config_beats_op_type_config() -> None:
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_type_config={
                "linear": OpQuantizerConfig(op_input_spec={"*": INT4}, op_output_spec={"*": INT4})
            },
            op_name_config={
                "linear_1": OpQuantizerConfig(
                    op_input_spec={"*": UINT8}, op_output_spec={"*": UINT8}
                )
            },
        )
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8))
    gm = prepare(model, config, torch.randn(3, 8))
    assert only_fq(gm, "input_1").dtype == torch.int4  # linear: op_type
    assert only_fq(gm, "linear_1").dtype == torch.uint8  # linear_1: op_name
    assert only_fq(gm, "tanh").dtype == torch.uint8  # the edge into linear_1


def test_the_later_module_name_entry_wins() -> None:
    config = QuantizerConfig(
        module_name_configs={
            "fc.*": ModuleQuantizerConfig(op_input_spec={"*": INT4}, op_output_spec=None),
            "fc1": ModuleQuantizerConfig(op_input_spec={"*": UINT8}, op_output_spec=None),
        }
    )

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(8, 8)
            self.fc2 = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc1(x) + self.fc2(x * 2)

    torch.manual_seed(0)
    gm = prepare(Model(), config, torch.randn(3, 8))
    assert gm.get_submodule(str(input_fq(gm, "linear").target)).dtype == torch.uint8  # type: ignore[union-attr]
    assert gm.get_submodule(str(input_fq(gm, "linear_1").target)).dtype == torch.int4  # type: ignore[union-attr]


def test_an_edge_takes_the_higher_priority_consumer_spec() -> None:
    """producer under global (int8), consumer under a module_name config (int4)."""
    config = QuantizerConfig(
        module_name_configs={
            "1": ModuleQuantizerConfig(op_input_spec={"*": INT4}, op_output_spec={"*": INT4})
        }
    )
    torch.manual_seed(0)
    gm = prepare(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4)), config, torch.randn(3, 8))
    (fq,) = fqs_reading(gm, "linear")
    assert gm.get_submodule(str(fq.target)).dtype == torch.int4
    assert input_fq(gm, "linear_1") is fq


def test_an_edge_takes_the_higher_priority_producer_spec() -> None:
    """producer under a module_name config (int4), consumer under global (int8)."""
    config = QuantizerConfig(
        module_name_configs={
            "0": ModuleQuantizerConfig(op_input_spec={"*": INT4}, op_output_spec={"*": INT4})
        }
    )
    torch.manual_seed(0)
    gm = prepare(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4)), config, torch.randn(3, 8))
    (fq,) = fqs_reading(gm, "linear")
    assert input_fq(gm, "linear_1") is fq
    assert gm.get_submodule(str(fq.target)).dtype == torch.int4


class ProducerBlock(nn.Module):
    """Linear → relu (a 2-op pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


class ConsumerBlock(nn.Module):
    """A lone Linear (a 1-op pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_an_edge_takes_the_longer_patterns_spec_at_the_same_level() -> None:
    config = QuantizerConfig(
        module_type_configs={
            ProducerBlock: ModuleQuantizerConfig(op_input_spec=None, op_output_spec={"*": INT4}),
            ConsumerBlock: ModuleQuantizerConfig(op_input_spec={"*": UINT8}, op_output_spec=None),
        }
    )
    torch.manual_seed(0)
    gm = prepare(nn.Sequential(ProducerBlock(), ConsumerBlock()), config, torch.randn(3, 8))
    (fq,) = fqs_reading(gm, "relu")
    assert input_fq(gm, "linear_1") is fq
    assert gm.get_submodule(str(fq.target)).dtype == torch.int4


# --------------------------------------------------------------------------- dynamic shapes


def test_dynamic_batch_dimension_runs_on_other_batch_sizes() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1)
            return self.fc(y)

    torch.manual_seed(0)
    model = Model().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    gm = Quantizer(model, QuantizerConfig()).prepare(
        (torch.randn(4, 3, 8, 8),), dynamic_shapes=({0: batch},)
    )
    assert fq_nodes(gm)
    for size in (1, 7, 33):
        x = torch.randn(size, 3, 8, 8)
        y = gm(x)
        assert y.shape == (size, 2)
        # observers are off after prepare: each row is computed on its own
        assert torch.allclose(y[:1], gm(x[:1]), atol=1e-6)
    x = torch.randn(4, 3, 8, 8)
    assert torch.allclose(gm(x), model(x), atol=0.1)
