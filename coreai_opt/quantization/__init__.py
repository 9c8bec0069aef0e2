"""Quantization (PTQ and QAT) of PyTorch models.

Public: ``ExecutionMode``, ``InvalidExecutionModeError``, ``KVCacheQuantConfig``,
``ModuleQuantizerConfig``,
``QuantizationSpec``, ``Quantizer``, ``QuantizerConfig``. The submodules
``fake_quantize``, ``qparams_calculator`` and ``range_calculator`` of
:mod:`coreai_opt.quantization.spec` are available here as attributes. The configs and
specs are pure data and import with the package; ``Quantizer`` and the ``nn.Module``
implementations load on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from coreai_opt.quantization import config, spec
from coreai_opt.quantization.config import (
    ExecutionMode,
    InvalidExecutionModeError,
    KVCacheQuantConfig,
    ModuleQuantizerConfig,
    QuantizerConfig,
)
from coreai_opt.quantization.spec import QuantizationSpec

if TYPE_CHECKING:
    from coreai_opt.quantization.quantizer import Quantizer
    from coreai_opt.quantization.spec import fake_quantize as fake_quantize
    from coreai_opt.quantization.spec import qparams_calculator as qparams_calculator
    from coreai_opt.quantization.spec import range_calculator as range_calculator

__all__ = [
    "ExecutionMode",
    "InvalidExecutionModeError",
    "KVCacheQuantConfig",
    "ModuleQuantizerConfig",
    "QuantizationSpec",
    "Quantizer",
    "QuantizerConfig",
]

_LAZY: dict[str, tuple[str, str | None]] = {
    "Quantizer": ("coreai_opt.quantization.quantizer", "Quantizer"),
    "distributed": ("coreai_opt.quantization.distributed", None),
    "fake_quantize": ("coreai_opt.quantization.spec.fake_quantize", None),
    "qparams_calculator": ("coreai_opt.quantization.spec.qparams_calculator", None),
    "range_calculator": ("coreai_opt.quantization.spec.range_calculator", None),
}
"""Name → (module, attribute or None for the module itself), imported on first access."""

_SUBMODULES = (config, spec)


def __getattr__(name: str) -> Any:
    """Import ``Quantizer`` or a spec implementation submodule on first access."""
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(target[0])
    value = module if target[1] is None else getattr(module, target[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Module attributes plus the lazily imported names."""
    return sorted({*globals(), *_LAZY})
