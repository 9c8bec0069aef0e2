"""Quantization spec layer: ``QuantizationSpec``, granularities, calculators, fake-quantizers.

The working modules (calculators, :class:`~.fake_quantize.FakeQuantize`, the component
factory) live here too and are shared by both execution modes.
"""

from coreai_opt.quantization.spec import (
    factory,
    fake_quantize,
    qformulation,
    qparams_calculator,
    range_calculator,
)
from coreai_opt.quantization.spec.factory import QuantizationComponentFactory
from coreai_opt.quantization.spec.granularity import (
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QuantizationGranularity,
)
from coreai_opt.quantization.spec.qformulation import QuantizationFormulation
from coreai_opt.quantization.spec.qparams_calculator import (
    GlobalMinMaxQParamsCalculator,
    MovingAverageQParamsCalculator,
    QParamsCalculatorBase,
    RunningRangeMixin,
    StaticQParamsCalculator,
)
from coreai_opt.quantization.spec.qscheme import QuantizationScheme
from coreai_opt.quantization.spec.range_calculator import (
    MinMaxRangeCalculator,
    RangeCalculatorBase,
)
from coreai_opt.quantization.spec.spec import (
    QuantizationSpec,
    default_activation_quantization_spec,
    default_weight_quantization_spec,
)

__all__ = [
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
    "StaticQParamsCalculator",
    "default_activation_quantization_spec",
    "default_weight_quantization_spec",
]

_SUBMODULES = (factory, fake_quantize, qformulation, qparams_calculator, range_calculator)
