"""Quantization configs: what to quantize (modules, ops, tensors) and how.

Public: ``ExecutionMode``, ``InvalidExecutionModeError``, ``KVCacheQuantConfig``,
``ModuleQuantizerConfig``, ``OpQuantizerConfig``, ``QATSchedule``, ``QuantizerConfig``.
The resolution functions used by both execution modes live in
:mod:`coreai_opt.quantization.config.resolution`.
"""

from coreai_opt.quantization.config._presets import (
    _ModuleQuantizerConfigPresets,
    _QuantizerConfigPresets,
)
from coreai_opt.quantization.config._schedule import QATSchedule
from coreai_opt.quantization.config.kv_cache import KVCacheQuantConfig
from coreai_opt.quantization.config.quantization_config import (
    ExecutionMode,
    InvalidExecutionModeError,
    ModuleQuantizerConfig,
    OpQuantizerConfig,
    QuantizerConfig,
)

# QuantizerConfig.kv_cache_quant_configs refers to KVCacheQuantConfig, which is defined
# after it (its module imports OpQuantizerConfig): resolve the annotation now.
QuantizerConfig.model_rebuild(_types_namespace={"KVCacheQuantConfig": KVCacheQuantConfig})

ModuleQuantizerConfig.presets = _ModuleQuantizerConfigPresets(owner_cls=ModuleQuantizerConfig)
QuantizerConfig.presets = _QuantizerConfigPresets(owner_cls=QuantizerConfig)

__all__ = [
    "ExecutionMode",
    "InvalidExecutionModeError",
    "KVCacheQuantConfig",
    "ModuleQuantizerConfig",
    "OpQuantizerConfig",
    "QATSchedule",
    "QuantizerConfig",
]
