"""Component registries, the spec package surface and the weight-axis defaults table."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn

import coreai_opt.quantization as quantization
import coreai_opt.quantization.spec as spec_pkg
from coreai_opt.quantization.spec import QParamsCalculatorBase, RangeCalculatorBase
from coreai_opt.quantization.spec.axis_defaults import WEIGHT_AXIS_DEFAULTS, default_weight_axes
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase


def test_builtin_keys_resolve_to_their_registered_classes() -> None:
    assert FakeQuantizeImplBase.resolve("default") is FakeQuantizeImplBase.REGISTRY["default"]
    assert FakeQuantizeImplBase.resolve("default").__name__ == "FakeQuantize"
    assert RangeCalculatorBase.resolve("minmax").__name__ == "MinMaxRangeCalculator"
    for key in ("default", "static", "moving_average", "global_minmax", "dynamic"):
        klass = QParamsCalculatorBase.resolve(key)
        assert QParamsCalculatorBase.REGISTRY[key] is klass
        assert QParamsCalculatorBase.resolve(klass) is klass
        assert QParamsCalculatorBase.get_class(key) is klass
    assert {"static", "dynamic"} <= QParamsCalculatorBase.list_registry_keys()
    assert QParamsCalculatorBase.resolve("static") in QParamsCalculatorBase.list_registry_values()


@pytest.mark.parametrize("value", [1.5, None, ["static"], object()], ids=repr)
def test_lookup_of_other_values_is_a_value_error(value: object) -> None:
    """0.3.0: neither a key nor a registered class -> ValueError naming registry and keys."""
    with pytest.raises(ValueError, match=r"QParamsCalculatorBase registry.*'moving_average'"):
        QParamsCalculatorBase.resolve(value)
    with pytest.raises(ValueError, match=r"no class is registered with key 'ema'.*'static'"):
        QParamsCalculatorBase.get_class("ema")


def test_register_and_lookup(caplog: pytest.LogCaptureFixture) -> None:
    @RangeCalculatorBase.register("test_range")
    class First(RangeCalculatorBase):
        def forward(self, x):
            return x.amin(), x.amax()

    try:
        assert RangeCalculatorBase.resolve("test_range") is First
        assert RangeCalculatorBase.key_of(First) == "test_range"
        assert "test_range" in RangeCalculatorBase.available_keys()
        assert "test_range" not in QParamsCalculatorBase.available_keys()
        with caplog.at_level(logging.WARNING):

            @RangeCalculatorBase.register("test_range")
            class Second(RangeCalculatorBase):
                def forward(self, x):
                    return x.amin(), x.amax()

        assert "replacing" in caplog.text
        assert RangeCalculatorBase.resolve("test_range") is Second
    finally:
        RangeCalculatorBase.REGISTRY.pop("test_range")


def test_register_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match=r"non-empty str key"):
        RangeCalculatorBase.register("")
    with pytest.raises(TypeError, match=r"only decorate subclasses of RangeCalculatorBase"):
        RangeCalculatorBase.register("x")(int)


def test_base_classes_are_abstract_modules() -> None:
    for base in (FakeQuantizeImplBase, QParamsCalculatorBase, RangeCalculatorBase):
        assert issubclass(base, torch.nn.Module)
        with pytest.raises(TypeError, match=r"abstract"):
            base()


def test_public_surface() -> None:
    assert set(quantization.__all__) == {
        "ExecutionMode",
        "InvalidExecutionModeError",
        "KVCacheQuantConfig",
        "ModuleQuantizerConfig",
        "QuantizationSpec",
        "Quantizer",
        "QuantizerConfig",
    }
    for name in spec_pkg.__all__:
        assert hasattr(spec_pkg, name)
    assert quantization.fake_quantize.FakeQuantizeImplBase is FakeQuantizeImplBase
    assert hasattr(quantization, "qparams_calculator")
    assert hasattr(quantization, "range_calculator")
    from coreai_opt.quantization.spec import fake_quantize, qformulation

    assert fake_quantize.__all__ == ["FakeQuantizeImplBase"]
    assert qformulation.__all__ == ["QuantizationFormulation"]


@pytest.mark.parametrize(
    ("consumer", "axes"),
    [
        (nn.Conv1d, (0, 1)),
        (nn.Conv2d, (0, 1)),
        (nn.Conv3d, (0, 1)),
        (nn.ConvTranspose1d, (1, 0)),
        (nn.ConvTranspose2d, (1, 0)),
        (nn.ConvTranspose3d, (1, 0)),
        (nn.Linear, (0, 1)),
        (nn.Embedding, (0, 1)),
        ("torch.nn.modules.linear.Linear", (0, 1)),
        (torch.ops.aten.conv2d.default, (0, 1)),
        (torch.ops.aten.conv_transpose2d.input, (1, 0)),
        ("aten.conv_transpose1d.default", (1, 0)),
        ("aten.embedding.default", (0, 1)),
        (torch.ops.aten.linear.default, (0, 1)),
    ],
)
def test_axis_defaults(consumer: object, axes: tuple[int, int]) -> None:
    found = default_weight_axes(consumer)
    assert found is not None
    assert (found.per_channel_axis, found.per_block_axis) == axes


def test_axis_defaults_unknown_consumer() -> None:
    assert default_weight_axes(nn.LayerNorm) is None
    assert default_weight_axes("aten.matmul.default") is None
    assert len(WEIGHT_AXIS_DEFAULTS) == 16
