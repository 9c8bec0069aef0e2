"""Generic config containers shared by the compression techniques.

Three levels, each a pydantic model:

* :class:`OpCompressionConfig` — specs for the inputs, outputs and state tensors of
  one op (by op type or op name);
* :class:`ModuleCompressionConfig` — the op-level defaults of a module scope plus
  per-op-type / per-op-name overrides and module-boundary specs;
* :class:`CompressionConfig` — the whole model: a global module config plus
  overrides by module type and module name, YAML/dict I/O and chaining setters.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from coreai_opt.config._keys import (
    ALL_TENSORS,
    compile_regex_key,
    normalize_module_type_key,
    normalize_spec_dict_keys,
)
from coreai_opt.config._yaml import read_yaml_source, safe_dump, safe_load, to_yaml_safe
from coreai_opt.config.spec import CompressionSpec

__all__ = [
    "CompressionConfig",
    "ModuleCompressionConfig",
    "OpCompressionConfig",
    "WeightOnlyModuleValidationMixin",
    "WeightOnlyOpValidationMixin",
]

SpecT = TypeVar("SpecT", bound=CompressionSpec)
OpConfigT = TypeVar("OpConfigT", bound="OpCompressionConfig")
ModuleConfigT = TypeVar("ModuleConfigT", bound="ModuleCompressionConfig")

_OP_SPEC_FIELDS = ("op_input_spec", "op_output_spec", "op_state_spec")
_MODULE_SPEC_FIELDS = ("module_input_spec", "module_output_spec", "module_state_spec")
_STATE_FIELDS = frozenset({"op_state_spec", "module_state_spec"})


def spec_dict_is_active(specs: Mapping[Any, Any]) -> bool:
    """True when a spec dict compresses something (any value is not None)."""
    return any(spec is not None for spec in specs.values())


def _check_mapping(value: object, field: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{field} must be a dict (or None to disable), got {type(value).__name__}: {value!r}"[
                :300
            ]
        )
    return value


class OpCompressionConfig(BaseModel, Generic[SpecT]):
    """Specs for the input, output and state tensors of an op.

    Each field maps a tensor key to a spec or ``None``:

    * ``op_input_spec`` / ``op_output_spec``: keys are ``"*"`` (every tensor),
      non-negative ``int`` positions (digit strings such as ``"0"`` are converted), or
      tensor names. Named keys are accepted by the config layer but the quantizers
      refuse them (they address tensors by position only), as in the reference.
    * ``op_state_spec``: keys are state names (``"weight"``, ``"bias"``) or ``"*"``.

    An explicit key beats ``"*"``; a key mapped to ``None`` leaves that tensor
    uncompressed. Omitting a field gives the technique's default
    (:meth:`get_default_input_spec` etc.); passing ``None`` stores ``{"*": None}``
    (nothing in that group is compressed). A spec dict is *active* when any of its
    values is not None (:func:`spec_dict_is_active`).
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, arbitrary_types_allowed=True
    )

    op_input_spec: dict[int | str, SpecT | None] = Field(default_factory=dict)
    op_output_spec: dict[int | str, SpecT | None] = Field(default_factory=dict)
    op_state_spec: dict[str, SpecT | None] = Field(default_factory=dict)

    @classmethod
    def get_default_input_spec(cls) -> dict[int | str, Any]:
        """Spec dict used when ``op_input_spec`` is omitted."""
        return {}

    @classmethod
    def get_default_output_spec(cls) -> dict[int | str, Any]:
        """Spec dict used when ``op_output_spec`` is omitted."""
        return {}

    @classmethod
    def get_default_state_spec(cls) -> dict[str, Any]:
        """Spec dict used when ``op_state_spec`` is omitted."""
        return {}

    @model_validator(mode="before")
    @classmethod
    def _fill_omitted_defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            defaults = {
                "op_input_spec": cls.get_default_input_spec,
                "op_output_spec": cls.get_default_output_spec,
                "op_state_spec": cls.get_default_state_spec,
            }
            for name, factory in defaults.items():
                if name not in data:
                    data[name] = factory()
        return data

    @field_validator(*_OP_SPEC_FIELDS, mode="before")
    @classmethod
    def _normalise_op_specs(cls, value: Any, info: Any) -> Any:
        if value is None:
            return {ALL_TENSORS: None}
        field = info.field_name
        return normalize_spec_dict_keys(
            _check_mapping(value, field), field, state=field in _STATE_FIELDS
        )

    def is_disabled(self) -> bool:
        """True when this config compresses nothing (no spec dict is active)."""
        return not any(
            spec_dict_is_active(d)
            for d in (self.op_input_spec, self.op_output_spec, self.op_state_spec)
        )

    @classmethod
    def disabled(cls) -> Self:
        """A config of this class that compresses nothing (what ``None`` stands for)."""
        return cls(op_input_spec=None, op_output_spec=None, op_state_spec=None)


def _dump_optional_configs(value: dict[Any, Any], handler: Any) -> dict[Any, Any]:
    dumped = handler(value)
    for key, cfg in value.items():
        if cfg is not None and cfg.is_disabled():
            dumped[key] = None
    return dumped


class ModuleCompressionConfig(OpCompressionConfig[SpecT], Generic[OpConfigT, SpecT]):
    """Compression settings for every op inside a module scope.

    Op-level precedence inside the scope: ``op_name_config`` (regex
    ``re.fullmatch`` on the op name; the last matching key wins) > ``op_type_config``
    > the ``op_*_spec`` defaults of this config.

    ``module_input_spec`` / ``module_output_spec`` / ``module_state_spec`` address the
    tensors that cross the module boundary (by position or ``"*"``; state by name)
    whatever op consumes or produces them; they override op-level specs and are not
    inherited by submodules. A ``None`` value in ``op_type_config`` /
    ``op_name_config`` disables those ops entirely.
    """

    _op_config_cls: ClassVar[type[OpCompressionConfig]] = OpCompressionConfig

    op_type_config: dict[str, OpConfigT] = Field(default_factory=dict)
    op_name_config: dict[str, OpConfigT] = Field(default_factory=dict)
    module_input_spec: dict[int | str, SpecT | None] = Field(default_factory=dict)
    module_output_spec: dict[int | str, SpecT | None] = Field(default_factory=dict)
    module_state_spec: dict[str, SpecT | None] = Field(default_factory=dict)

    @field_validator(*_MODULE_SPEC_FIELDS, mode="before")
    @classmethod
    def _normalise_module_specs(cls, value: Any, info: Any) -> Any:
        if value is None:
            return {}
        field = info.field_name
        return normalize_spec_dict_keys(
            _check_mapping(value, field), field, state=field in _STATE_FIELDS
        )

    @field_validator("op_type_config", "op_name_config", mode="before")
    @classmethod
    def _normalise_op_configs(cls, value: Any, info: Any) -> Any:
        field = info.field_name
        if value is None:
            return {}
        out: dict[str, Any] = {}
        for key, cfg in _check_mapping(value, field).items():
            if not isinstance(key, str) or not key:
                kind = "op types such as 'linear'" if field == "op_type_config" else "regexes"
                raise ValueError(
                    f"{field} key {key!r} is not allowed; keys are non-empty strings ({kind})"
                )
            if field == "op_name_config":
                compile_regex_key(key, field)
            out[key] = cls._op_config_cls.disabled() if cfg is None else cfg
        return out

    @field_serializer("op_type_config", "op_name_config", mode="wrap")
    def _serialise_op_configs(self, value: dict[str, Any], handler: Any, info: SerializationInfo):
        return _dump_optional_configs(value, handler)

    def has_module_specs(self) -> bool:
        """True when any ``module_*_spec`` dict is non-empty."""
        return bool(self.module_input_spec or self.module_output_spec or self.module_state_spec)

    def is_disabled(self) -> bool:
        """True when this config compresses nothing at all (what ``None`` stands for)."""
        return (
            super().is_disabled()
            and not self.op_type_config
            and not self.op_name_config
            and not self.has_module_specs()
            and all(
                getattr(self, name) is None
                for name in type(self).model_fields
                if name not in _KNOWN_MODULE_FIELDS
            )
        )

    def without_module_specs(self) -> Self:
        """Copy without the module-boundary specs (what descendants inherit)."""
        return self.model_copy(
            update={"module_input_spec": {}, "module_output_spec": {}, "module_state_spec": {}}
        )

    def op_defaults(self) -> OpConfigT:
        """This scope's default op config (the ``op_*_spec`` fields as an op config)."""
        return self._op_config_cls(  # type: ignore[return-value]
            op_input_spec=dict(self.op_input_spec),
            op_output_spec=dict(self.op_output_spec),
            op_state_spec=dict(self.op_state_spec),
        )


_KNOWN_MODULE_FIELDS = frozenset(
    (*_OP_SPEC_FIELDS, *_MODULE_SPEC_FIELDS, "op_type_config", "op_name_config")
)


class WeightOnlyOpValidationMixin(BaseModel):
    """Mixin for op configs of weight-only techniques: no input/output specs.

    The default input and output spec dicts are empty and an active one (a value that
    is not None) is refused; ``None`` / ``{"*": None}`` are accepted.
    """

    @classmethod
    def get_default_input_spec(cls) -> dict[int | str, Any]:
        """Weight-only techniques compress no op inputs."""
        return {}

    @classmethod
    def get_default_output_spec(cls) -> dict[int | str, Any]:
        """Weight-only techniques compress no op outputs."""
        return {}

    @model_validator(mode="after")
    def _check_weight_only(self) -> Self:
        for name in ("op_input_spec", "op_output_spec", "module_input_spec", "module_output_spec"):
            value = getattr(self, name, None)
            if value and spec_dict_is_active(value):
                raise ValueError(
                    f"{type(self).__name__} is weight-only: {name} must be empty or None, "
                    f"got keys {sorted(map(str, value))}; only state specs are allowed"
                )
        return self


class WeightOnlyModuleValidationMixin(WeightOnlyOpValidationMixin):
    """Mixin for module configs of weight-only techniques (same rule as the op mixin)."""


class CompressionConfig(BaseModel, Generic[ModuleConfigT]):
    """Whole-model compression config: global settings plus targeted overrides.

    Module resolution (most specific first): ``module_name_configs`` (regex
    ``re.fullmatch`` on the module path) > ``module_type_configs`` (exact
    fully-qualified class name) > ``global_config``. A matched config also covers the
    module's descendants (without its ``module_*_spec`` boundary specs); within one
    level the deepest match wins, and for one module the later dict entry wins.

    ``None`` as ``global_config`` or as an override value disables compression in that
    scope. ``module_type_configs`` keys may be classes or fully-qualified names; they
    are stored as names (``"torch.nn.modules.linear.Linear"``).
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, arbitrary_types_allowed=True
    )

    _CONFIG_KEY: ClassVar[str] = "compression_config"
    _SPEC_KEY: ClassVar[str] = "compression_spec"
    _module_config_cls: ClassVar[type[ModuleCompressionConfig]] = ModuleCompressionConfig

    global_config: ModuleConfigT = Field(default=None, validate_default=True)  # type: ignore[assignment]
    module_type_configs: dict[str, ModuleConfigT] = Field(default_factory=dict)
    module_name_configs: dict[str, ModuleConfigT] = Field(default_factory=dict)

    # -- validation -------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _default_global(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "global_config" not in data:
            data = dict(data)
            data["global_config"] = cls._module_config_cls()
        return data

    @field_validator("global_config", mode="before")
    @classmethod
    def _none_global_disables(cls, value: Any) -> Any:
        return cls._module_config_cls.disabled() if value is None else value

    @field_validator("module_type_configs", mode="before")
    @classmethod
    def _normalise_type_keys(cls, value: Any) -> Any:
        if value is None:
            return {}
        out: dict[str, Any] = {}
        for key, cfg in _check_mapping(value, "module_type_configs").items():
            fqn = normalize_module_type_key(key)
            out.pop(fqn, None)
            out[fqn] = cls._module_config_cls.disabled() if cfg is None else cfg
        return out

    @field_validator("module_name_configs", mode="before")
    @classmethod
    def _normalise_name_keys(cls, value: Any) -> Any:
        if value is None:
            return {}
        out: dict[str, Any] = {}
        for key, cfg in _check_mapping(value, "module_name_configs").items():
            compile_regex_key(key, "module_name_configs")
            out[key] = cls._module_config_cls.disabled() if cfg is None else cfg
        return out

    @model_validator(mode="after")
    def _check_global_has_no_module_specs(self) -> Self:
        present = [f for f in _MODULE_SPEC_FIELDS if getattr(self.global_config, f)]
        if present:
            raise ValueError(
                f"global_config may not set {', '.join(present)}: module-boundary specs "
                f"need a module scope; put them in module_type_configs or "
                f"module_name_configs (allowed global fields: op_* specs, op_type_config, "
                f"op_name_config)"
            )
        return self

    @field_serializer("global_config", mode="wrap")
    def _serialise_global(self, value: Any, handler: Any, info: SerializationInfo):
        return None if value.is_disabled() else handler(value)

    @field_serializer("module_type_configs", "module_name_configs", mode="wrap")
    def _serialise_overrides(self, value: dict[str, Any], handler: Any, info: SerializationInfo):
        return _dump_optional_configs(value, handler)

    # -- setters (all return self) ----------------------------------------------------

    def is_global_disabled(self) -> bool:
        """True when the global config compresses nothing."""
        return self.global_config.is_disabled()

    def set_global(self, config: ModuleConfigT | None) -> Self:
        """Replace the global module config (``None`` disables it); returns ``self``."""
        self.global_config = config  # type: ignore[assignment]
        return self

    def set_module_type(self, module_type: type | str, config: ModuleConfigT | None) -> Self:
        """Set the config for a module class (class or fully-qualified name); returns ``self``."""
        key = normalize_module_type_key(module_type)
        updated = dict(self.module_type_configs)
        updated.pop(key, None)
        updated[key] = config  # type: ignore[assignment]
        self.module_type_configs = updated
        return self

    def set_module_name(self, module_name: str, config: ModuleConfigT | None) -> Self:
        """Set the config for module paths fully matching the regex *module_name*.

        Re-setting an existing key moves it to the end (later entries win).
        Returns ``self``.
        """
        compile_regex_key(module_name, "module_name_configs")
        updated = dict(self.module_name_configs)
        updated.pop(module_name, None)
        updated[module_name] = config  # type: ignore[assignment]
        self.module_name_configs = updated
        return self

    @staticmethod
    def _targets(targets: tuple[Any, ...]) -> list[type | str]:
        if len(targets) == 1 and isinstance(targets[0], (list, tuple)):
            targets = tuple(targets[0])
        for target in targets:
            is_module_cls = isinstance(target, type) and issubclass(target, torch.nn.Module)
            if not (is_module_cls or isinstance(target, str)):
                raise TypeError(
                    f"target {target!r} has type {type(target).__name__}; allowed targets "
                    f"are nn.Module subclasses (module types) and str (module-name regexes)"
                )
        return list(targets)

    def _set_target(self, target: type | str, config: ModuleConfigT | None) -> None:
        if isinstance(target, type):
            self.set_module_type(target, config)
        else:
            self.set_module_name(target, config)

    def only_for(self, *targets: type | str | Iterable[type | str]) -> Self:
        """Apply the current global config only to *targets*; returns ``self``.

        Classes become ``module_type_configs`` entries, strings ``module_name_configs``
        entries (regexes), each with a copy of the global config, overwriting existing
        overrides; the global config is then disabled. A single list/tuple argument is
        unpacked. Raises ``ValueError`` with no targets or when the global config is
        already disabled, ``TypeError`` for a target that is neither.
        """
        items = self._targets(targets)
        if not items:
            raise ValueError("only_for() needs at least one module type or module-name regex")
        if self.is_global_disabled():
            raise ValueError(
                "only_for() redistributes the global config, but global_config is disabled "
                "(set_global(None) or an earlier only_for()); set a global config first"
            )
        for target in items:
            if isinstance(target, str):
                compile_regex_key(target, "module_name_configs")
            else:
                normalize_module_type_key(target)
        old_global = self.global_config
        self.global_config = None  # type: ignore[assignment]
        for target in items:
            self._set_target(target, copy.deepcopy(old_global))
        return self

    def without(self, *targets: type | str | Iterable[type | str]) -> Self:
        """Disable compression for each target (class or module-name regex); returns ``self``."""
        for target in self._targets(targets):
            self._set_target(target, None)
        return self

    # -- dict / YAML ------------------------------------------------------------------

    @classmethod
    def from_dict(cls, config_dict: Mapping[str, Any]) -> Self:
        """Build a config from ``{_CONFIG_KEY: {...}, _SPEC_KEY: {...}}``.

        Only those two top-level keys are allowed (``RuntimeError`` otherwise, and when
        ``_CONFIG_KEY`` is missing). ``_SPEC_KEY`` only hosts YAML anchors and is not
        read. A ``None`` or non-dict config section raises ``TypeError``.
        """
        if not isinstance(config_dict, Mapping):
            raise TypeError(
                f"from_dict expects a dict with key {cls._CONFIG_KEY!r}, got "
                f"{type(config_dict).__name__}"
            )
        allowed = (cls._CONFIG_KEY, cls._SPEC_KEY)
        for key in config_dict:
            if key not in allowed:
                raise RuntimeError(
                    f"Found unexpected top-level key {key!r} in the config; allowed keys are "
                    f"{list(allowed)}"
                )
        if cls._CONFIG_KEY not in config_dict:
            raise RuntimeError(
                f"Did not find {cls._CONFIG_KEY!r} in the config; top-level keys must be "
                f"{list(allowed)} and {cls._CONFIG_KEY!r} is required"
            )
        body = config_dict[cls._CONFIG_KEY]
        if not isinstance(body, Mapping):
            raise TypeError(
                f"{cls._CONFIG_KEY!r} must be a dict of {cls.__name__} fields, got "
                f"{type(body).__name__}: {body!r}"[:300]
            )
        return cls.model_validate(dict(body))

    @classmethod
    def from_yaml(cls, source: Any) -> Self | None:
        """Build a config from YAML: a file path (str/Path), YAML text or a stream.

        Read with the safe loader only (``!!python/...`` tags are refused, nothing is
        imported or run). YAML syntax errors become ``ValueError`` with the line. An
        empty document returns ``None`` with a ``UserWarning``; a document that is not
        a mapping raises ``ValueError``.
        """
        text, description = read_yaml_source(source)
        data = safe_load(text, description)
        if data is None:
            warnings.warn(
                f"YAML from {description} is empty; no {cls.__name__} was created",
                UserWarning,
                stacklevel=2,
            )
            return None
        if not isinstance(data, dict):
            extra = ""
            if isinstance(source, str) and "\n" not in source and isinstance(data, str):
                extra = " (it is not an existing file either)"
            raise ValueError(
                f"YAML from {description} must be a mapping with key {cls._CONFIG_KEY!r}, "
                f"got {type(data).__name__}: {data!r}"[:300]
                + extra
            )
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """``{_CONFIG_KEY: model_dump()}`` (python objects: dtypes, classes, enums).

        ``from_dict(to_dict())`` gives back an equal config.
        """
        return {self._CONFIG_KEY: self.model_dump()}

    def to_yaml(self, path: str | Any | None = None) -> str:
        """Serialise to YAML text (and write it to *path* when given).

        The text is YAML-safe: dtypes as names (``int8``), registered classes as their
        registry keys, enums as values, derived spec fields omitted. ``from_yaml`` of the
        result gives back an equal config. (An addition: the reference has no to_yaml.)
        """
        data = {self._CONFIG_KEY: to_yaml_safe(self.model_dump(exclude_computed_fields=True))}
        text = safe_dump(data)
        if path is not None:
            if hasattr(path, "write"):
                path.write(text)
            else:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(text)
        return text
