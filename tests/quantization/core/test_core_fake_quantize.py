"""FakeQuantize, LearnableFakeQuantize and the component factory."""

from __future__ import annotations

import logging

import core_formulas
import pytest
import torch
from pydantic import Field

import coreai_opt  # noqa: F401  (loads the op library)
from coreai_opt.config.spec import CompressionTargetTensor
from coreai_opt.quantization.spec import (
    MovingAverageQParamsCalculator,
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QParamsCalculatorBase,
    QuantizationComponentFactory,
    QuantizationSpec,
    RangeCalculatorBase,
    StaticQParamsCalculator,
)
from coreai_opt.quantization.spec import fake_quantize as fq_mod
from coreai_opt.quantization.spec.fake_quantize import (
    FakeQuantize,
    FakeQuantizeImplBase,
    LearnableFakeQuantize,
)

ops = torch.ops.coreai_opt
Factory = QuantizationComponentFactory


def _fq(target: str = "activation", **spec_kwargs) -> FakeQuantizeImplBase:
    return Factory.create_fake_quantizer(QuantizationSpec(**spec_kwargs), target)


def _qdq(fq: FakeQuantize, x: torch.Tensor) -> torch.Tensor:
    """The fake-quantized x from the module's stored qparams, via the unfused ops."""
    scale, zp, minval = fq.calculate_qparams()
    if fq.is_float:
        return ops.fake_quantize_float(x, scale, fq.dtype)
    if fq.use_minval:
        return ops.fake_quantize_int(x, scale, None, minval, fq.quant_min, fq.quant_max)
    return ops.fake_quantize_int(x, scale, zp, None, fq.quant_min, fq.quant_max)


SPECS = [
    dict(dtype="int8"),
    dict(dtype="uint8", qscheme="asymmetric", qformulation="minval"),
    dict(
        dtype="int4",
        qscheme="symmetric_with_clipping",
        granularity={"type": "per_block", "axis": 1, "block_size": 4},
    ),
    dict(dtype="uint2", qscheme="asymmetric", granularity={"type": "per_channel", "axis": 0}),
    dict(dtype="float8_e4m3fn", granularity={"type": "per_channel", "axis": -1}),
    dict(dtype="float8_e5m2", scale_dtype="float8_e8m0fnu"),
    dict(dtype="float4_e2m1fn_x2", granularity={"type": "per_block", "axis": 1, "block_size": 8}),
    dict(dtype="int8", qparam_calculator_cls="global_minmax", float_range=[None, 2.0]),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(str(v) for v in s.values())[:60])
@pytest.mark.parametrize("target", ["weight", "activation"])
def test_forward_observes_and_fake_quantizes(spec, target) -> None:
    fq = _fq(target, **spec)
    twin = Factory.create_qparams_calculator(QuantizationSpec(**spec), target)
    assert type(fq) is FakeQuantize and fq.quantization_target == target
    gen = torch.Generator().manual_seed(3)
    for k in range(3):
        x = torch.randn(4, 16, generator=gen) * (k + 1)
        y = fq(x)
        want_qparams = twin(x)
        got_qparams = fq.calculate_qparams()
        for g, w in zip(got_qparams, want_qparams, strict=True):
            if w is None:
                assert g is None
            else:
                torch.testing.assert_close(g, w, rtol=0, atol=0)
        torch.testing.assert_close(y, _qdq(fq, x), rtol=0, atol=0)


def test_default_calculator_resolution() -> None:
    spec = QuantizationSpec()
    assert type(Factory.create_qparams_calculator(spec, "weight")) is StaticQParamsCalculator
    assert type(Factory.create_qparams_calculator(spec, "lut")) is StaticQParamsCalculator
    act = Factory.create_qparams_calculator(spec, CompressionTargetTensor.ACTIVATION)
    assert type(act) is MovingAverageQParamsCalculator
    assert Factory.construct(None, "weight") is None
    assert Factory.construct_partial(None, "weight") is None
    build = Factory.construct_partial(spec, "weight")
    a, b = build(), build()
    assert a is not b and a.qparams_calculator is not b.qparams_calculator
    with pytest.raises(ValueError, match=r"target='bias' .* allowed: \['weight', 'activation'"):
        Factory.construct(spec, "bias")


def test_switches_and_helpers() -> None:
    fq = _fq()
    assert fq.fake_quant_enabled.dtype == torch.uint8 and fq.fake_quant_enabled.shape == (1,)
    assert int(fq.observer_enabled) == 1 and int(fq.fake_quant_enabled) == 1
    x = torch.randn(3, 5)
    fq.disable_fake_quant()
    torch.testing.assert_close(fq(x), x, rtol=0, atol=0)
    assert fq.qparams_calculator.initialized, "observer still ran"
    scale = fq.calculate_qparams()[0].clone()
    fq.disable_observer()
    fq.enable_fake_quant()
    fq(x * 10)
    torch.testing.assert_close(fq.calculate_qparams()[0], scale)
    assert "observer=off, fake_quant=on" in repr(fq)
    model = torch.nn.Sequential(_fq(), torch.nn.Linear(2, 2), _fq())
    model.apply(fq_mod.disable_fake_quant)
    model.apply(fq_mod.enable_observer)
    assert all(int(m.fake_quant_enabled) == 0 for m in (model[0], model[2]))
    model.apply(fq_mod.enable_fake_quant)
    model.apply(fq_mod.disable_observer)
    assert all(int(m.observer_enabled) == 0 for m in (model[0], model[2]))
    assert all(int(m.fake_quant_enabled) == 1 for m in (model[0], model[2]))


def test_export_mode_never_observes() -> None:
    fq = _fq()
    x = torch.randn(4, 4)
    fq(x)
    before = {k: v.clone() for k, v in fq.state_dict().items()}
    fq.set_export_mode(True)
    y = fq(x * 7)
    for key, value in fq.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    torch.testing.assert_close(y, _qdq(fq, x * 7), rtol=0, atol=0)
    fq.set_export_mode(False)
    fq(x * 7)
    assert not torch.equal(fq.calculate_qparams()[0], before["qparams_calculator.scale"])


def test_block_mismatch_disables(caplog) -> None:
    fq = _fq("weight", granularity={"type": "per_block", "axis": 1, "block_size": 5})
    x = torch.randn(4, 8)
    with caplog.at_level(logging.WARNING):
        y = fq(x)
    assert y is x and fq.is_disabled() and fq._disabled
    assert "does not divide" in caplog.text
    assert "disabled" in repr(fq)


def test_batch_size_may_change_for_per_tensor_activations() -> None:
    fq = _fq()
    fq(torch.randn(4, 8))
    y = fq(torch.randn(2, 8))
    assert y.shape == (2, 8) and fq.calculate_qparams()[0].shape == (1, 1)


def test_granularity_setter_propagates() -> None:
    fq = _fq("weight", granularity={"type": "per_channel"})
    fq.granularity = PerChannelGranularity(axis=1)
    assert fq.qparams_calculator.granularity == PerChannelGranularity(axis=1)
    assert fq.qparams_calculator.range_calculator.granularity == PerChannelGranularity(axis=1)
    fq(torch.randn(3, 4))
    assert fq.calculate_qparams()[0].shape == (1, 4)
    with pytest.raises(RuntimeError, match=r"cannot change after the calculator has observed data"):
        fq.granularity = PerTensorGranularity()


def test_with_args_and_convert() -> None:
    calc = StaticQParamsCalculator(torch.int8, "symmetric", PerTensorGranularity())
    ctor = FakeQuantize.with_args(
        dtype=torch.int8,
        qscheme="symmetric",
        qformulation="zp",
        granularity=PerTensorGranularity(),
        target_dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        quantization_target="weight",
    )
    fq = ctor(qparams_calculator=calc)
    assert isinstance(fq, FakeQuantize) and fq.convert(None, None) is None
    assert fq_mod._DefaultFakeQuantizeImpl is FakeQuantize
    assert FakeQuantizeImplBase.REGISTRY["default"] is FakeQuantize
    assert FakeQuantizeImplBase.REGISTRY["lsq"] is LearnableFakeQuantize
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'bogus'"):
        ctor(qparams_calculator=calc, bogus=1)


@pytest.mark.parametrize("spec", [SPECS[1], SPECS[2], SPECS[4], SPECS[6]], ids=str)
def test_state_dict_round_trip(spec) -> None:
    src = _fq("weight", **spec)
    x = torch.randn(4, 16)
    src(x)
    src.disable_observer()
    dst = _fq("weight", **spec)
    dst.load_state_dict(src.state_dict())
    assert set(dst.state_dict()) == set(src.state_dict())
    for key, value in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[key], value, rtol=0, atol=0)
    z = torch.randn(4, 16)
    torch.testing.assert_close(dst(z), src(z), rtol=0, atol=0)
    assert int(dst.observer_enabled) == 0


def test_float_format_has_no_zero_point_state() -> None:
    fq = _fq(dtype="float8_e4m3fn")
    fq(torch.randn(2, 3))
    keys = set(fq.state_dict())
    assert not any("zero_point" in k or "minval" in k for k in keys)
    assert fq.calculate_qparams()[1:] == (None, None)


def test_backward_is_clipped_ste() -> None:
    fq = _fq(dtype="int8", float_range=[-1.0, 1.0])
    x = torch.tensor([[-3.0, -0.5, 0.25, 0.9, 2.0]], requires_grad=True)
    fq(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]]))
    assert fq.qparams_calculator.scale.grad_fn is None


# -- user-registered components -------------------------------------------------------


@QParamsCalculatorBase.register("test_core_halfrange")
class _HalfRange(QParamsCalculatorBase):
    """Symmetric int scale from half of max |x| (so half the values clip)."""

    def forward(self, x):
        half = x.detach().abs().amax().float() / 2
        scale = (half / 127.0).reshape([1] * x.dim())
        zp = torch.zeros_like(scale, dtype=torch.int32)
        return scale, zp, -half.reshape([1] * x.dim())


@RangeCalculatorBase.register("test_core_absmax")
class _AbsMax(RangeCalculatorBase):
    """Range ±max|x| per block."""

    def forward(self, x):
        lo, hi = ops.minmax(x, list(self.block_size(x.shape)))
        m = torch.maximum(-lo, hi)
        return -m, m


def test_user_registered_qparams_calculator_takes_python_path() -> None:
    fq = _fq(qparam_calculator_cls="test_core_halfrange")
    assert type(fq.qparams_calculator) is _HalfRange and fq._method is None
    x = torch.linspace(-4, 4, 9).reshape(1, 9)
    y = fq(x)
    scale = torch.full((1, 1), 2.0 / 127.0)
    torch.testing.assert_close(fq.calculate_qparams()[0], scale)
    want = ops.fake_quantize_int(x, scale, torch.zeros(1, 1, dtype=torch.int32), None, -128, 127)
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    fq.disable_observer()
    fq(x * 3)
    torch.testing.assert_close(fq.calculate_qparams()[0], scale)


def test_user_registered_range_calculator() -> None:
    fq = _fq(qscheme="asymmetric", dtype="uint8", range_calculator_cls="test_core_absmax")
    assert fq._method is None
    x = torch.tensor([[0.5, 1.0, 2.0]])
    fq(x)
    scale, zp, _ = fq.calculate_qparams()
    torch.testing.assert_close(scale, torch.full((1, 1), 4.0 / 255.0))
    # The range is [-2, 2] (the user's calculator), not the min/max range [0, 2].
    want = core_formulas.int_qparams(
        torch.full((1, 1), -2.0), torch.full((1, 1), 2.0), 0, 255, False
    )
    torch.testing.assert_close(zp, want[1], rtol=0, atol=0)


class _SpecWithConstant(QuantizationSpec):
    averaging_constant: float = Field(default=0.25)


class _SpecWithTypo(QuantizationSpec):
    averaging_constnt: float = Field(default=0.25)


def test_extra_spec_fields_are_forwarded() -> None:
    fq = Factory.create_fake_quantizer(_SpecWithConstant(), "activation")
    assert fq.qparams_calculator.averaging_constant == 0.25
    with pytest.raises(ValueError, match=r"\['averaging_constnt'\] that no component"):
        Factory.create_fake_quantizer(_SpecWithTypo(), "activation")


# -- LSQ ------------------------------------------------------------------------------------


def test_lsq_initialises_and_learns() -> None:
    fq = _fq(
        "weight",
        dtype="int8",
        fake_quantize_cls="lsq",
        granularity={"type": "per_channel", "axis": 0},
    )
    assert isinstance(fq, LearnableFakeQuantize)
    assert isinstance(fq.scale, torch.nn.Parameter) and fq.scale.numel() == 0
    x = torch.randn(3, 8)
    y = fq(x)
    scale, zp, _ = fq.qparams_calculator.get_qparams()
    torch.testing.assert_close(fq.scale.detach(), scale)
    torch.testing.assert_close(
        y, ops.fake_quantize_int(x, scale, zp, None, -128, 127), rtol=0, atol=0
    )
    fq.disable_observer()
    before = fq.scale.detach().clone()
    opt = torch.optim.SGD(fq.parameters(), lr=0.1)
    loss = (fq(x) - x * 1.5).pow(2).sum()
    loss.backward()
    assert fq.scale.grad is not None and fq.zero_point.grad is not None
    opt.step()
    assert not torch.equal(fq.scale.detach(), before)
    dst = _fq(
        "weight",
        dtype="int8",
        fake_quantize_cls="lsq",
        granularity={"type": "per_channel", "axis": 0},
    )
    dst.load_state_dict(fq.state_dict())
    dst.disable_observer()
    torch.testing.assert_close(dst(x), fq(x), rtol=0, atol=0)
    assert fq.calculate_qparams()[1].dtype == torch.int32


def test_lsq_rejects_float_and_minval() -> None:
    with pytest.raises(ValueError, match=r"'lsq' supports integer dtypes with qformulation='zp'"):
        _fq(dtype="float8_e4m3fn", fake_quantize_cls="lsq")
    with pytest.raises(ValueError, match=r"qformulation='minval'"):
        _fq(dtype="uint8", qscheme="asymmetric", qformulation="minval", fake_quantize_cls="lsq")


# -- torch.compile / torch.export -------------------------------------------------------------


def _coreai_nodes(graph: torch.fx.Graph) -> list[str]:
    return [
        str(n.target)
        for n in graph.nodes
        if n.op == "call_function" and "coreai_opt" in str(n.target)
    ]


@pytest.mark.parametrize("spec", [SPECS[0], SPECS[2], SPECS[5]], ids=str)
def test_export_is_one_fused_node(spec) -> None:
    fq = _fq("activation", **spec)
    x = torch.randn(4, 16)
    fq(x)
    ep = torch.export.export(fq, (x,))
    assert _coreai_nodes(ep.graph) == ["coreai_opt.fused_fake_quantize.default"]
    call = [n for n in ep.graph.nodes if n.op == "call_function"]
    assert len(call) == 1


def test_compile_fullgraph_single_node_and_same_numbers() -> None:
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    eager = _fq("activation", dtype="uint8", qscheme="asymmetric")
    compiled_fq = _fq("activation", dtype="uint8", qscheme="asymmetric")
    x0 = torch.randn(4, 8)
    eager(x0)
    compiled_fq(x0)
    compiled = torch.compile(compiled_fq, backend=backend, fullgraph=True)
    for k in range(3):
        x = torch.randn(4, 8) * (k + 1)
        torch.testing.assert_close(compiled(x), eager(x), rtol=0, atol=0)
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled_fq.state_dict()[key], value, rtol=0, atol=0)
    assert len(graphs) == 1
    calls = [n for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert [str(n.target) for n in calls] == ["coreai_opt.fused_fake_quantize"]
    aot = torch.compile(compiled_fq, backend="aot_eager", fullgraph=True)
    compiled_fq.disable_fake_quant()
    x = torch.randn(4, 8)
    torch.testing.assert_close(aot(x), x, rtol=0, atol=0)
    torch._dynamo.reset()


def test_factory_accepts_registered_granularity_objects() -> None:
    spec = QuantizationSpec(dtype="int4", granularity=PerBlockGranularity(block_size=(1, 4)))
    fq = Factory.create_fake_quantizer(spec, "weight")
    fq(torch.randn(2, 8))
    assert fq.calculate_qparams()[0].shape == (2, 2)


def test_a_per_tensor_fake_quantizer_takes_tensors_of_another_rank() -> None:
    """Graph mode calls one per-tensor FQ on both sides of a rank-reducing mean."""
    spec = QuantizationSpec(dtype=torch.int8)
    fq = QuantizationComponentFactory.create_fake_quantizer(
        spec, CompressionTargetTensor.ACTIVATION
    )
    x = torch.randn(2, 3, 4, 4)
    y4 = fq(x)
    scale = fq.qparams_calculator.scale.clone()
    y2 = fq(x.mean(dim=(2, 3)))
    assert y4.shape == x.shape and y2.shape == (2, 3)
    assert fq.qparams_calculator.scale.shape == scale.shape  # one state, seen through views
    per_channel = QuantizationSpec(dtype=torch.int8, granularity=PerChannelGranularity(axis=1))
    fq_c = QuantizationComponentFactory.create_fake_quantizer(
        per_channel, CompressionTargetTensor.ACTIVATION
    )
    fq_c(x)
    with pytest.raises(ValueError, match="only a per-tensor fake-quantizer can take both"):
        fq_c(x.mean(dim=(2, 3)))
