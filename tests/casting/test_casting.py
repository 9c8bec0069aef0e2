"""``coreai_opt.casting`` on small exported models.

Each test exports a fresh program (the passes modify it in place), casts it and checks the
dtypes of its state, placeholders and nodes, that it still runs (``ep.module()``) close to
the float32 model, and the casts at the boundary of ignored / overflowing ops.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.export import ExportedProgram

import coreai_opt.casting
from coreai_opt.casting import cast_fp32_to_fp16, cast_int32_to_int16, cast_to_16_bit_precision

aten = torch.ops.aten
F16_TOL = {"atol": 2e-2, "rtol": 2e-2}


# -- models -----------------------------------------------------------------------------------


class TinyLM(nn.Module):
    """Embedding + linear + layer norm + softmax, positions from arange, dtype constants."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 8)
        self.pos = nn.Embedding(16, 8)
        self.lin = nn.Linear(8, 8)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[-1])
        h = self.emb(ids) + self.pos(positions) + x.to(torch.float32)
        h = h + torch.full((8,), 0.5, dtype=torch.float32) + torch.full((8,), 0.25)
        h = self.ln(torch.relu(self.lin(h)))
        return torch.softmax(self.head(h), dim=-1)


class ConvNet(nn.Module):
    """Conv + batch norm (eval) + ReLU + pooling + linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.mean(dim=(2, 3)))


class Overflowing(nn.Module):
    """A buffer beyond float16 (a normaliser: activations stay small) and a -1e9 mask fill."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("scale", torch.tensor([1.0e5, 2.0e5, 1.0, 3.0]))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.lin(x * 1000.0) / self.scale
        return torch.softmax(h.masked_fill(mask, -1.0e9), dim=-1)


class IntModel(nn.Module):
    """Index-like integers (embedding, gather, index_select, argmax) next to integer data."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 4)
        self.register_buffer("offsets", torch.tensor([1, -2, 3], dtype=torch.int32))
        self.register_buffer("huge", torch.tensor([70000, 1, 2], dtype=torch.int32))
        self.register_buffer("table_rows", torch.tensor([2, 0], dtype=torch.int32))

    def forward(
        self, ids: torch.Tensor, counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.emb(ids + 1)  # ids + 1 is an index: stays int64
        picked = torch.gather(e, 1, ids.unsqueeze(-1).expand(-1, -1, 4) % 3)
        rows = torch.index_select(e, 1, self.table_rows)
        best = e.sum(-1).argmax(-1)
        data = (counts * 2 + self.offsets).clamp(max=100)
        wide = counts + self.huge
        return picked.sum(-1) + rows.sum(), best, data, wide, e.mean()


class InPlace(nn.Module):
    """In-place ReLU and a cache buffer written at given positions."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU(inplace=True)
        self.register_buffer("cache", torch.zeros(2, 6, 4))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = self.act(self.lin(x))
        self.cache[:, pos] = h
        return self.cache.sum(1) + h.sum(1)


class Tied(nn.Module):
    """Input embedding and output head share one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 4)
        self.head = nn.Linear(4, 30, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids))


class Branchy(nn.Module):
    """A higher-order op (cond) and a data-dependent size (nonzero)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.cond(x.sum() > 0, lambda a: a * 2, lambda a: a - 1, (self.lin(x),))
        return y, torch.nonzero(x > 0)


def lm_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and a float input for :class:`TinyLM`."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 40, (2, 6), generator=gen), torch.randn(2, 6, 8, generator=gen)


def export(
    model: nn.Module, inputs: tuple, decompose: bool = False, **kwargs: object
) -> ExportedProgram:
    """A fresh program of ``model`` (core ATen with ``decompose``)."""
    torch.manual_seed(0)
    ep = torch.export.export(model.eval(), inputs, **kwargs)
    return ep.run_decompositions() if decompose else ep


def to_half(inputs: tuple) -> tuple:
    """The inputs a cast program takes: float tensors in float16."""
    return tuple(t.half() if t.is_floating_point() else t for t in inputs)


def call_nodes(ep: ExportedProgram, target: object) -> list[torch.fx.Node]:
    """Nodes calling ``target`` (an OpOverload, or a packet: any of its overloads)."""
    return [
        n
        for n in ep.graph.nodes
        if n.op == "call_function"
        and (n.target is target or getattr(n.target, "overloadpacket", None) is target)
    ]


def dtype_of(node: torch.fx.Node) -> torch.dtype:
    """The dtype the graph records for a node's value."""
    return node.meta["val"].dtype


def is_cast_to(node: object, dtype: torch.dtype) -> bool:
    """Whether ``node`` is a cast the passes insert, to ``dtype``."""
    return (
        isinstance(node, torch.fx.Node)
        and node.target is aten._to_copy.default
        and node.kwargs.get("dtype") is dtype
    )


def float_dtypes_of_nodes(ep: ExportedProgram) -> set[torch.dtype]:
    """Every floating dtype among the graph's placeholder and node values."""
    dtypes = set()
    for node in ep.graph.nodes:
        val = node.meta.get("val")
        vals = val if isinstance(val, (tuple, list)) else [val]
        dtypes |= {v.dtype for v in vals if isinstance(v, torch.Tensor) and v.is_floating_point()}
    return dtypes


def round_trip(ep: ExportedProgram) -> ExportedProgram:
    """``ep`` after ``torch.export.save`` and ``torch.export.load``."""
    buffer = io.BytesIO()
    torch.export.save(ep, buffer)
    buffer.seek(0)
    return torch.export.load(buffer)


@pytest.fixture(scope="module")
def lm() -> TinyLM:
    """One TinyLM for the module (tests export it afresh; the passes never touch it)."""
    torch.manual_seed(0)
    return TinyLM().eval()


# -- public surface ---------------------------------------------------------------------------


def test_public_names() -> None:
    assert set(coreai_opt.casting.__all__) == {
        "cast_fp32_to_fp16",
        "cast_int32_to_int16",
        "cast_to_16_bit_precision",
    }
    for name in coreai_opt.casting.__all__:
        assert getattr(coreai_opt.casting, name).__doc__


# -- float32 -> float16 -----------------------------------------------------------------------


@pytest.mark.parametrize("decompose", [False, True], ids=["training_ir", "core_aten"])
def test_fp16_everywhere_and_close_to_fp32(lm: TinyLM, decompose: bool) -> None:
    inputs = lm_inputs()
    expected = lm(*inputs)
    ep = export(lm, inputs, decompose)

    assert cast_fp32_to_fp16(ep) is ep  # in place, returned for chaining

    assert {t.dtype for t in ep.state_dict.values()} == {torch.float16}
    assert float_dtypes_of_nodes(ep) == {torch.float16}
    assert lm.lin.weight.dtype == torch.float32  # the source module keeps its parameters
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    assert dtype_of(placeholders["x"]) == torch.float16  # user input converted
    assert dtype_of(placeholders["ids"]) == torch.int64  # not a float: untouched
    out = ep.module()(*to_half(inputs))
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), expected, **F16_TOL)


def test_dtype_arguments_rewritten(lm: TinyLM) -> None:
    ep = export(lm, lm_inputs())
    cast_fp32_to_fp16(ep)
    fulls = call_nodes(ep, aten.full)
    assert len(fulls) == 2
    # explicit dtype=float32 and the default (None -> float32) both become float16
    assert all(n.kwargs["dtype"] is torch.float16 for n in fulls)
    (to,) = call_nodes(ep, aten.to.dtype)
    assert to.args[1] is torch.float16
    for node in call_nodes(ep, aten._assert_tensor_metadata):
        asserted = node.kwargs.get("dtype", node.args[3] if len(node.args) > 3 else None)
        assert asserted == dtype_of(node.args[0])
    assert not any(
        v is torch.float32 for n in ep.graph.nodes for v in [*n.args, *n.kwargs.values()]
    )


def test_conv_batch_norm_model() -> None:
    torch.manual_seed(0)
    model = ConvNet().eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    ep = export(model, (x,))
    cast_fp32_to_fp16(ep)
    state = ep.state_dict
    assert state["conv.weight"].dtype == state["bn.running_var"].dtype == torch.float16
    assert state["bn.num_batches_tracked"].dtype == torch.int64  # unused integer buffer
    torch.testing.assert_close(ep.module()(x.half()).float(), expected, **F16_TOL)


IGNORED_FORMS: dict[str, object] = {
    "overload": aten.layer_norm.default,
    "packet": aten.layer_norm,
    "collection": [aten.layer_norm, aten.softmax.int],
    "predicate": lambda node: node.target is aten.layer_norm.default,
}


@pytest.mark.parametrize("form", list(IGNORED_FORMS), ids=list(IGNORED_FORMS))
def test_ignored_ops_stay_fp32_with_boundary_casts(lm: TinyLM, form: str) -> None:
    inputs = lm_inputs()
    expected = lm(*inputs)
    ep = export(lm, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every listed op matches: no warning
        cast_fp32_to_fp16(ep, ignored_ops=IGNORED_FORMS[form])

    (ln,) = call_nodes(ep, aten.layer_norm.default)
    assert dtype_of(ln) == torch.float32
    activation, _, weight, bias = ln.args[:4]
    assert is_cast_to(activation, torch.float32)  # cast in front of it
    assert dtype_of(activation.args[0]) == torch.float16  # from a float16 producer
    # its weights have no other consumer: they stay float32, uncast
    assert ep.state_dict["ln.weight"].dtype == ep.state_dict["ln.bias"].dtype == torch.float32
    assert weight.op == bias.op == "placeholder"
    (consumer,) = ln.users
    assert is_cast_to(consumer, torch.float16)  # cast back for the float16 linear
    assert ep.state_dict["lin.weight"].dtype == torch.float16
    softmax_dtype = dtype_of(call_nodes(ep, aten.softmax)[0])
    assert softmax_dtype == (torch.float32 if form == "collection" else torch.float16)
    torch.testing.assert_close(ep.module()(*to_half(inputs)).float(), expected, **F16_TOL)


def test_ignored_matmul_keeps_its_transposed_weight_fp32(lm: TinyLM) -> None:
    """After decompositions a linear is permute + addmm: ignoring addmm keeps the weight
    float32 through the permute instead of rounding it and casting it back."""
    inputs = lm_inputs()
    ep = export(lm, inputs, decompose=True)
    cast_fp32_to_fp16(ep, ignored_ops=lambda n: n.target is aten.addmm.default)
    for addmm in call_nodes(ep, aten.addmm.default):
        permute = addmm.args[2]
        assert permute.target is aten.permute.default
        assert dtype_of(permute) == torch.float32
        assert permute.args[0].op == "placeholder"
    assert ep.state_dict["lin.weight"].dtype == torch.float32
    assert ep.state_dict["emb.weight"].dtype == torch.float16
    torch.testing.assert_close(ep.module()(*to_half(inputs)).float(), lm(*inputs), **F16_TOL)


def test_ignored_op_matching_nothing_warns_with_the_programs_ops(lm: TinyLM) -> None:
    ep = export(lm, lm_inputs(), decompose=True)  # layer_norm became native_layer_norm
    with pytest.warns(UserWarning, match=r"aten\.layer_norm.*match no node.*native_layer_norm"):
        cast_fp32_to_fp16(ep, ignored_ops=aten.layer_norm)


def test_overflow_kept_fp32_with_warning() -> None:
    torch.manual_seed(0)
    model = Overflowing().eval()
    x = torch.randn(3, 4)
    mask = torch.tensor([[True, False, False, True]] * 3)
    expected = model(x, mask)
    ep = export(model, (x, mask))
    with pytest.warns(UserWarning, match="float16 cannot hold") as record:
        cast_fp32_to_fp16(ep)
    message = str(record[0].message)
    assert "buffer 'scale'" in message
    assert "max |x| = 200000" in message
    assert "masked_fill" in message and "-1000000000.0" in message

    assert ep.state_dict["scale"].dtype == torch.float32
    assert ep.state_dict["lin.weight"].dtype == torch.float16
    (div,) = call_nodes(ep, aten.div)
    assert dtype_of(div) == torch.float32  # computes with the float32 buffer
    assert is_cast_to(div.args[0], torch.float32)
    (fill,) = call_nodes(ep, aten.masked_fill)
    assert dtype_of(fill) == torch.float32
    out = ep.module()(x.half(), mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, **F16_TOL)


def test_tied_weights_convert_together() -> None:
    torch.manual_seed(0)
    model = Tied().eval()
    ids = torch.randint(0, 30, (2, 3))
    ep = export(model, (ids,))
    cast_fp32_to_fp16(ep)
    assert ep.state_dict["emb.weight"] is ep.state_dict["head.weight"]
    assert ep.state_dict["emb.weight"].dtype == torch.float16
    weights = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name != "ids"]
    assert {dtype_of(n) for n in weights} == {torch.float16}
    torch.testing.assert_close(ep.module()(ids).float(), model(ids), **F16_TOL)


@pytest.mark.parametrize("decompose", [False, True], ids=["training_ir", "core_aten"])
def test_in_place_writes_are_not_lost(decompose: bool) -> None:
    torch.manual_seed(0)
    model = InPlace().eval()
    x, pos = torch.randn(2, 3, 4), torch.tensor([0, 2, 4])
    expected = copy.deepcopy(model)(x, pos)  # the call writes into the cache
    ep = export(model, (x, pos), decompose)
    cast_to_16_bit_precision(ep)
    # training IR writes into the buffer in place: it keeps float32; after decompositions
    # the write is a buffer-mutation output and the cache is float16
    cache_dtype = torch.float16 if decompose else torch.float32
    assert ep.state_dict["cache"].dtype == cache_dtype
    torch.testing.assert_close(ep.module()(x.half(), pos).float(), expected, **F16_TOL)


def test_higher_order_op_and_data_dependent_size() -> None:
    torch.manual_seed(0)
    model = Branchy().eval()
    x = torch.randn(3, 4)
    y_ref, nz_ref = model(x)
    ep = export(model, (x,))
    cast_to_16_bit_precision(ep)
    (cond,) = [n for n in ep.graph.nodes if n.target is torch.ops.higher_order.cond]
    assert all(is_cast_to(a, torch.float32) for a in cond.args[3])  # subgraphs untouched
    y, nz = ep.module()(x.half())
    torch.testing.assert_close(y.float(), y_ref, **F16_TOL)
    torch.testing.assert_close(nz, nz_ref)


def test_dynamic_shapes_and_example_inputs(lm: TinyLM) -> None:
    inputs = lm_inputs()
    batch = torch.export.Dim("batch", min=1, max=8)
    ep = export(lm, inputs, dynamic_shapes=({0: batch}, {0: batch}))
    cast_fp32_to_fp16(ep)
    (ids, x), _ = ep.example_inputs
    assert (ids.dtype, x.dtype) == (torch.int64, torch.float16)
    ids5, x5 = torch.randint(0, 40, (5, 6)), torch.randn(5, 6, 8)
    torch.testing.assert_close(ep.module()(ids5, x5.half()).float(), lm(ids5, x5), **F16_TOL)


def test_save_load_round_trip(lm: TinyLM) -> None:
    inputs = lm_inputs()
    ep = export(lm, inputs)
    cast_to_16_bit_precision(ep, ignored_ops=aten.softmax)
    loaded = round_trip(ep)
    assert {k: v.dtype for k, v in loaded.state_dict.items()} == {
        k: v.dtype for k, v in ep.state_dict.items()
    }
    half = to_half(inputs)
    torch.testing.assert_close(loaded.module()(*half), ep.module()(*half))


def test_second_call_changes_nothing(lm: TinyLM) -> None:
    ep = export(lm, lm_inputs())
    cast_to_16_bit_precision(ep)
    before = str(ep.graph)
    cast_to_16_bit_precision(ep)
    assert str(ep.graph) == before


# -- int32/int64 -> int16 ---------------------------------------------------------------------


def int_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and int32 counts for :class:`IntModel`."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40, (2, 3), generator=gen)
    return ids, torch.randint(-5, 5, (2, 3), generator=gen, dtype=torch.int32)


def test_int_index_like_untouched_and_data_narrowed() -> None:
    torch.manual_seed(0)
    model = IntModel().eval()
    ids, counts = int_inputs()
    expected = model(ids, counts)
    ep = export(model, (ids, counts))
    with pytest.warns(
        UserWarning, match=r"int16 cannot hold.*buffer 'huge' \(values in \[1, 70000\]\)"
    ):
        cast_int32_to_int16(ep)

    state = ep.state_dict
    assert state["offsets"].dtype == torch.int16  # data, fits
    assert state["huge"].dtype == torch.int32  # does not fit
    assert state["table_rows"].dtype == torch.int32  # index_select index: untouched
    assert state["emb.weight"].dtype == torch.float32  # floats are another pass
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    assert dtype_of(placeholders["ids"]) == torch.int64  # feeds embedding and gather
    assert dtype_of(placeholders["counts"]) == torch.int16  # data user input
    (add_ids,) = [n for n in call_nodes(ep, aten.add) if n.args[0] is placeholders["ids"]]
    assert dtype_of(add_ids) == torch.int64  # computes an index
    assert dtype_of(call_nodes(ep, aten.argmax)[0]) == torch.int64
    assert dtype_of(call_nodes(ep, aten.remainder)[0]) == torch.int64  # gather index
    assert dtype_of(call_nodes(ep, aten.clamp)[0]) == torch.int16

    out = ep.module()(ids, counts.short())
    assert [o.dtype for o in out[1:4]] == [torch.int64, torch.int16, torch.int32]
    for got, want in zip(out, expected, strict=True):
        torch.testing.assert_close(got.to(want.dtype), want)


def test_int_ignored_op_keeps_wide_dtype() -> None:
    torch.manual_seed(0)
    model = IntModel().eval()
    ep = export(model, int_inputs())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 'huge' buffer warning
        cast_int32_to_int16(ep, ignored_ops=aten.clamp)
    (clamp,) = call_nodes(ep, aten.clamp)
    assert dtype_of(clamp) == torch.int32
    assert is_cast_to(clamp.args[0], torch.int32)


def test_cast_to_16_bit_precision_runs_both(lm: TinyLM) -> None:
    torch.manual_seed(0)
    model = IntModel().eval()
    ids, counts = int_inputs()
    expected = model(ids, counts)
    ep = export(model, (ids, counts), decompose=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cast_to_16_bit_precision(ep)
    assert ep.state_dict["emb.weight"].dtype == torch.float16
    assert ep.state_dict["offsets"].dtype == torch.int16
    assert ep.state_dict["table_rows"].dtype == torch.int32
    out = round_trip(ep).module()(ids, counts.short())
    torch.testing.assert_close(out[0].float(), expected[0], **F16_TOL)
    torch.testing.assert_close(out[2].long(), expected[2].long())


# -- bad arguments ----------------------------------------------------------------------------


CASTS: list[Callable[..., ExportedProgram]] = [
    cast_fp32_to_fp16,
    cast_int32_to_int16,
    cast_to_16_bit_precision,
]


@pytest.mark.parametrize("cast", CASTS, ids=lambda f: f.__name__)
def test_ep_must_be_an_exported_program(cast: Callable[..., ExportedProgram]) -> None:
    with pytest.raises(
        TypeError, match=rf"{cast.__name__}: ep must be a torch\.export\.Exp.*Linear"
    ):
        cast(nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("ignored_ops", "pattern"),
    [
        ("softmax", r"ignored_ops must be None, an OpOverload.*'softmax' \(type str\)"),
        (42, r"ignored_ops must be .*predicate.*42 \(type int\)"),
        ([aten.softmax, "relu"], r"ignored_ops\[1\] must be an OpOverload.*'relu' \(type str\)"),
        ({"op": aten.relu}, r"ignored_ops must be .*\(type dict\)"),
    ],
    ids=["string", "int", "bad_entry", "dict"],
)
def test_bad_ignored_ops(lm: TinyLM, ignored_ops: object, pattern: str) -> None:
    ep = export(lm, lm_inputs())
    before = str(ep.graph)
    with pytest.raises(TypeError, match=pattern):
        cast_to_16_bit_precision(ep, ignored_ops=ignored_ops)  # type: ignore[arg-type]
    assert str(ep.graph) == before  # checked before anything changed
    assert ep.state_dict["lin.weight"].dtype == torch.float32


def test_predicate_must_return_bool(lm: TinyLM) -> None:
    ep = export(lm, lm_inputs())
    with pytest.raises(TypeError, match=r"predicate must return a bool, got None .*for node"):
        cast_fp32_to_fp16(ep, ignored_ops=lambda node: None)  # type: ignore[arg-type,return-value]
    assert ep.state_dict["lin.weight"].dtype == torch.float32


def test_deepcopy_keeps_a_float32_program(lm: TinyLM) -> None:
    ep = export(lm, lm_inputs())
    half = cast_fp32_to_fp16(copy.deepcopy(ep))
    assert half.state_dict["lin.weight"].dtype == torch.float16
    assert ep.state_dict["lin.weight"].dtype == torch.float32
    assert float_dtypes_of_nodes(ep) == {torch.float32}
