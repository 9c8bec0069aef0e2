"""Stateful / stateless calculator bases and dynamic quantization (behaviour.md §12)."""

from __future__ import annotations

import core_formulas as ref
import pydantic
import pytest
import torch

import coreai_opt  # noqa: F401  (loads the op library)
from coreai_opt.config.spec import CompressionTargetTensor
from coreai_opt.quantization.spec import (
    DynamicQParamsCalculator,
    GlobalMinMaxQParamsCalculator,
    MovingAverageQParamsCalculator,
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QParamsCalculatorBase,
    QuantizationComponentFactory,
    QuantizationSpec,
    StatefulQParamsCalculatorBase,
    StatelessQParamsCalculatorBase,
    StaticQParamsCalculator,
    _state_epoch,
)
from coreai_opt.quantization.spec.fake_quantize import FakeQuantize

ops = torch.ops.coreai_opt
Factory = QuantizationComponentFactory


def _dynamic_fq(**spec_kwargs) -> FakeQuantize:
    spec = QuantizationSpec(qparam_calculator_cls="dynamic", **spec_kwargs)
    fq = Factory.create_fake_quantizer(spec, quantization_target="activation")
    assert isinstance(fq, FakeQuantize)
    return fq


def test_bases_and_registry() -> None:
    for cls in (StaticQParamsCalculator, MovingAverageQParamsCalculator):
        assert issubclass(cls, StatefulQParamsCalculatorBase) and not cls.is_stateless
    assert issubclass(GlobalMinMaxQParamsCalculator, StatefulQParamsCalculatorBase)
    assert issubclass(DynamicQParamsCalculator, StatelessQParamsCalculatorBase)
    assert DynamicQParamsCalculator.is_stateless
    assert issubclass(StatelessQParamsCalculatorBase, QParamsCalculatorBase)
    assert QParamsCalculatorBase.REGISTRY["dynamic"] is DynamicQParamsCalculator
    assert QuantizationSpec(qparam_calculator_cls="dynamic").qparam_calculator_cls is (
        DynamicQParamsCalculator
    )


@pytest.mark.parametrize(
    ("dtype", "qscheme", "granularity", "shape"),
    [
        ("int8", "asymmetric", PerTensorGranularity(), (3, 8)),
        ("uint8", "symmetric", PerChannelGranularity(axis=0), (3, 8)),
        ("int4", "asymmetric", PerBlockGranularity(axis=-1, block_size=4), (2, 3, 8)),
    ],
    ids=str,
)
def test_dynamic_qparams_follow_each_tensor(dtype, qscheme, granularity, shape) -> None:
    """Every call gives the qparams of that tensor alone (no running range, no buffers)."""
    calc = Factory.create_qparams_calculator(
        QuantizationSpec(
            dtype=dtype, qscheme=qscheme, granularity=granularity, qparam_calculator_cls="dynamic"
        ),
        quantization_target="activation",
    )
    assert isinstance(calc, DynamicQParamsCalculator)
    assert calc.quantization_target is CompressionTargetTensor.ACTIVATION
    gen = torch.Generator().manual_seed(11)
    for k in range(3):
        x = torch.randn(shape, generator=gen) * (k + 1) + k
        scale, zp, minval = calc(x)
        block = granularity.get_block_size(shape, "activation")
        lo, hi = ref.block_minmax(x, block)
        want = ref.int_qparams(lo, hi, calc.quant_min, calc.quant_max, qscheme != "asymmetric")
        torch.testing.assert_close(scale, want[0], rtol=0, atol=0)
        torch.testing.assert_close(zp, want[1], rtol=0, atol=0)
        torch.testing.assert_close(minval, want[2], rtol=0, atol=0)
        torch.testing.assert_close(calc.scale, want[0], rtol=0, atol=0)
    assert dict(calc.state_dict()) == {}
    assert list(calc.buffers()) == []


def test_dynamic_calculator_returns_input_dtype_and_float_formats() -> None:
    calc = DynamicQParamsCalculator(
        dtype=torch.float8_e4m3fn, qscheme="symmetric", granularity=PerTensorGranularity()
    )
    x = torch.randn(4, 4).to(torch.bfloat16)
    scale, zp, minval = calc(x)
    assert scale.dtype == torch.bfloat16 and zp is None and minval is None
    want = ref.float_qparams(*ref.block_minmax(x, (4, 4)), torch.float8_e4m3fn, False)
    torch.testing.assert_close(calc.scale, want, rtol=0, atol=0)
    assert calc.scale.dtype == torch.float32


def test_dynamic_fake_quantizer_matches_the_ops_and_changes_shape() -> None:
    """Token-wise blocks: the qparam shape follows the sequence length from call to call."""
    fq = _dynamic_fq(
        dtype="int8",
        qscheme="asymmetric",
        granularity={"type": "per_block", "axis": -1, "block_size": 4},
    )
    assert fq.is_stateless
    gen = torch.Generator().manual_seed(5)
    for seq in (3, 7, 2):
        x = torch.randn(2, seq, 8, generator=gen)
        y = fq(x)
        lo, hi = ops.minmax(x, [1, 1, 4])
        scale, zp, _ = ops.choose_qparams_int(lo, hi, -128, 127, False)
        assert fq.qparams_calculator.scale.shape == (2, seq, 2)
        torch.testing.assert_close(
            y, ops.fake_quantize_int(x, scale, zp, None, -128, 127), rtol=0, atol=0
        )
    assert set(fq.state_dict()) == {"fake_quant_enabled", "observer_enabled"}


def test_dynamic_observer_cannot_be_switched_off_and_has_no_export_mode() -> None:
    fq = _dynamic_fq(dtype="int8")
    fq.disable_observer()
    assert int(fq.observer_enabled[0]) == 1
    fq.enable_observer(False)
    assert int(fq.observer_enabled[0]) == 1
    x1, x2 = torch.randn(4, 4), 10 * torch.randn(4, 4)
    fq(x1)
    fq(x2)  # recomputed from x2 although the observer was "disabled"
    assert fq.qparams_calculator.scale.item() == pytest.approx(x2.abs().max().item() / 127.5)
    with pytest.raises(NotImplementedError, match=r"no export mode"):
        fq.set_export_mode(True)
    fq.set_export_mode(False)
    with pytest.raises(NotImplementedError, match=r"stores no qparams"):
        fq.calculate_qparams()
    fq.disable_fake_quant()
    x = torch.randn(3, 3)
    assert fq(x) is x


def test_dynamic_gradient_is_the_clipped_ste() -> None:
    fq = _dynamic_fq(dtype="int8", qscheme="asymmetric")
    x = torch.randn(4, 8, requires_grad=True)
    fq(x).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_dynamic_rules() -> None:
    with pytest.raises(
        pydantic.ValidationError,
        match=r"'symmetric_with_clipping' is not supported with qparam_calculator_cls='dynamic'",
    ):
        QuantizationSpec(qparam_calculator_cls="dynamic", qscheme="symmetric_with_clipping")
    with pytest.raises(
        pydantic.ValidationError, match=r"float_range must be \[None, None\]; got \[None, 2.0\]"
    ):
        QuantizationSpec(qparam_calculator_cls="dynamic", float_range=[None, 2.0])
    spec = QuantizationSpec(qparam_calculator_cls="dynamic")
    for target in ("weight", "lut"):
        with pytest.raises(
            ValueError, match=rf"activations only; got quantization_target='{target}'"
        ):
            Factory.create_fake_quantizer(spec, target)
        with pytest.raises(ValueError, match=r"activations only"):
            Factory.create_qparams_calculator(spec, quantization_target=target)
    with pytest.raises(ValueError, match=r"activations only"):
        DynamicQParamsCalculator(
            dtype=torch.int8,
            qscheme="symmetric",
            granularity=PerTensorGranularity(),
            quantization_target="weight",
        )
    with pytest.raises(ValueError, match=r"float_range must be \[None, None\]"):
        DynamicQParamsCalculator(
            dtype=torch.int8,
            qscheme="symmetric",
            granularity=PerTensorGranularity(),
            float_range=(-1.0, 1.0),
        )
    with pytest.raises(ValueError, match=r"needs a stateful qparams calculator"):
        Factory.create_fake_quantizer(
            QuantizationSpec(qparam_calculator_cls="dynamic", fake_quantize_cls="lsq"), "activation"
        )


def test_stateless_granularity_may_change_after_data() -> None:
    calc = DynamicQParamsCalculator(
        dtype=torch.int8, qscheme="symmetric", granularity=PerTensorGranularity()
    )
    calc(torch.randn(2, 4))
    calc.granularity = PerChannelGranularity(axis=1)
    assert calc(torch.randn(2, 4))[0].shape == (1, 4)
    static = StaticQParamsCalculator(
        dtype=torch.int8, qscheme="symmetric", granularity=PerTensorGranularity()
    )
    static(torch.randn(2, 4))
    with pytest.raises(RuntimeError, match=r"cannot change after the calculator has observed data"):
        static.granularity = PerChannelGranularity(axis=1)


def test_forward_leaves_the_state_epoch_alone() -> None:
    """The per-call qparams a dynamic calculator keeps for inspection are not state the
    eager tables bind: computing them must not make every eager model re-bind."""
    fq = _dynamic_fq()
    fq(torch.randn(4, 8))
    before = _state_epoch.EPOCH[0]
    for _ in range(3):
        fq(torch.randn(4, 8))
    assert _state_epoch.EPOCH[0] == before
    assert fq.qparams_calculator.scale is not None
