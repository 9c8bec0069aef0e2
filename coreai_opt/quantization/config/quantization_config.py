"""Quantization configs: op, module and whole-model levels, plus ``ExecutionMode``."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pydantic
from pydantic import ValidationInfo, field_validator, model_validator
from typing_extensions import Self

from coreai_opt._deprecated_enum import StrEnumBase
from coreai_opt.config import CompressionConfig, ModuleCompressionConfig, OpCompressionConfig
from coreai_opt.config import compression_config as compression_config_module
from coreai_opt.config._keys import ALL_TENSORS
from coreai_opt.quantization.config._schedule import QATSchedule
from coreai_opt.quantization.spec import (
    QuantizationSpec,
    default_activation_quantization_spec,
    default_weight_quantization_spec,
)

if TYPE_CHECKING:
    from coreai_opt.quantization.config._presets import (
        _ModuleQuantizerConfigPresets,
        _QuantizerConfigPresets,
    )

    # Resolved by ``QuantizerConfig.model_rebuild`` in the package ``__init__`` (the
    # KV-cache module imports ``OpQuantizerConfig`` from here).
    from coreai_opt.quantization.config.kv_cache import KVCacheQuantConfig

__all__ = [
    "ExecutionMode",
    "InvalidExecutionModeError",
    "ModuleQuantizerConfig",
    "OpQuantizerConfig",
    "QATSchedule",
    "QuantizerConfig",
]


class InvalidExecutionModeError(ValueError):
    """An ``execution_mode`` that is none of the ``ExecutionMode`` values."""


def parse_execution_mode(value: object) -> ExecutionMode:
    """*value* as an ``ExecutionMode``; ``InvalidExecutionModeError`` names the allowed values."""
    try:
        return ExecutionMode(value)
    except ValueError:
        raise InvalidExecutionModeError(
            f"execution_mode={value!r} is not an execution mode; allowed: "
            f"{[m.value for m in ExecutionMode]}"
        ) from None


_QUANTIZATION_CONFIG = "quantization_config"
"""Top-level YAML/dict key holding the ``QuantizerConfig`` fields."""
_QUANTIZATION_SPEC = "quantization_spec"
"""Top-level YAML/dict key that only hosts anchors (never read)."""


def _refuse_kv_cache_in_eager(kv_configs: Any, mode: Any) -> None:
    """``ValueError`` when KV-cache configs are set with a non-graph execution mode."""
    if kv_configs and mode is not None and mode is not ExecutionMode.GRAPH:
        raise ValueError(
            f"kv_cache_quant_configs (op types {sorted(kv_configs)}) need "
            f"execution_mode={ExecutionMode.GRAPH.value!r}, got "
            f"execution_mode={ExecutionMode(mode).value!r}; KV-cache quantization is "
            f"available in graph mode only"
        )


_CONFIG_DIRS = tuple(
    str(Path(p).resolve().parent) + os.sep
    for p in (__file__, compression_config_module.__file__, pydantic.__file__)
)
"""Frames in these folders are skipped when a config warning looks for the caller."""


def _caller_stacklevel() -> int:
    """``stacklevel`` for a config warning: the first frame outside the config code."""
    level = 1
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_CONFIG_DIRS):
        frame = frame.f_back
        level += 1
    return level


class ExecutionMode(StrEnumBase):
    """How the quantizer finds and instruments ops.

    Members:
        GRAPH: capture the model with ``torch.export`` and insert fake-quantizers into
            the FX graph (default; needs an exportable model).
        EAGER: keep the ``nn.Module`` and intercept ops while it runs (dynamic control
            flow works).

    ``ExecutionMode.PT2E`` / ``"pt2e"`` is a deprecated alias of ``GRAPH`` (it warns).
    Value lookup is case-insensitive.
    """

    GRAPH = "graph"
    EAGER = "eager"

    __deprecated_aliases__: ClassVar[dict[str, str]] = {"PT2E": "GRAPH"}

    if TYPE_CHECKING:
        PT2E: ExecutionMode


class OpQuantizerConfig(OpCompressionConfig[QuantizationSpec]):
    """Quantization specs for the inputs, outputs and state tensors of an op.

    Defaults when a field is omitted: ``op_input_spec`` and ``op_output_spec`` are
    ``{"*": default_activation_quantization_spec()}``, ``op_state_spec`` is
    ``{"weight": default_weight_quantization_spec()}``; passing ``None`` disables the
    group (``{}``). Input/output keys: ``"*"``, ints (digit strings are converted) or
    names; the quantizers only accept ``"*"`` and ints (named keys raise there, as in
    the reference) and graph mode only ``"*"``/``0`` for outputs.
    """

    @classmethod
    def get_default_input_spec(cls) -> dict[int | str, Any]:
        """``{"*": default_activation_quantization_spec()}``."""
        return {ALL_TENSORS: default_activation_quantization_spec()}

    @classmethod
    def get_default_output_spec(cls) -> dict[int | str, Any]:
        """``{"*": default_activation_quantization_spec()}``."""
        return {ALL_TENSORS: default_activation_quantization_spec()}

    @classmethod
    def get_default_state_spec(cls) -> dict[str, Any]:
        """``{"weight": default_weight_quantization_spec()}``."""
        return {"weight": default_weight_quantization_spec()}


class ModuleQuantizerConfig(ModuleCompressionConfig[OpQuantizerConfig, QuantizationSpec]):
    """Quantization settings for the ops of a module scope.

    Fields: ``op_input_spec`` / ``op_output_spec`` / ``op_state_spec`` (defaults as in
    :class:`OpQuantizerConfig`), ``op_type_config`` / ``op_name_config`` (op type →
    config; op-name regex → config; ``None`` disables those ops), ``module_input_spec``
    / ``module_output_spec`` / ``module_state_spec`` (tensors crossing this module's
    boundary; default ``{}``) and ``qat_schedule`` (None: observers and fake-quant on
    from the start of training).

    Op precedence: op_name_config (last fully-matching regex) > op_type_config > the
    op_* defaults. This class is final (subclassing raises ``TypeError``).
    ``ModuleQuantizerConfig.presets`` holds ready-made configs (see
    :mod:`coreai_opt.quantization.config._presets`).
    """

    _op_config_cls: ClassVar[type[OpCompressionConfig]] = OpQuantizerConfig
    presets: ClassVar[_ModuleQuantizerConfigPresets]

    qat_schedule: QATSchedule | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse subclasses: presets and resolution assume this exact class."""
        super().__init_subclass__(**kwargs)
        raise TypeError(f"{cls.__name__}: ModuleQuantizerConfig is final and cannot be subclassed")

    @classmethod
    def get_default_input_spec(cls) -> dict[int | str, Any]:
        """``{"*": default_activation_quantization_spec()}``."""
        return OpQuantizerConfig.get_default_input_spec()

    @classmethod
    def get_default_output_spec(cls) -> dict[int | str, Any]:
        """``{"*": default_activation_quantization_spec()}``."""
        return OpQuantizerConfig.get_default_output_spec()

    @classmethod
    def get_default_state_spec(cls) -> dict[str, Any]:
        """``{"weight": default_weight_quantization_spec()}``."""
        return OpQuantizerConfig.get_default_state_spec()


class QuantizerConfig(CompressionConfig[ModuleQuantizerConfig]):
    """Whole-model quantization config.

    Fields: ``global_config`` (omitted: ``ModuleQuantizerConfig()``, i.e. W8A8;
    ``None``: nothing quantized unless an override enables it),
    ``module_type_configs`` (class or fully-qualified name → config or None),
    ``module_name_configs`` (module-path regex → config or None),
    ``preserved_attributes`` (model attributes copied onto prepared/finalized models),
    ``execution_mode`` (``GRAPH`` by default) and ``kv_cache_quant_configs`` (op type →
    :class:`~coreai_opt.quantization.config.KVCacheQuantConfig`; graph mode only: one
    input of every op of that type gets the entry's spec, overriding all other configs;
    an op type also listed in a module config's ``op_type_config`` gives a
    ``UserWarning``).

    Module precedence: name > type > global; see :mod:`coreai_opt.quantization.config`
    for the resolution functions. Build from YAML/dicts with :meth:`from_yaml` /
    :meth:`from_dict` (top-level keys ``quantization_config`` and the anchor-only
    ``quantization_spec``) and write back with :meth:`to_dict` / :meth:`to_yaml`.
    This class is final. ``QuantizerConfig.presets`` holds ready-made configs.
    """

    _CONFIG_KEY: ClassVar[str] = _QUANTIZATION_CONFIG
    _SPEC_KEY: ClassVar[str] = _QUANTIZATION_SPEC
    _module_config_cls: ClassVar[type[ModuleCompressionConfig]] = ModuleQuantizerConfig
    presets: ClassVar[_QuantizerConfigPresets]

    preserved_attributes: list[str] | None = None
    execution_mode: ExecutionMode = ExecutionMode.GRAPH
    kv_cache_quant_configs: dict[str, KVCacheQuantConfig] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse subclasses: presets and resolution assume this exact class."""
        super().__init_subclass__(**kwargs)
        raise TypeError(f"{cls.__name__}: QuantizerConfig is final and cannot be subclassed")

    @field_validator("execution_mode", mode="before")
    @classmethod
    def _parse_execution_mode(cls, value: Any) -> ExecutionMode:
        if isinstance(value, ExecutionMode):
            return value
        if not isinstance(value, str):
            raise ValueError(
                f"execution_mode must be one of {ExecutionMode.allowed_values()}, got "
                f"{type(value).__name__}: {value!r}"[:300]
            )
        try:
            return ExecutionMode(value)
        except ValueError:
            raise ValueError(
                f"execution_mode {value!r} is not valid; allowed values: "
                f"{ExecutionMode.allowed_values()}"
            ) from None

    @field_validator("kv_cache_quant_configs", mode="before")
    @classmethod
    def _check_kv_cache_keys(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(
                f"kv_cache_quant_configs must be a dict of op type -> KVCacheQuantConfig "
                f"(or None), got {type(value).__name__}: {value!r}"[:300]
            )
        for key in value:
            if not isinstance(key, str) or not key.strip():
                raise ValueError(
                    f"kv_cache_quant_configs key {key!r} is not allowed; keys are non-empty "
                    f"op type names such as 'index_copy_' or 'scaled_dot_product_attention'"
                )
        return dict(value)

    @field_validator("kv_cache_quant_configs", mode="after")
    @classmethod
    def _kv_cache_needs_graph_mode(cls, value: Any, info: ValidationInfo) -> Any:
        # A field validator (not a model validator) so that a refused assignment leaves
        # the config unchanged; execution_mode is declared first, so it is in info.data.
        _refuse_kv_cache_in_eager(value, info.data.get("execution_mode"))
        return value

    @field_validator("execution_mode", mode="after")
    @classmethod
    def _eager_refuses_kv_cache(cls, value: Any, info: ValidationInfo) -> Any:
        # Only sees kv_cache_quant_configs on assignment (set_execution_mode); at
        # construction the kv_cache_quant_configs validator makes the same check.
        _refuse_kv_cache_in_eager(info.data.get("kv_cache_quant_configs"), value)
        return value

    @model_validator(mode="after")
    def _warn_kv_cache_op_type_overlap(self) -> Self:
        kv_configs = self.kv_cache_quant_configs
        if not kv_configs:
            return self
        scopes = [("global_config", self.global_config)]
        scopes += [(f"module_type_configs[{k!r}]", c) for k, c in self.module_type_configs.items()]
        scopes += [(f"module_name_configs[{k!r}]", c) for k, c in self.module_name_configs.items()]
        for where, module_config in scopes:
            clash = sorted(set(kv_configs) & set(module_config.op_type_config))
            if clash:
                warnings.warn(
                    f"op types {clash} appear in both kv_cache_quant_configs and "
                    f"{where}.op_type_config; the KV-cache spec overrides the op_type_config "
                    f"entry for its input, the rest of op_type_config still applies",
                    UserWarning,
                    stacklevel=_caller_stacklevel(),
                )
        return self

    def set_execution_mode(self, mode: ExecutionMode | str) -> Self:
        """Set ``execution_mode`` (member or its value, e.g. ``"eager"``); returns ``self``."""
        self.execution_mode = mode  # type: ignore[assignment]
        return self
