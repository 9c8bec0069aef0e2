"""Graph-mode finalize to ``ExportBackend.CoreML``: metadata, gates, tracing, coremltools.

Numerics: the weights hold their fake-quantized values, so weight-only models give exactly
the prepared output. Activations run through ``torch.quantize_per_tensor``, whose rounding
of ``x / scale`` may differ from the FQ's in the last bit of the quotient: the tests allow
one step of the last activation quantizer.
"""

from __future__ import annotations

import pytest
import torch
from finalize_helpers import (
    U8,
    UW4,
    W4_BLOCK,
    W8,
    buffers,
    check_coreml_program_weights,
    coreml_gate_cases,
    mlp_case,
    needs_coremltools,
    prepared,
)
from torch import fx, nn

from coreai_opt import ExportBackend
from coreai_opt.quantization import KVCacheQuantConfig, QuantizerConfig
from coreai_opt.quantization.config import OpQuantizerConfig
from coreai_opt.quantization.finalize._coreml_modules import (
    MILActivationDequantize,
    MILActivationQuantize,
)
from coreai_opt.quantization.spec import QuantizationSpec
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase


def fq_modules(gm: fx.GraphModule) -> dict[str, FakeQuantizeImplBase]:
    return {n: m for n, m in gm.named_children() if isinstance(m, FakeQuantizeImplBase)}


def finalize(q, gm: fx.GraphModule) -> fx.GraphModule:
    out = q.finalize(gm, backend=ExportBackend.CoreML)
    assert out is gm
    return out


def test_w8a8_metadata_weights_and_activation_modules() -> None:
    q, gm, x, ref = mlp_case(W8, U8)
    fqs = fq_modules(gm)
    weight_fq = {m.tensor_fqn: m for m in fqs.values() if m.quantization_target.value == "weight"}
    fake_weights = {name: fq(gm.get_parameter(name)).detach() for name, fq in weight_fq.items()}
    acts = [n for n, m in fqs.items() if m.quantization_target.value == "activation"]
    f = finalize(q, gm)
    bufs = buffers(f)
    assert torch.equal(bufs["_COREML_/metadata_version"], torch.tensor(1))
    for owner, rows in (("a", 32), ("sub.1", 64)):
        key = f"{owner}._COREML_/weight"
        assert torch.equal(bufs[f"{key}/compression_type"], torch.tensor([3]))
        assert torch.equal(bufs[f"{key}/quantization_n_bits"], torch.tensor(8))
        assert bufs[f"{key}/quantization_scale"].shape == (rows, 1)
        assert bufs[f"{key}/zero_point"].dtype == torch.int8
        # the weight keeps its name and holds its fake-quantized value
        assert torch.equal(f.get_parameter(f"{owner}.weight"), fake_weights[f"{owner}.weight"])
    assert not fq_modules(f)
    for name in acts:
        mil = f.get_submodule(f"_mil_act_quant_{name}")
        assert isinstance(mil, nn.Sequential) and list(mil._modules) == ["quantize", "dequantize"]
        assert isinstance(mil.quantize, MILActivationQuantize)
        assert isinstance(mil.dequantize, MILActivationDequantize)
        assert mil.quantize.dtype == torch.quint8
        assert mil.quantize.zero_point.dtype == torch.uint8
        calls = [n for n in f.graph.nodes if n.op == "call_module"]
    assert [n.target for n in calls] == [f"_mil_act_quant_{name}" for name in acts]
    assert [n.name for n in calls] == [n.target for n in calls]
    step = float(f.get_submodule(f"_mil_act_quant_{acts[-1]}").quantize.scale)
    assert float((f(x) - ref).abs().max()) <= step
    f.train()
    f.eval()


@pytest.mark.parametrize("spec", [W4_BLOCK, UW4], ids=["int4_block", "uint4_asym"])
def test_four_bit_weights_are_bit_exact(spec: QuantizationSpec) -> None:
    q, gm, x, ref = mlp_case(spec)
    f = finalize(q, gm)
    bufs = buffers(f)
    assert torch.equal(bufs["a._COREML_/weight/quantization_n_bits"], torch.tensor(4))
    blocks = 2 if spec is W4_BLOCK else 1
    assert bufs["a._COREML_/weight/quantization_scale"].shape == (32, blocks)
    zp_dtype = torch.int8 if spec is W4_BLOCK else torch.uint8
    assert bufs["a._COREML_/weight/zero_point"].dtype == zp_dtype
    assert torch.equal(f(x), ref)


# graph mode names every fake-quantizer activation_post_process_<n>
@pytest.mark.parametrize(
    ("weight", "act", "error", "match"), coreml_gate_cases(r"activation_post_process_\d+")
)
def test_gates_refuse_before_any_change(
    weight: QuantizationSpec | None,
    act: QuantizationSpec | None,
    error: type[Exception],
    match: str,
) -> None:
    q, gm, x, ref = mlp_case(weight, act)
    names = sorted(fq_modules(gm))
    with pytest.raises(error, match=match):
        q.finalize(gm, backend=ExportBackend.CoreML)
    assert sorted(fq_modules(gm)) == names and "_COREML_/metadata_version" not in buffers(gm)
    assert torch.equal(gm(x), ref)


def test_a_model_without_fake_quantizers_is_refused() -> None:
    q, gm, _, _ = mlp_case(None)
    with pytest.raises(ValueError, match="no fake-quantize nodes"):
        q.finalize(gm, backend=ExportBackend.CoreML)


def test_kv_cache_quantization_is_refused() -> None:
    torch.manual_seed(0)
    kv = KVCacheQuantConfig(
        op_quantizer_config=OpQuantizerConfig(
            op_input_spec={1: QuantizationSpec(dtype=torch.int8)},
            op_output_spec=None,
            op_state_spec=None,
        )
    )

    class Cat(nn.Module):
        def forward(self, cache: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([cache, x * 2], dim=0)

    cfg = QuantizerConfig(global_config=None, kv_cache_quant_configs={"cat": kv})
    q, gm, _ = prepared(Cat(), cfg, torch.randn(3, 4), torch.randn(1, 4))
    with pytest.raises(NotImplementedError, match="KV-cache"):
        q.finalize(gm, backend=ExportBackend.CoreML)


def test_torch_jit_trace_of_the_finalized_model() -> None:
    q, gm, x, _ = mlp_case(W8, U8)
    f = finalize(q, gm)
    traced = torch.jit.trace(f, (x,))
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert {"aten::quantize_per_tensor", "aten::dequantize", "aten::linear"} <= kinds
    x2 = torch.randn(4, 64)
    assert torch.equal(traced(x2), f(x2))


# -- coremltools ---------------------------------------------------------------------


@needs_coremltools
@pytest.mark.parametrize(
    ("weight", "act", "data_dtypes"),
    [(W8, U8, {"int8"}), (W4_BLOCK, None, {"int4"}), (UW4, None, {"uint4"})],
    ids=["w8a8", "int4_block", "uint4_asym"],
)
def test_coremltools_stores_n_bit_weights_with_their_scales(weight, act, data_dtypes) -> None:
    q, gm, x, _ = mlp_case(weight, act)
    f = finalize(q, gm)
    check_coreml_program_weights(f, x, data_dtypes, act)
