"""A prepared GraphModule under torch.export and torch.compile; custom patterns; refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from models import ConvBnNet, TwoBlocks, TwoConvs
from torch import nn

from coreai_opt.quantization import Quantizer, QuantizerConfig
from coreai_opt.quantization._graph.insert import is_fq_node
from coreai_opt.quantization._graph.patterns import _REGISTRY
from coreai_opt.quantization.config import ModuleQuantizerConfig, OpQuantizerConfig
from coreai_opt.quantization.graph_patterns import register_annotation_pattern
from coreai_opt.quantization.spec import (
    PerChannelGranularity,
    QuantizationSpec,
    default_activation_quantization_spec,
    default_weight_quantization_spec,
)


def _coreai_targets(gm: torch.fx.GraphModule) -> list[str]:
    return [
        str(n.target)
        for n in gm.graph.nodes
        if n.op == "call_function" and str(n.target).startswith("coreai_opt.")
    ]


def test_export_of_a_prepared_model_keeps_one_node_per_fq_call() -> None:
    x = torch.randn(2, 3, 8, 8)
    gm = Quantizer(ConvBnNet().eval(), QuantizerConfig()).prepare((x,))
    calls = sum(1 for n in gm.graph.nodes if is_fq_node(n))
    exported = torch.export.export(gm, (x,))
    targets = _coreai_targets(exported.graph_module)
    assert len(targets) == calls
    assert set(targets) == {"coreai_opt.fused_fake_quantize.default"}
    torch.testing.assert_close(exported.module()(x), gm(x))


def test_compiled_qat_step_matches_the_uncompiled_one() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 16)
    model = TwoBlocks()
    q = Quantizer(model, QuantizerConfig())
    eager = q.prepare((x,))
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)

    def step(m: nn.Module, fwd: object) -> tuple[torch.Tensor, list[torch.Tensor]]:
        m.train()
        m.zero_grad()
        loss = fwd(x).square().mean()  # type: ignore[operator]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters()]

    with q.training_mode(eager):
        loss_e, grads_e = step(eager, eager)
    q2 = Quantizer(model, QuantizerConfig())
    with q2.training_mode(compiled_model):
        loss_c, grads_c = step(compiled_model, compiled)
    torch.testing.assert_close(loss_c, loss_e)
    for a, b in zip(grads_c, grads_e, strict=True):
        torch.testing.assert_close(a, b)


class _HeadsAndConv(nn.Module):
    """A conv (Inductor stores its activations channels_last and, the fused op being tagged
    flexible_layout, hands them to it so) and nn.MultiheadAttention (fake-quantized matmul
    inputs are head-split transposed views): the fused op's outputs must take the strides its
    Meta kernel gives for whatever layout Inductor picks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)  # (2, 16, 8)
        return self.attn(t, t, t, need_weights=False)[0].sum()


def test_inductor_qat_step_matches_the_uncompiled_one() -> None:
    """Inductor (not aot_eager): output layouts, strides and the values of a QAT step."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    model = _HeadsAndConv()
    q = Quantizer(model, QuantizerConfig())
    eager = q.prepare((x,))
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True)
    q2 = Quantizer(model, QuantizerConfig())
    with q.training_mode(eager), q2.training_mode(compiled_model):
        for fwd, m in ((eager, eager), (compiled, compiled_model)):
            m.zero_grad()
            fwd(x).backward()
        for a, b in zip(compiled_model.parameters(), eager.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lsq", [False, True], ids=["per-channel", "lsq"])
def test_inductor_conv_qat_step_matches_the_uncompiled_one(lsq: bool) -> None:
    """Under Inductor the fake-quantize ops take the channels_last activations as they are:
    per-channel activation qparams (along the channel dimension, the innermost one in
    memory) with fullgraph=True, and LSQ weights (their fake-quantizers read the switches
    on the host, so the graph breaks there). The gradients are those of the uncompiled
    step."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6)
    activation = QuantizationSpec(dtype=torch.int8, granularity=PerChannelGranularity(axis=1))
    weight = QuantizationSpec(
        dtype=torch.int4,
        qscheme="asymmetric",
        fake_quantize_cls="lsq",
        granularity=PerChannelGranularity(axis=0),
    )
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_input_spec={0: activation},
            op_output_spec={0: activation},
            op_state_spec={"weight": weight if lsq else default_weight_quantization_spec()},
        )
    )
    model = TwoConvs()
    q = Quantizer(model, config)
    eager = q.prepare((x,))
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=not lsq)
    q2 = Quantizer(model, config)
    with q.training_mode(eager), q2.training_mode(compiled_model):
        for fwd, m in ((eager, eager), (compiled, compiled_model)):
            m.zero_grad()
            fwd(x).square().mean().backward()
    grads = [(n, p.grad) for n, p in compiled_model.named_parameters()]
    assert any("scale" in n for n, _ in grads) == lsq  # LSQ's learnable qparams
    for (name, a), b in zip(grads, eager.parameters(), strict=True):
        torch.testing.assert_close(a, b.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_a_registered_pattern_quantizes_an_op_the_registry_lacks() -> None:
    class Soft(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x * 3, dim=-1)

    x = torch.randn(4, 8)
    spec = default_activation_quantization_spec()
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_type_config={
                "softmax": OpQuantizerConfig(op_input_spec={0: spec}, op_output_spec=None)
            },
            op_input_spec={"*": None},
            op_output_spec={"*": None},
        )
    )
    before = Quantizer(Soft(), config).prepare((x,))
    assert not any(is_fq_node(n) for n in before.graph.nodes)
    count = len(_REGISTRY)
    try:
        register_annotation_pattern("softmax", [[torch.ops.aten.softmax]], "nary")
        gm = Quantizer(Soft(), config).prepare((x,))
        fq = [n for n in gm.graph.nodes if is_fq_node(n)]
        assert [n.args[0].name for n in fq] == ["mul"]
        assert next(iter(fq[0].users)).target is torch.ops.aten.softmax.int
    finally:
        del _REGISTRY[count:]
    with pytest.raises(ValueError, match="kind='unary' is not a pattern kind"):
        register_annotation_pattern("x", [[torch.ops.aten.softmax]], "unary")


def test_op_input_spec_index_pointing_at_a_state_is_refused() -> None:
    spec = default_activation_quantization_spec()
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(op_input_spec={0: spec, 1: spec}),
    )
    with pytest.raises(
        RuntimeError, match=r"index 1, which points at the state tensor '0\.weight'"
    ):
        Quantizer(nn.Sequential(nn.Linear(4, 4)), config).prepare((torch.randn(2, 4),))


def test_a_shared_fq_follows_the_schedule_of_the_winning_neighbour() -> None:
    from coreai_opt.quantization.config import QATSchedule

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    late = ModuleQuantizerConfig(qat_schedule=QATSchedule(enable_observer=0, enable_fake_quant=3))
    q = Quantizer(model, QuantizerConfig(module_name_configs={"1": late}))
    gm = q.prepare((torch.randn(2, 4),))
    between = next(n for n in gm.graph.nodes if is_fq_node(n) and n.args[0].name == "linear")
    first_weight = next(
        n for n in gm.graph.nodes if is_fq_node(n) and n.args[0].name.endswith("0_weight")
    )
    with q.training_mode():
        # The edge linear -> linear_1 is one FQ; module "1" (a module_name config) wins it.
        assert not bool(gm.get_submodule(str(between.target)).fake_quant_enabled[0])
        assert bool(gm.get_submodule(str(first_weight.target)).fake_quant_enabled[0])
        for _ in range(3):
            q.step()
        assert bool(gm.get_submodule(str(between.target)).fake_quant_enabled[0])
