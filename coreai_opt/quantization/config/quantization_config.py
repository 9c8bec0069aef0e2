"""Quantization configs: op, module and whole-model levels, plus ``ExecutionMode``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import field_validator
from typing_extensions import Self

from coreai_opt._deprecated_enum import StrEnumBase
from coreai_opt.config import CompressionConfig, ModuleCompressionConfig, OpCompressionConfig
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

__all__ = [
    "ExecutionMode",
    "ModuleQuantizerConfig",
    "OpQuantizerConfig",
    "QATSchedule",
    "QuantizerConfig",
]

_QUANTIZATION_CONFIG = "quantization_config"
"""Top-level YAML/dict key holding the ``QuantizerConfig`` fields."""
_QUANTIZATION_SPEC = "quantization_spec"
"""Top-level YAML/dict key that only hosts anchors (never read)."""


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
    ``preserved_attributes`` (model attributes copied onto prepared/finalized models)
    and ``execution_mode`` (``GRAPH`` by default).

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

    def set_execution_mode(self, mode: ExecutionMode | str) -> Self:
        """Set ``execution_mode`` (member or its value, e.g. ``"eager"``); returns ``self``."""
        self.execution_mode = mode  # type: ignore[assignment]
        return self
