"""Eager-mode finalize to ``ExportBackend.CoreAI`` / ``CoreML``.

Core AI: every weight fake-quantizer becomes a dequantize parametrization in its slot
(coreai-torch's ``WeightDequantizeModule`` when it imports, else ours), the dense original a
zero-size placeholder; every activation fake-quantizer ``Sequential(quantize, dequantize)``
under its attribute name. A float32 model gives exactly the prepared model's output for the
weight formats and the ZP / MINVAL / FP8 activation forms (the ops use the FQ's formulas);
``symmetric_with_clipping`` activations may differ by one step (the ops clip to the full
int8 range).

Core ML: weights keep their fake-quantized values (weight-only is bit-exact), activations
run through ``torch.quantize_per_tensor``, whose rounding may differ from the FQ's in the
last bit of the quotient (one step of the last activation quantizer is allowed).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping

import pytest
import torch
import torch.nn.functional as F
from finalize_helpers import (
    A8,
    ACTIVATION_FORMATS,
    FP4,
    MLP,
    U8,
    UW4,
    W4_BLOCK,
    W8,
    WEIGHT_FORMATS,
    Tied,
    check_coreml_program_weights,
    coreml_gate_cases,
    needs_both_libraries,
    needs_coremltools,
    needs_our_core_ai_ops,
    parity_cases,
    unsupported_activation_cases,
)
from torch import nn
from torch.nn.utils import parametrize

from coreai_opt import ExportBackend
from coreai_opt.quantization import ModuleQuantizerConfig, Quantizer, QuantizerConfig
from coreai_opt.quantization.finalize import (
    FinalizeNodeError,
    _export_ops,
    register_eager_activation_export_handler,
    select_export_ops,
    unregister_activation_export_handler,
)
from coreai_opt.quantization.finalize._coreml_modules import (
    MILActivationDequantize,
    MILActivationQuantize,
)
from coreai_opt.quantization.finalize._eager_modules import (
    ActivationDequantize,
    ActivationQuantize,
    WeightDequantize,
    is_weight_dequantize,
)
from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerTensorGranularity,
    QuantizationSpec,
    _state_epoch,
)
from coreai_opt.quantization.spec._dtype_table import format_info
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase

# -- helpers -------------------------------------------------------------------------


def eager_config(
    weight: QuantizationSpec | None,
    act: QuantizationSpec | None = None,
    **kwargs: object,
) -> QuantizerConfig:
    """Eager mode: weights with *weight*, op inputs and outputs with *act*."""
    io_spec: Mapping[str, QuantizationSpec | None] = {"*": act}
    return QuantizerConfig(
        execution_mode="eager",
        global_config=ModuleQuantizerConfig(
            op_state_spec={"weight": weight}, op_input_spec=io_spec, op_output_spec=io_spec
        ),
        **kwargs,
    )


def prepare(
    model: nn.Module, cfg: QuantizerConfig, *inputs: torch.Tensor
) -> tuple[Quantizer, nn.Module, torch.Tensor]:
    """(quantizer, eager-prepared *model*, its output on *inputs*)."""
    q = Quantizer(model.eval(), cfg)
    prepared = q.prepare(tuple(inputs))
    with torch.no_grad():
        out = prepared(*inputs)
    return q, prepared, out


def mlp_case(
    weight: QuantizationSpec | None, act: QuantizationSpec | None = None
) -> tuple[Quantizer, nn.Module, torch.Tensor, torch.Tensor]:
    """(quantizer, eager-prepared MLP, input, prepared output)."""
    torch.manual_seed(0)
    model, x = MLP(), torch.randn(4, 64)
    q, prepared, out = prepare(model, eager_config(weight, act), x)
    return q, prepared, x, out


def fq_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, FakeQuantizeImplBase)]


def activation_paths(model: nn.Module) -> list[str]:
    """Paths of the activation fake-quantizers (submodules outside parametrizations)."""
    return [n for n in fq_names(model) if ".parametrizations." not in f".{n}"]


def finalize(q: Quantizer, model: nn.Module, backend: ExportBackend) -> nn.Module:
    with torch.no_grad():
        out = q.finalize(model, backend=backend)
    assert out is model
    return out


def run(model: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs)


def dequantizer_classes() -> tuple[type, type, type]:
    """(weight, activation quantize, activation dequantize) classes finalize emits now."""
    if select_export_ops().uses_coreai_torch:
        from coreai_torch._compression.custom_layers import (
            ActivationDequantizeModule,
            ActivationQuantizeModule,
            WeightDequantizeModule,
        )

        return WeightDequantizeModule, ActivationQuantizeModule, ActivationDequantizeModule
    return WeightDequantize, ActivationQuantize, ActivationDequantize


def packed_fp4(quantized: torch.Tensor) -> torch.Tensor:
    """The packed FP4 bytes: coreai-torch's Float4Tensor wraps them, ours views them."""
    return quantized.elem if hasattr(quantized, "elem") else quantized.view(torch.uint8)


def step(module: nn.Module) -> float:
    """One quantization step of an activation Sequential (its largest scale)."""
    return float(module.quantize.scale.float().max())


# -- Core AI: names, buffers, dtypes ---------------------------------------------------


def test_w8a8_parametrizations_buffers_and_activation_modules() -> None:
    q, model, x, ref = mlp_case(W8, A8)
    acts = activation_paths(model)
    assert acts  # linear inputs and outputs
    weight_cls, quantize_cls, dequantize_cls = dequantizer_classes()
    f = finalize(q, model, ExportBackend.CoreAI)
    assert not fq_names(f)
    for owner_name, shape in (("a", (32, 64)), ("sub.1", (64, 32))):
        owner = f.get_submodule(owner_name)
        assert parametrize.is_parametrized(owner, "weight")
        plist = owner.parametrizations.weight
        assert len(plist) == 1
        dq = plist[0]
        assert isinstance(dq, weight_cls) and is_weight_dequantize(dq)
        assert dq.quantized_data.shape == shape and dq.quantized_data.dtype == torch.int8
        assert dq.scale.shape == (shape[0], 1) and dq.scale.dtype == torch.float32
        assert dq.zero_point.dtype == torch.int8 and dq.minval is None
        assert dq.input_dtype == torch.int8 and dq.output_dtype is None
        # the dense original is a zero-size placeholder that stays a parameter
        assert isinstance(plist.original, nn.Parameter) and plist.original.shape == (0,)
        assert owner.weight.shape == shape and owner.bias.shape == (shape[0],)
    for path in acts:
        seq = f.get_submodule(path)
        assert isinstance(seq, nn.Sequential) and list(seq._modules) == ["quantize", "dequantize"]
        assert isinstance(seq.quantize, quantize_cls)
        assert isinstance(seq.dequantize, dequantize_cls)
        assert seq.quantize.output_dtype == torch.int8 and seq.quantize.axis == 0
        assert seq.quantize.scale.shape == () and seq.quantize.scale.dtype == torch.float32
        assert seq.quantize.zero_point.dtype == torch.int8 and seq.quantize.minval is None
        assert seq.dequantize.input_dtype == torch.int8
        assert seq.dequantize.output_dtype == torch.float32
        assert torch.equal(seq.dequantize.scale, seq.quantize.scale)
    keys = set(f.state_dict())
    assert {
        "a.parametrizations.weight.original",
        "a.parametrizations.weight.0.quantized_data",
        "a.parametrizations.weight.0.scale",
        "a.parametrizations.weight.0.zero_point",
        f"{acts[0]}.quantize.scale",
        f"{acts[0]}.dequantize.zero_point",
    } <= keys
    assert torch.equal(run(f, x), ref)
    f.train()
    f.eval()
    assert torch.equal(run(f, x), ref)


@pytest.mark.parametrize(("fmt", "spec"), WEIGHT_FORMATS, ids=[f for f, _ in WEIGHT_FORMATS])
def test_every_weight_format_is_bit_exact(fmt: str, spec: QuantizationSpec) -> None:
    q, model, x, ref = mlp_case(spec)
    f = finalize(q, model, ExportBackend.CoreAI)
    dq = f.a.parametrizations.weight[0]
    info = format_info(spec.dtype)
    if spec.dtype == FP4:
        assert packed_fp4(dq.quantized_data).shape == (32, 32)
        assert packed_fp4(dq.quantized_data).dtype == torch.uint8
    else:
        assert dq.quantized_data.shape == (32, 64)
        assert dq.quantized_data.dtype == getattr(torch, info.storage)
    assert dq.input_dtype == (None if info.is_float else spec.dtype)
    e8m0 = spec.scale_dtype is not None
    assert dq.output_dtype == (torch.float32 if e8m0 else None)
    assert dq.scale.dtype == (torch.float8_e8m0fnu if e8m0 else torch.float32)
    assert (dq.minval is not None) == (spec.qformulation == "minval")
    assert f.a.parametrizations.weight.original.numel() == 0
    assert torch.equal(run(f, x), ref)


@pytest.mark.parametrize(("fmt", "act"), ACTIVATION_FORMATS, ids=[f for f, _ in ACTIVATION_FORMATS])
def test_activation_formats_are_bit_exact(fmt: str, act: QuantizationSpec) -> None:
    q, model, x, ref = mlp_case(W8, act)
    path = activation_paths(model)[0]  # a.linear_quantize_input: (4, 64)
    f = finalize(q, model, ExportBackend.CoreAI)
    seq = f.get_submodule(path)
    quantize, dequantize = seq.quantize, seq.dequantize
    assert quantize.output_dtype == act.dtype
    assert dequantize.output_dtype == torch.float32
    if fmt == "int8_per_channel":
        assert quantize.scale.shape == (64,) and quantize.axis == 1 and dequantize.axis == 1
    else:
        assert quantize.scale.shape == () and quantize.axis == 0
    if fmt == "int8_minval":
        assert quantize.zero_point is None and quantize.minval is not None
    if fmt.startswith("fp8"):
        assert dequantize.input_dtype is None and quantize.zero_point is None
    if fmt == "fp8_e8m0":
        assert quantize.scale.dtype == torch.float8_e8m0fnu
    assert torch.equal(run(f, x), ref)


def test_symmetric_with_clipping_activations_within_one_step() -> None:
    act = QuantizationSpec(dtype=torch.int8, qscheme="symmetric_with_clipping")
    q, model, x, ref = mlp_case(W8, act)
    last = activation_paths(model)[-1]
    f = finalize(q, model, ExportBackend.CoreAI)
    assert float((run(f, x) - ref).abs().max()) <= step(f.get_submodule(last))


@needs_our_core_ai_ops
def test_our_modules_run_int4_activations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our quantize returns int4 codes in an int8 container (coreai-torch's cannot create
    a torch.int4 tensor in eager PyTorch)."""
    monkeypatch.setattr(_export_ops, "coreai_torch_available", lambda: False)
    q, model, x, ref = mlp_case(W8, QuantizationSpec(dtype=torch.int4, qscheme="asymmetric"))
    path = activation_paths(model)[0]
    f = finalize(q, model, ExportBackend.CoreAI)
    seq = f.get_submodule(path)
    assert isinstance(seq.quantize, ActivationQuantize)
    assert seq.quantize.output_dtype == torch.int4 and seq.dequantize.input_dtype == torch.int4
    assert seq.quantize.zero_point.dtype == torch.int8
    assert torch.equal(run(f, x), ref)


PARITY = parity_cases(ACTIVATION_FORMATS)


@needs_both_libraries
@pytest.mark.parametrize(("case", "weight", "act"), PARITY, ids=[c for c, *_ in PARITY])
def test_our_modules_and_coreai_torch_give_the_same_model(
    case: str, weight: QuantizationSpec, act: QuantizationSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    q, model, x, ref = mlp_case(weight, act)
    ours = copy.deepcopy(model)
    theirs = finalize(q, model, ExportBackend.CoreAI)
    monkeypatch.setattr(_export_ops, "coreai_torch_available", lambda: False)
    ours = finalize(q, ours, ExportBackend.CoreAI)
    assert isinstance(ours.a.parametrizations.weight[0], WeightDequantize)
    assert not isinstance(theirs.a.parametrizations.weight[0], WeightDequantize)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert torch.equal(run(ours, x), run(theirs, x)) and torch.equal(run(ours, x), ref)


# -- Core AI: model structures ---------------------------------------------------------


def test_tied_weights_share_one_dequantize_module() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 16)
    q, model, ref = prepare(Tied(), eager_config(W8, A8), x)
    assert model.a.parametrizations.weight[0] is model.b.parametrizations.weight[0]
    f = finalize(q, model, ExportBackend.CoreAI)
    dq = f.a.parametrizations.weight[0]
    assert is_weight_dequantize(dq) and f.b.parametrizations.weight[0] is dq
    original = f.a.parametrizations.weight.original
    assert original.shape == (0,) and f.b.parametrizations.weight.original is original
    assert torch.equal(run(f, x), ref)


class Functional(nn.Module):
    """A module that uses its own weight between several intercepted ops."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(32, 64))
        self.head = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x * 3.0, self.weight)
        y = y * 2.0 - 1.0
        return self.head(y * torch.sigmoid(y))


@pytest.mark.parametrize("ours", [False, True], ids=["selected", "ours"])
def test_dequantize_does_not_shift_the_op_numbering(
    ours: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dequantize parametrization runs inside the module's frame: its own ops (the
    minval form's arithmetic in a Python op) must not count as the module's ops."""
    if ours:
        monkeypatch.setattr(_export_ops, "coreai_torch_available", lambda: False)
    minval = WEIGHT_FORMATS[2][1]
    torch.manual_seed(0)
    x = torch.randn(4, 64)
    q, model, ref = prepare(Functional(), eager_config(minval, U8), x)
    f = finalize(q, model, ExportBackend.CoreAI)
    assert is_weight_dequantize(f.parametrizations.weight[0])  # the root's own weight
    assert torch.equal(run(f, x), ref)


class Block(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class WithBoundary(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Block()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.inner(x))


@pytest.mark.parametrize("backend", [ExportBackend.CoreAI, ExportBackend.CoreML])
def test_module_boundary_fake_quantizers_are_converted_and_applied(
    backend: ExportBackend,
) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    boundary = ModuleQuantizerConfig(
        module_input_spec={0: U8},
        module_output_spec={0: U8},
        op_input_spec={"*": None},
        op_output_spec={"*": None},
    )
    cfg = eager_config(W8, None, module_name_configs={"inner": boundary})
    q, model, ref = prepare(WithBoundary(), cfg, x)
    assert set(activation_paths(model)) == {"inner.input_quantize_0", "inner.output_quantize_0"}
    f = finalize(q, model, backend)
    assert isinstance(f.inner.input_quantize_0, nn.Sequential)
    if backend is ExportBackend.CoreAI:
        assert torch.equal(run(f, x), ref)
    else:
        assert float((run(f, x) - ref).abs().max()) <= 1e-6


def test_finalized_model_round_trips_through_state_dict_and_torch_save() -> None:
    q, model, x, ref = mlp_case(W8, U8)
    f = finalize(q, model, ExportBackend.CoreAI)
    buffer = io.BytesIO()
    torch.save(f, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(run(loaded, x), ref)
    assert type(loaded.a.parametrizations.weight[0]) is type(f.a.parametrizations.weight[0])
    state = {k: v.clone() for k, v in f.state_dict().items()}
    for v in f.state_dict().values():
        if v.is_floating_point() and v.numel():
            v.zero_()
    f.load_state_dict(state)
    assert torch.equal(run(f, x), ref)


# -- Core AI: refusals and handlers ----------------------------------------------------


def test_finalize_needs_a_prepared_model() -> None:
    q = Quantizer(MLP(), eager_config(W8))
    with pytest.raises(RuntimeError, match=r"needs a prepared model"):
        q.finalize(backend=ExportBackend.CoreAI)


@pytest.mark.parametrize("backend", [ExportBackend.CoreAI, ExportBackend.CoreML])
def test_a_model_without_fake_quantizers_is_refused(backend: ExportBackend) -> None:
    q, model, _, _ = mlp_case(None)
    assert not fq_names(model)
    with pytest.raises(ValueError, match="no fake-quantize nodes"):
        q.finalize(model, backend=backend)


# eager mode names an activation fake-quantizer after its op and slot
@pytest.mark.parametrize(
    ("act", "match"), unsupported_activation_cases(r"a\.linear_quantize_input")
)
def test_unsupported_activations_are_refused_before_any_change(
    act: QuantizationSpec, match: str
) -> None:
    q, model, x, ref = mlp_case(W8, act)
    names = fq_names(model)
    with pytest.raises(FinalizeNodeError, match=match) as err:
        q.finalize(model, backend=ExportBackend.CoreAI)
    assert isinstance(err.value, ValueError) and isinstance(err.value, RuntimeError)
    assert fq_names(model) == names and torch.equal(run(model, x), ref)


def test_dynamic_fake_quantizers_are_refused_naming_them() -> None:
    dyn = QuantizationSpec(dtype=torch.int8, qparam_calculator_cls="dynamic")
    q, model, x, ref = mlp_case(W8, dyn)
    acts = activation_paths(model)
    for backend in (ExportBackend.CoreAI, ExportBackend.CoreML):
        with pytest.raises(NotImplementedError, match="dynamic quantization") as err:
            q.finalize(model, backend=backend)
        assert str(sorted(acts)) in str(err.value)
    assert fq_names(model) and torch.equal(run(model, x), ref)


@pytest.fixture
def eager_handlers():
    """Registers eager handlers for the test and removes them afterwards."""
    registered: list[type] = []

    def register(cls: type, fn: object) -> None:
        register_eager_activation_export_handler(cls, fn)
        registered.append(cls)

    yield register
    for cls in registered:
        unregister_activation_export_handler(cls, "eager")


class Marker(nn.Module):
    """What the test handlers put in place of a fake-quantizer: runs it, counts calls."""

    def __init__(self, fq: nn.Module) -> None:
        super().__init__()
        self.fq = fq
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fq(x)


def test_an_eager_handler_exports_per_block_activations(eager_handlers) -> None:
    seen: list[str] = []

    def handler(fq: FakeQuantizeImplBase) -> nn.Module:
        seen.append(type(fq.granularity).__name__)
        return Marker(fq)

    eager_handlers(PerBlockGranularity, handler)
    act = QuantizationSpec(dtype=torch.int8, granularity=PerBlockGranularity(axis=1, block_size=32))
    q, model, x, ref = mlp_case(W8, act)
    acts = activation_paths(model)
    f = finalize(q, model, ExportBackend.CoreAI)
    assert seen == ["PerBlockGranularity"] * len(acts)
    markers = [f.get_submodule(path) for path in acts]
    assert all(isinstance(m, Marker) for m in markers)
    assert torch.equal(run(f, x), ref)  # the runtime calls what the handler returned
    assert all(m.calls == 1 for m in markers)


def test_an_eager_handler_covers_dynamic_activations_for_coreai_only(eager_handlers) -> None:
    eager_handlers(PerTensorGranularity, Marker)
    dyn = QuantizationSpec(dtype=torch.int8, qparam_calculator_cls="dynamic")
    q, model, x, ref = mlp_case(W8, dyn)
    with pytest.raises(NotImplementedError, match="dynamic quantization"):
        q.finalize(model, backend=ExportBackend.CoreML)
    f = finalize(q, model, ExportBackend.CoreAI)
    assert isinstance(f.a.linear_quantize_input, Marker)
    assert torch.equal(run(f, x), ref)


def test_an_eager_handler_must_return_a_module(eager_handlers) -> None:
    eager_handlers(PerTensorGranularity, lambda fq: "not a module")
    q, model, _, _ = mlp_case(W8, A8)
    with pytest.raises(FinalizeNodeError, match=r"must return the nn\.Module"):
        q.finalize(model, backend=ExportBackend.CoreAI)


def test_eager_handlers_match_the_exact_granularity_type(eager_handlers) -> None:
    class MyPerTensor(PerTensorGranularity):
        pass

    eager_handlers(MyPerTensor, lambda fq: pytest.fail("subclass matched"))
    q, model, x, ref = mlp_case(W8, A8)
    assert torch.equal(run(finalize(q, model, ExportBackend.CoreAI), x), ref)


def test_graph_handlers_do_not_apply_in_eager_mode() -> None:
    from coreai_opt.quantization.finalize import register_graph_activation_export_handler

    register_graph_activation_export_handler(PerBlockGranularity, lambda m, n, fq: None)
    try:
        act = QuantizationSpec(
            dtype=torch.int8, granularity=PerBlockGranularity(axis=1, block_size=32)
        )
        q, model, _, _ = mlp_case(W8, act)
        with pytest.raises(FinalizeNodeError, match="PerBlockGranularity"):
            q.finalize(model, backend=ExportBackend.CoreAI)
    finally:
        unregister_activation_export_handler(PerBlockGranularity, "graph")


# -- Core ML ---------------------------------------------------------------------------


def test_coreml_metadata_fake_quantized_weights_and_activation_modules() -> None:
    q, model, x, ref = mlp_case(W8, U8)
    fake = {name: model.get_submodule(name).weight.detach().clone() for name in ("a", "sub.1")}
    acts = activation_paths(model)
    f = finalize(q, model, ExportBackend.CoreML)
    bufs = dict(f.named_buffers())
    assert torch.equal(bufs["_COREML_/metadata_version"], torch.tensor(1))
    for owner_name, rows in (("a", 32), ("sub.1", 64)):
        owner = f.get_submodule(owner_name)
        assert not parametrize.is_parametrized(owner) and type(owner) is nn.Linear
        key = f"{owner_name}._COREML_/weight"
        assert torch.equal(bufs[f"{key}/compression_type"], torch.tensor([3]))
        assert torch.equal(bufs[f"{key}/quantization_n_bits"], torch.tensor(8))
        assert bufs[f"{key}/quantization_scale"].shape == (rows, 1)
        assert bufs[f"{key}/zero_point"].dtype == torch.int8
        assert isinstance(owner.weight, nn.Parameter)
        assert torch.equal(owner.weight, fake[owner_name])
    assert not fq_names(f)
    for path in acts:
        mil = f.get_submodule(path)
        assert isinstance(mil, nn.Sequential) and list(mil._modules) == ["quantize", "dequantize"]
        assert isinstance(mil.quantize, MILActivationQuantize)
        assert isinstance(mil.dequantize, MILActivationDequantize)
        assert mil.quantize.dtype == torch.quint8 and mil.quantize.zero_point.dtype == torch.uint8
    assert float((run(f, x) - ref).abs().max()) <= step(f.get_submodule(acts[-1]))


@pytest.mark.parametrize("spec", [W4_BLOCK, UW4], ids=["int4_block", "uint4_asym"])
def test_coreml_four_bit_weights_are_bit_exact(spec: QuantizationSpec) -> None:
    q, model, x, ref = mlp_case(spec)
    f = finalize(q, model, ExportBackend.CoreML)
    bufs = dict(f.named_buffers())
    assert torch.equal(bufs["a._COREML_/weight/quantization_n_bits"], torch.tensor(4))
    blocks = 2 if spec is W4_BLOCK else 1
    assert bufs["a._COREML_/weight/quantization_scale"].shape == (32, blocks)
    assert torch.equal(run(f, x), ref)


def test_coreml_tied_weights_stay_tied() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 16)
    q, model, ref = prepare(Tied(), eager_config(W8), x)
    f = finalize(q, model, ExportBackend.CoreML)
    assert f.a.weight is f.b.weight
    for owner in ("a", "b"):
        assert f"{owner}._COREML_/weight/quantization_scale" in dict(f.named_buffers())
    assert torch.equal(run(f, x), ref)


# eager mode keeps a weight fake-quantizer in the weight's parametrization list
@pytest.mark.parametrize(
    ("weight", "act", "error", "match"),
    coreml_gate_cases(r"a\.parametrizations\.weight\.0"),
)
def test_coreml_gates_refuse_before_any_change(
    weight: QuantizationSpec | None,
    act: QuantizationSpec | None,
    error: type[Exception],
    match: str,
) -> None:
    q, model, x, ref = mlp_case(weight, act)
    names = fq_names(model)
    with pytest.raises(error, match=match):
        q.finalize(model, backend=ExportBackend.CoreML)
    assert fq_names(model) == names and "_COREML_/metadata_version" not in dict(
        model.named_buffers()
    )
    assert torch.equal(run(model, x), ref)


def test_torch_jit_trace_of_the_coreml_model() -> None:
    q, model, x, _ = mlp_case(W8, U8)
    acts = activation_paths(model)
    f = finalize(q, model, ExportBackend.CoreML)
    _state_epoch.bump()  # the runtime re-binds during the trace
    traced = torch.jit.trace(f, (x,))
    kinds = [n.kind() for n in traced.inlined_graph.nodes()]
    assert kinds.count("aten::quantize_per_tensor") == len(acts)
    assert kinds.count("aten::dequantize") == kinds.count("aten::quantize_per_tensor")
    assert not [k for k in kinds if k.startswith("coreai_opt::")]
    x2 = torch.randn(4, 64)
    assert torch.equal(traced(x2), run(f, x2))


@needs_coremltools
@pytest.mark.parametrize(
    ("weight", "act", "data_dtypes"),
    [(W8, U8, {"int8"}), (W4_BLOCK, None, {"int4"}), (UW4, None, {"uint4"})],
    ids=["w8a8", "int4_block", "uint4_asym"],
)
def test_coremltools_converts_with_compressed_weights(weight, act, data_dtypes) -> None:
    q, model, x, _ = mlp_case(weight, act)
    f = finalize(q, model, ExportBackend.CoreML)
    check_coreml_program_weights(f, x, data_dtypes, act)


def test_eager_core_ai_model_refuses_torch_export() -> None:
    """torch.export records ops above the dispatch key eager mode intercepts with, so an
    exported eager model would lose its activation quantize / dequantize pairs without a
    word: the finalized model refuses, pointing to graph mode (whose finalize produces the
    exported Core AI program)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(16, 8)
    quantizer = Quantizer(model, QuantizerConfig(execution_mode="eager"))
    quantizer.prepare((x,))
    finalized = quantizer.finalize(backend=ExportBackend.CoreAI)
    with pytest.raises(RuntimeError, match=r"execution_mode='graph'"):
        torch.export.export(finalized, (x,))
