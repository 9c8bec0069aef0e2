"""Quantization (PTQ and QAT) of PyTorch models.

Public: ``ExecutionMode``, ``ModuleQuantizerConfig``, ``QuantizationSpec``,
``Quantizer``, ``QuantizerConfig``. The submodules ``fake_quantize``,
``qparams_calculator`` and ``range_calculator`` of :mod:`coreai_opt.quantization.spec`
are bound here as attributes.
"""

from coreai_opt.quantization import config, spec
from coreai_opt.quantization.config import (
    ExecutionMode,
    ModuleQuantizerConfig,
    QuantizerConfig,
)
from coreai_opt.quantization.quantizer import Quantizer
from coreai_opt.quantization.spec import (
    QuantizationSpec,
    fake_quantize,
    qparams_calculator,
    range_calculator,
)

__all__ = [
    "ExecutionMode",
    "ModuleQuantizerConfig",
    "QuantizationSpec",
    "Quantizer",
    "QuantizerConfig",
]

_SUBMODULES = (config, spec, fake_quantize, qparams_calculator, range_calculator)
