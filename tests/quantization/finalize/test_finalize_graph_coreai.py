"""Graph-mode finalize to ``ExportBackend.CoreAI``: names, shapes, dtypes and numerics.

Numerics: a float32 model finalized with integer or float weights gives exactly the
prepared model's output (the stored codes are the FQ's codes and the ops dequantize them
with the FQ's float32 formula). Activation quantize → dequantize pairs use the FQ's
formula too, so they are bit-exact as well for the ZP / MINVAL / FP8 forms checked here;
``symmetric_with_clipping`` activations can differ by one step (the ops clip to the full
int8 range, the FQ to [-127, 127]), and conv-bn pairs by the rounding of the fold (one
step of an activation quantizer), which the tests allow.
"""

from __future__ import annotations

import copy

import pytest
import torch
from finalize_helpers import (
    A8,
    ACTIVATION_FORMATS,
    FP4,
    MLP,
    W8,
    WEIGHT_FORMATS,
    Tied,
    buffers,
    config,
    mlp_case,
    needs_both_libraries,
    needs_our_core_ai_ops,
    nodes_by_target,
    parity_cases,
    prepared,
    step_of,
    unsupported_activation_cases,
)
from models import CacheUpdate, CacheWrite, kv
from torch import fx, nn

from coreai_opt import ExportBackend
from coreai_opt.quantization import QuantizerConfig
from coreai_opt.quantization.finalize import (
    FinalizeNodeError,
    _export_ops,
    register_graph_activation_export_handler,
    select_export_ops,
    unregister_activation_export_handler,
)
from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerTensorGranularity,
    QuantizationSpec,
)
from coreai_opt.quantization.spec._dtype_table import format_info
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase


def fq_names(gm: fx.GraphModule) -> list[str]:
    """Names of the fake-quantizer submodules of *gm*."""
    return [n for n, m in gm.named_children() if isinstance(m, FakeQuantizeImplBase)]


def activation_fq_names(gm: fx.GraphModule) -> list[str]:
    return [n for n in fq_names(gm) if getattr(gm, n).quantization_target.value == "activation"]


def finalize(q, gm: fx.GraphModule) -> fx.GraphModule:
    out = q.finalize(gm, backend=ExportBackend.CoreAI)
    assert out is gm
    return out


def test_w8a8_buffers_nodes_shapes_and_dtypes() -> None:
    q, gm, x, ref = mlp_case(W8, A8)
    acts = activation_fq_names(gm)
    ops = select_export_ops()
    f = finalize(q, gm)
    bufs = buffers(f)
    for prefix, shape in (("a_weight", (32, 64)), ("sub_1_weight", (64, 32))):
        assert bufs[f"{prefix}_quantized"].shape == shape
        assert bufs[f"{prefix}_quantized"].dtype == torch.int8
        assert bufs[f"{prefix}_scale"].shape == (shape[0], 1)
        assert bufs[f"{prefix}_scale"].dtype == torch.float32
        assert bufs[f"{prefix}_zero_point"].dtype == torch.int8
        assert f"{prefix}_minval" not in bufs
    for name in acts:
        assert bufs[f"{name}_scale"].shape == () and bufs[f"{name}_scale"].dtype == torch.float32
        assert bufs[f"{name}_zero_point"].shape == ()
        assert bufs[f"{name}_zero_point"].dtype == torch.int8
    weights = nodes_by_target(f, ops.blockwise_shift_scale)
    assert [n.name for n in weights] == [
        "constexpr_blockwise_shift_scale",
        "constexpr_blockwise_shift_scale_1",
    ]
    first = weights[0]
    assert [a.target if isinstance(a, fx.Node) else a for a in first.args] == [
        "a_weight_quantized",
        "a_weight_scale",
        "a_weight_zero_point",
        None,
        torch.int8,
    ]
    assert first.kwargs == {}
    quantizes = nodes_by_target(f, ops.quantize)
    dequantizes = nodes_by_target(f, ops.dequantize)
    assert [n.name for n in quantizes] == ["quantize", "quantize_1", "quantize_2"]
    assert [n.name for n in dequantizes] == ["dequantize", "dequantize_1", "dequantize_2"]
    for name, qn, dqn in zip(acts, quantizes, dequantizes, strict=True):
        assert qn.args[1].target == f"{name}_scale" and qn.args[2] == torch.int8
        assert list(qn.kwargs) == ["zero_point"]
        assert qn.kwargs["zero_point"].target == f"{name}_zero_point"
        assert dqn.args[0] is qn and dqn.args[1] is qn.args[1]  # one get_attr for both
        assert list(dqn.kwargs) == ["output_dtype", "zero_point", "input_dtype"]
        assert dqn.kwargs["output_dtype"] == torch.float32
        assert dqn.kwargs["input_dtype"] == torch.int8
    assert not fq_names(f)
    assert not any(n.op == "call_module" for n in f.graph.nodes)
    # dense weights the graph no longer reads are zero-size placeholders; biases stay
    params = dict(f.named_parameters())
    assert params["a.weight"].shape == (0,) and params["sub.1.weight"].shape == (0,)
    assert isinstance(params["a.weight"], nn.Parameter)
    assert params["a.bias"].shape == (32,)
    assert torch.equal(f(x), ref)
    f.train()
    f.eval()
    assert torch.equal(f(x), ref)


@pytest.mark.parametrize(("fmt", "spec"), WEIGHT_FORMATS, ids=[f for f, _ in WEIGHT_FORMATS])
def test_every_weight_format_is_bit_exact(fmt: str, spec: QuantizationSpec) -> None:
    q, gm, x, ref = mlp_case(spec)
    ops = select_export_ops()
    f = finalize(q, gm)
    node = nodes_by_target(f, ops.blockwise_shift_scale)[0]
    quantized = buffers(f)["a_weight_quantized"]
    if spec.dtype == FP4:
        # packed two a byte: coreai-torch's ops take the bytes wrapped in its Float4Tensor,
        # ours as a float4_e2m1fn_x2 tensor (one element a byte)
        if ops.uses_coreai_torch:
            packed = quantized.elem
            assert packed.dtype == torch.uint8 and quantized.shape == (32, 64)
        else:
            packed = quantized
            assert packed.dtype == FP4
        assert packed.shape == (32, 32)
    else:
        assert quantized.dtype == getattr(torch, format_info(spec.dtype).storage)
    assert node.args[4] == (None if format_info(spec.dtype).is_float else spec.dtype)
    e8m0 = spec.scale_dtype is not None
    assert node.kwargs == ({"output_dtype": torch.float32} if e8m0 else {})
    assert buffers(f)["a_weight_scale"].dtype == (torch.float8_e8m0fnu if e8m0 else torch.float32)
    assert torch.equal(f(x), ref)


# int8 activations are checked by test_w8a8_buffers_nodes_shapes_and_dtypes
GRAPH_ACTIVATION_FORMATS = [(fmt, spec) for fmt, spec in ACTIVATION_FORMATS if fmt != "int8"]


@pytest.mark.parametrize(
    ("fmt", "act"), GRAPH_ACTIVATION_FORMATS, ids=[f for f, _ in GRAPH_ACTIVATION_FORMATS]
)
def test_activation_formats_are_bit_exact(fmt: str, act: QuantizationSpec) -> None:
    q, gm, x, ref = mlp_case(W8, act)
    acts = activation_fq_names(gm)
    ops = select_export_ops()
    f = finalize(q, gm)
    qn = nodes_by_target(f, ops.quantize)[0]
    dqn = nodes_by_target(f, ops.dequantize)[0]
    assert qn.args[2] == act.dtype
    assert dqn.kwargs["output_dtype"] == torch.float32
    scale = buffers(f)[f"{acts[0]}_scale"]
    if fmt == "int8_per_channel":
        assert scale.shape == (64,) and qn.kwargs["axis"] == 1 and dqn.kwargs["axis"] == 1
    else:
        assert scale.shape == () and "axis" not in qn.kwargs
    if fmt == "int8_minval":
        assert set(qn.kwargs) == {"minval"} and f"{acts[0]}_zero_point" not in buffers(f)
    if fmt.startswith("fp8"):
        assert "input_dtype" not in dqn.kwargs and "zero_point" not in qn.kwargs
    if fmt == "fp8_e8m0":
        assert scale.dtype == torch.float8_e8m0fnu
    assert torch.equal(f(x), ref)


def test_symmetric_with_clipping_activations_within_one_step() -> None:
    act = QuantizationSpec(dtype=torch.int8, qscheme="symmetric_with_clipping")
    q, gm, x, ref = mlp_case(W8, act)
    last = activation_fq_names(gm)[-1]
    f = finalize(q, gm)
    assert float((f(x) - ref).abs().max()) <= step_of(f, f"{last}_scale")


def test_int4_activations_name_the_logical_dtype() -> None:
    """quantize gets torch.int4 (the range), the zero point an int8 container."""
    q, gm, _, _ = mlp_case(W8, QuantizationSpec(dtype=torch.int4))
    acts = activation_fq_names(gm)
    ops = select_export_ops()
    f = finalize(q, gm)
    qn = nodes_by_target(f, ops.quantize)[0]
    assert qn.args[2] == torch.int4
    assert buffers(f)[f"{acts[0]}_zero_point"].dtype == torch.int8
    assert nodes_by_target(f, ops.dequantize)[0].kwargs["input_dtype"] == torch.int4


class TiedShared(Tied):
    """Two linears sharing one weight, their outputs concatenated, then a mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=0).mean(dim=0, keepdim=True)


def test_tied_weights_and_shared_fake_quantizers() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 16)
    q, gm, ref = prepared(TiedShared(), config(W8, A8), x)
    calls = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert len(calls) > len(fq_names(gm))  # a shared FQ module is called several times
    ops = select_export_ops()
    f = finalize(q, gm)
    weights = nodes_by_target(f, ops.blockwise_shift_scale)
    assert len(weights) == 1 and len(weights[0].users) == 2
    assert f.a.weight is f.b.weight and f.a.weight.shape == (0,)
    assert torch.equal(f(x), ref)


class ConvBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean(dim=(2, 3)))


def test_conv_bn_is_folded_and_close() -> None:
    torch.manual_seed(0)
    model = ConvBn()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 8, 8)
    q, gm, ref = prepared(model, config(W8, A8), x)
    last = activation_fq_names(gm)[-1]
    f = finalize(q, gm)
    assert not any("batch_norm" in str(n.target) for n in f.graph.nodes)
    assert f.conv.weight.shape == (0,) and f.conv.bias.shape == (8,)
    assert float((f(x) - ref).abs().max()) <= step_of(f, f"{last}_scale")


# -- refusals ------------------------------------------------------------------------


# graph mode names every fake-quantizer activation_post_process_<n>
@pytest.mark.parametrize(
    ("act", "match"), unsupported_activation_cases(r"activation_post_process_\d+")
)
def test_unsupported_activations_are_refused_before_any_change(
    act: QuantizationSpec, match: str
) -> None:
    q, gm, x, ref = mlp_case(W8, act)
    names = fq_names(gm)
    with pytest.raises(FinalizeNodeError, match=match) as err:
        q.finalize(gm, backend=ExportBackend.CoreAI)
    assert isinstance(err.value, ValueError) and isinstance(err.value, RuntimeError)
    assert fq_names(gm) == names and torch.equal(gm(x), ref)


def test_dynamic_fake_quantizers_are_refused_naming_them() -> None:
    q, gm, _, _ = mlp_case(W8, QuantizationSpec(dtype=torch.int8, qparam_calculator_cls="dynamic"))
    acts = activation_fq_names(gm)
    with pytest.raises(NotImplementedError, match="dynamic quantization") as err:
        q.finalize(gm, backend=ExportBackend.CoreAI)
    assert str(sorted(acts)) in str(err.value)
    assert fq_names(gm)  # unchanged


def test_a_model_without_fake_quantizers_is_refused() -> None:
    q, gm, _, _ = mlp_case(None)
    with pytest.raises(ValueError, match="no fake-quantize nodes"):
        q.finalize(gm, backend=ExportBackend.CoreAI)


# -- activation export handlers ------------------------------------------------------


@pytest.fixture
def handler_registry():
    """Registers graph handlers for the test and removes them afterwards."""
    registered: list[type] = []

    def register(cls: type, fn: object) -> None:
        register_graph_activation_export_handler(cls, fn)
        registered.append(cls)

    yield register
    for cls in registered:
        unregister_activation_export_handler(cls, "graph")


def test_a_graph_handler_exports_per_block_activations(handler_registry) -> None:
    seen: list[tuple[str, str]] = []

    def passthrough(model: fx.GraphModule, node: fx.Node, fq: FakeQuantizeImplBase) -> None:
        seen.append((node.name, type(fq.granularity).__name__))
        model.register_buffer(f"{node.name}_marker", torch.ones(()))
        node.replace_all_uses_with(node.args[0])

    handler_registry(PerBlockGranularity, passthrough)
    act = QuantizationSpec(dtype=torch.int8, granularity=PerBlockGranularity(axis=1, block_size=32))
    q, gm, x, _ = mlp_case(W8, act)
    acts = activation_fq_names(gm)
    f = finalize(q, gm)
    assert sorted(name for name, _ in seen) == sorted(acts)
    assert {kind for _, kind in seen} == {"PerBlockGranularity"}
    assert not fq_names(f) and f"{acts[0]}_marker" in buffers(f)
    f(x)


def test_a_handler_covers_dynamic_activations_for_coreai_only(handler_registry) -> None:
    handler_registry(PerTensorGranularity, lambda m, n, fq: n.replace_all_uses_with(n.args[0]))
    dyn = QuantizationSpec(dtype=torch.int8, qparam_calculator_cls="dynamic")
    q, gm, _, _ = mlp_case(W8, dyn)
    finalize(q, gm)
    q, gm, _, _ = mlp_case(W8, dyn)
    with pytest.raises(NotImplementedError, match="dynamic quantization"):
        q.finalize(gm, backend=ExportBackend.CoreML)


def test_a_handler_that_leaves_its_node_is_an_error(handler_registry) -> None:
    handler_registry(PerTensorGranularity, lambda m, n, fq: None)
    q, gm, _, _ = mlp_case(W8, A8)
    with pytest.raises(FinalizeNodeError, match="must replace the node"):
        q.finalize(gm, backend=ExportBackend.CoreAI)


def test_handlers_match_the_exact_granularity_type(handler_registry) -> None:
    class MyPerTensor(PerTensorGranularity):
        pass

    handler_registry(MyPerTensor, lambda m, n, fq: pytest.fail("subclass matched"))
    q, gm, x, ref = mlp_case(W8, A8)
    assert torch.equal(finalize(q, gm)(x), ref)
    with pytest.raises(TypeError, match="QuantizationGranularity subclass"):
        register_graph_activation_export_handler(int, lambda m, n, fq: None)


# -- KV cache ------------------------------------------------------------------------


def test_kv_cache_buffer_holds_codes_and_dequantize_follows_the_cache_op() -> None:
    torch.manual_seed(0)
    x, idx = torch.randn(2, 8), torch.tensor([1, 4])
    cfg = QuantizerConfig(global_config=None, kv_cache_quant_configs={"index_copy_": kv(2, A8)})
    q, gm, _ = prepared(CacheWrite(), cfg, x, idx)
    reference = copy.deepcopy(gm)
    ops = select_export_ops()
    f = finalize(q, gm)
    assert f.cache.dtype == torch.int8
    write = next(n for n in f.graph.nodes if n.name == "index_copy_")
    assert write.args[3].target == ops.quantize
    (dq,) = write.users
    assert dq.target == ops.dequantize
    # the cache starts at zero (code = zero point): both models agree on every step
    for step in range(2):
        x = torch.randn(2, 8)
        assert torch.equal(f(x, idx + step), reference(x, idx + step))


def test_kv_cache_graph_input_takes_the_quantized_dtype() -> None:
    torch.manual_seed(0)
    cache, x, idx = torch.randn(6, 8), torch.randn(2, 8), torch.tensor([0, 3])
    cfg = QuantizerConfig(global_config=None, kv_cache_quant_configs={"index_copy": kv(2, A8)})
    q, gm, _ = prepared(CacheUpdate(), cfg, cache, x, idx)
    reference = copy.deepcopy(gm)
    (fq,) = activation_fq_names(gm)
    f = finalize(q, gm)
    assert f.meta["coreai_opt_quantized_inputs"] == {"cache": torch.int8}
    placeholder = next(n for n in f.graph.nodes if n.name == "cache")
    assert placeholder.meta["val"].dtype == torch.int8
    scale, zp = buffers(f)[f"{fq}_scale"], buffers(f)[f"{fq}_zero_point"]
    codes = torch.clamp(torch.round(cache / scale) + zp, -128, 127).to(torch.int8)
    # the prepared model on the dequantized cache == the finalized model on its codes
    assert torch.equal(f(codes, x, idx), reference((codes.float() - zp) * scale, x, idx))


def test_kv_cache_on_a_non_data_movement_op_is_refused() -> None:
    torch.manual_seed(0)
    cfg = QuantizerConfig(global_config=None, kv_cache_quant_configs={"linear": kv(0, A8)})
    q, gm, _ = prepared(MLP(), cfg, torch.randn(2, 64))
    before = gm.code
    with pytest.raises(FinalizeNodeError, match="not a data-movement op") as refused:
        q.finalize(gm, backend=ExportBackend.CoreAI)
    assert isinstance(refused.value, ValueError)
    assert gm.code == before  # refused before anything was converted


# -- op libraries --------------------------------------------------------------------


def test_torch_export_keeps_the_core_ai_ops_as_single_nodes() -> None:
    q, gm, x, ref = mlp_case(W8, A8)
    ops = select_export_ops()
    ep = torch.export.export(finalize(q, gm), (x,))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(ops.quantize.default) == 3
    assert targets.count(ops.dequantize.default) == 3
    assert targets.count(ops.blockwise_shift_scale.default) == 2
    assert torch.equal(ep.module()(x), ref)


PARITY_CASES = parity_cases(GRAPH_ACTIVATION_FORMATS)


@needs_both_libraries
@pytest.mark.parametrize(("case", "weight", "act"), PARITY_CASES, ids=[c for c, *_ in PARITY_CASES])
def test_our_ops_and_coreai_torch_give_the_same_model(
    case: str, weight: QuantizationSpec, act: QuantizationSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    q, gm, x, ref = mlp_case(weight, act)
    ours = copy.deepcopy(gm)
    theirs = finalize(q, gm)
    monkeypatch.setattr(_export_ops, "coreai_torch_available", lambda: False)
    ours = finalize(q, ours)
    assert any(str(n.target).startswith("coreai_opt.") for n in ours.graph.nodes)
    assert [n.name for n in ours.graph.nodes] == [n.name for n in theirs.graph.nodes]
    assert torch.equal(ours(x), theirs(x)) and torch.equal(ours(x), ref)


@needs_our_core_ai_ops
def test_int4_activations_run_with_our_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """coreai-torch's quantize cannot create a torch.int4 tensor in eager PyTorch; ours
    returns the int4 codes in an int8 container, so the finalized model runs."""
    monkeypatch.setattr(_export_ops, "coreai_torch_available", lambda: False)
    q, gm, x, ref = mlp_case(W8, QuantizationSpec(dtype=torch.int4, qscheme="asymmetric"))
    assert torch.equal(finalize(q, gm)(x), ref)
