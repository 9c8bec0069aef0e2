"""Quantization spec layer: ``QuantizationSpec``, granularities and component registries.

``__all__`` lists what exists in this package today. The working calculators
(``StaticQParamsCalculator``, ``MovingAverageQParamsCalculator``,
``GlobalMinMaxQParamsCalculator``, ``MinMaxRangeCalculator``, ``RunningRangeMixin``)
and ``QuantizationComponentFactory`` are added to it by the modules that implement
them; until then specs may already name their registry keys (``"static"``,
``"moving_average"``, ``"global_minmax"``, ``"minmax"``, ``"default"``).
"""

from coreai_opt.quantization.spec import fake_quantize, qparams_calculator, range_calculator
from coreai_opt.quantization.spec.granularity import (
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QuantizationGranularity,
)
from coreai_opt.quantization.spec.qformulation import QuantizationFormulation
from coreai_opt.quantization.spec.qparams_calculator import QParamsCalculatorBase
from coreai_opt.quantization.spec.qscheme import QuantizationScheme
from coreai_opt.quantization.spec.range_calculator import RangeCalculatorBase
from coreai_opt.quantization.spec.spec import (
    QuantizationSpec,
    default_activation_quantization_spec,
    default_weight_quantization_spec,
)

__all__ = [
    "PerBlockGranularity",
    "PerChannelGranularity",
    "PerTensorGranularity",
    "QParamsCalculatorBase",
    "QuantizationFormulation",
    "QuantizationGranularity",
    "QuantizationScheme",
    "QuantizationSpec",
    "RangeCalculatorBase",
    "default_activation_quantization_spec",
    "default_weight_quantization_spec",
]

_SUBMODULES = (fake_quantize, qparams_calculator, range_calculator)
