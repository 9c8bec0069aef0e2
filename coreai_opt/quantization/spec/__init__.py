"""Quantization spec layer: ``QuantizationSpec``, granularities, calculators, fake-quantizers.

The data classes (``QuantizationSpec``, the granularities, the enums) are imported with
the package. The working ``nn.Module`` pieces (qparam and range calculators,
fake-quantizers, the component factory) are shared by both execution modes and load on
first use: reading one of their names here (``spec.StaticQParamsCalculator``,
``from coreai_opt.quantization.spec import QuantizationComponentFactory``) imports the
module that defines it. Importing the data classes never imports them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from coreai_opt.quantization.spec import errors, granularity, qformulation, qscheme, spec
from coreai_opt.quantization.spec.granularity import (
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QuantizationGranularity,
    resolve_block_sizes,
)
from coreai_opt.quantization.spec.qformulation import QuantizationFormulation
from coreai_opt.quantization.spec.qscheme import QuantizationScheme
from coreai_opt.quantization.spec.spec import (
    QuantizationSpec,
    default_activation_quantization_spec,
    default_weight_quantization_spec,
)

if TYPE_CHECKING:
    from coreai_opt.quantization.spec import factory as factory
    from coreai_opt.quantization.spec import fake_quantize as fake_quantize
    from coreai_opt.quantization.spec import qparams_calculator as qparams_calculator
    from coreai_opt.quantization.spec import range_calculator as range_calculator
    from coreai_opt.quantization.spec.factory import QuantizationComponentFactory
    from coreai_opt.quantization.spec.fake_quantize import (
        FakeQuantizeImplBase as FakeQuantizeImplBase,
    )
    from coreai_opt.quantization.spec.fake_quantize import fp4_forward
    from coreai_opt.quantization.spec.qparams_calculator import (
        DynamicQParamsCalculator,
        GlobalMinMaxQParamsCalculator,
        MovingAverageQParamsCalculator,
        QParamsCalculatorBase,
        RunningRangeMixin,
        StatefulQParamsCalculatorBase,
        StatelessQParamsCalculatorBase,
        StaticQParamsCalculator,
    )
    from coreai_opt.quantization.spec.range_calculator import (
        MinMaxRangeCalculator,
        RangeCalculatorBase,
    )

__all__ = [
    "DynamicQParamsCalculator",
    "GlobalMinMaxQParamsCalculator",
    "MinMaxRangeCalculator",
    "MovingAverageQParamsCalculator",
    "PerBlockGranularity",
    "PerChannelGranularity",
    "PerTensorGranularity",
    "QParamsCalculatorBase",
    "QuantizationComponentFactory",
    "QuantizationFormulation",
    "QuantizationGranularity",
    "QuantizationScheme",
    "QuantizationSpec",
    "RangeCalculatorBase",
    "RunningRangeMixin",
    "StatefulQParamsCalculatorBase",
    "StatelessQParamsCalculatorBase",
    "StaticQParamsCalculator",
    "default_activation_quantization_spec",
    "default_weight_quantization_spec",
    "fp4_forward",
    "resolve_block_sizes",
]

_PACKAGE = __name__

_LAZY_SUBMODULES = ("factory", "fake_quantize", "qparams_calculator", "range_calculator")
"""Submodules holding ``nn.Module`` implementations (imported on first use)."""

_LAZY_NAMES: dict[str, str] = {
    "QuantizationComponentFactory": "factory",
    "FakeQuantizeImplBase": "fake_quantize",
    "fp4_forward": "fake_quantize",
    "DynamicQParamsCalculator": "qparams_calculator",
    "GlobalMinMaxQParamsCalculator": "qparams_calculator",
    "MovingAverageQParamsCalculator": "qparams_calculator",
    "QParamsCalculatorBase": "qparams_calculator",
    "RunningRangeMixin": "qparams_calculator",
    "StatefulQParamsCalculatorBase": "qparams_calculator",
    "StatelessQParamsCalculatorBase": "qparams_calculator",
    "StaticQParamsCalculator": "qparams_calculator",
    "MinMaxRangeCalculator": "range_calculator",
    "RangeCalculatorBase": "range_calculator",
}
"""Public name → the submodule that defines it (imported on first access)."""

_DATA_MODULES = (errors, granularity, qformulation, qscheme, spec)


def __getattr__(name: str) -> Any:
    """Import an implementation submodule, or the one defining *name*, on first access."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{_PACKAGE}.{name}")
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {_PACKAGE!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{_PACKAGE}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Module attributes plus the lazily imported names and submodules."""
    return sorted({*globals(), *_LAZY_NAMES, *_LAZY_SUBMODULES})
