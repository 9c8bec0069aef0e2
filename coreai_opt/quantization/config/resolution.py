"""Which config and spec apply to a module, an op and a tensor.

Both execution modes call these functions; nothing here depends on torch.fx or on
the eager machinery.

Module level (:func:`resolve_module_config`): among the module and its ancestors, a
``module_name_configs`` regex that fully matches a path (or an alias path of a shared
module) beats a ``module_type_configs`` entry for the exact fully-qualified class
name, which beats ``global_config``. Within a level the deepest matching module wins,
and for one module the later dict entry wins. A config matched on an ancestor is
inherited without its ``module_*_spec`` boundary specs (those apply only to the
module that matched).

Op level (:func:`resolve_op_config`): ``op_name_config`` (last fully-matching regex)
> ``op_type_config`` (both: :func:`match_op_config`) > the module config's ``op_*_spec``
defaults.

Tensor level (:func:`lookup_spec`): an explicit key beats ``"*"``; a key mapped to
``None`` means "do not quantize". Keys are int positions or ``"*"`` for
inputs/outputs, state names (or ``"*"``) for state. Named input/output keys are
accepted by the configs but the quantizers refuse them (as the reference does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from coreai_opt._deprecated_enum import StrEnumBase
from coreai_opt.config._keys import ALL_TENSORS, compile_regex_key, type_fqn
from coreai_opt.quantization.config.quantization_config import (
    ModuleQuantizerConfig,
    OpQuantizerConfig,
    QuantizerConfig,
)
from coreai_opt.quantization.spec import QuantizationSpec

__all__ = [
    "ConfigLevel",
    "ResolvedModuleConfig",
    "TensorGroup",
    "build_module_config_dict",
    "lookup_spec",
    "lookup_spec_entry",
    "match_op_config",
    "resolve_module_config",
    "resolve_op_config",
    "resolve_spec",
]


class ConfigLevel(StrEnumBase):
    """Config level a module's effective config came from (most specific first)."""

    MODULE_NAME = "module_name"
    MODULE_TYPE = "module_type"
    GLOBAL = "global"


class TensorGroup(StrEnumBase):
    """Which spec dict of an op config a tensor is looked up in."""

    INPUT = "input"
    OUTPUT = "output"
    STATE = "state"


@dataclass(frozen=True)
class ResolvedModuleConfig:
    """Effective config of one module.

    Attributes:
        config: the config that applies (boundary specs removed when inherited).
        level: where it came from.
        key: the matching ``module_name_configs`` regex or type name (None for global).
        owner: path of the module that matched (itself or an ancestor; None for global).
        path: path of the module this result is for.
    """

    config: ModuleQuantizerConfig
    level: ConfigLevel
    key: str | None
    owner: str | None
    path: str = ""

    @property
    def inherited(self) -> bool:
        """True when the config was matched on an ancestor (or is the global one)."""
        return self.level is ConfigLevel.GLOBAL or self.owner != self.path


def _type_name(module_type: type | str | None) -> str | None:
    if module_type is None or isinstance(module_type, str):
        return module_type
    return type_fqn(module_type)


def _direct_matches(
    config: QuantizerConfig, names: Sequence[str], module_type: type | str | None
) -> tuple[tuple[str, ModuleQuantizerConfig] | None, tuple[str, ModuleQuantizerConfig] | None]:
    name_hit = None
    for key, cfg in config.module_name_configs.items():
        pattern = compile_regex_key(key, "module_name_configs")
        if any(pattern.fullmatch(n) for n in names):
            name_hit = (key, cfg)
    type_hit = None
    fqn = _type_name(module_type)
    if fqn is not None and fqn in config.module_type_configs:
        type_hit = (fqn, config.module_type_configs[fqn])
    return name_hit, type_hit


def _ancestor_paths(path: str) -> list[str]:
    if not path:
        return []
    parts = path.split(".")
    return [""] + [".".join(parts[:i]) for i in range(1, len(parts))]


def resolve_module_config(
    config: QuantizerConfig,
    path: str,
    module_type: type | str | None,
    *,
    ancestors: Sequence[tuple[str, type | str | None]] | None = None,
    aliases: Sequence[str] = (),
    ancestor_aliases: Mapping[str, Sequence[str]] | None = None,
) -> ResolvedModuleConfig:
    """Effective config of the module at *path* (``""`` is the root).

    Args:
        config: the whole-model config.
        path: the module's (canonical) path, as in ``named_modules()``.
        module_type: its class or fully-qualified class name.
        ancestors: ``(path, type)`` of every ancestor, root first. When None, the
            ancestor paths are derived from *path* and only name configs can match them.
        aliases: other paths of the same (shared) module; name regexes match any.
        ancestor_aliases: alias paths of ancestors, keyed by their canonical path.
    """
    if ancestors is None:
        ancestors = [(p, None) for p in _ancestor_paths(path)]
    other_names = ancestor_aliases or {}
    chain = [*ancestors, (path, module_type)]
    best_name: tuple[str, ModuleQuantizerConfig, str] | None = None
    best_type: tuple[str, ModuleQuantizerConfig, str] | None = None
    for index, (node_path, node_type) in enumerate(chain):
        is_self = index == len(chain) - 1
        names = [node_path, *(aliases if is_self else other_names.get(node_path, ()))]
        name_hit, type_hit = _direct_matches(config, names, node_type)
        if name_hit is not None:
            best_name = (*name_hit, node_path)
        if type_hit is not None:
            best_type = (*type_hit, node_path)
    for level, best in ((ConfigLevel.MODULE_NAME, best_name), (ConfigLevel.MODULE_TYPE, best_type)):
        if best is not None:
            key, cfg, owner = best
            effective = cfg if owner == path else cfg.without_module_specs()
            return ResolvedModuleConfig(effective, level, key, owner, path)
    return ResolvedModuleConfig(config.global_config, ConfigLevel.GLOBAL, None, None, path)


def build_module_config_dict(
    config: QuantizerConfig, model: torch.nn.Module
) -> dict[str, ResolvedModuleConfig]:
    """Effective config of every module of *model*, keyed by canonical path.

    A module reachable under several paths is keyed by the first one
    ``named_modules()`` yields; name regexes are matched against all its paths.
    """
    by_path: dict[str, torch.nn.Module] = {}
    aliases: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        by_path.setdefault(name, module)
        aliases.setdefault(id(module), []).append(name)
    result: dict[str, ResolvedModuleConfig] = {}
    for path, module in model.named_modules():
        chain = [(p, type(by_path[p])) for p in _ancestor_paths(path)]
        chain_aliases = {p: aliases[id(by_path[p])] for p, _ in chain}
        result[path] = resolve_module_config(
            config,
            path,
            type(module),
            ancestors=chain,
            aliases=aliases[id(module)],
            ancestor_aliases=chain_aliases,
        )
    return result


def match_op_config(
    module_config: ModuleQuantizerConfig, op_name: str | None, op_type: str | None
) -> OpQuantizerConfig | None:
    """The op config *module_config* names for an op of *op_type* named *op_name*, or None.

    The last ``op_name_config`` regex that fully matches *op_name*, else the
    ``op_type_config`` entry for *op_type*; None when neither names the op (the scope's
    ``op_*_spec`` defaults then apply, see :func:`resolve_op_config`). Eager mode asks
    this to know whether a config names an optional op type at all.
    """
    if op_name is not None:
        hit = None
        for key, cfg in module_config.op_name_config.items():
            if compile_regex_key(key, "op_name_config").fullmatch(op_name):
                hit = cfg
        if hit is not None:
            return hit
    if op_type is not None and op_type in module_config.op_type_config:
        return module_config.op_type_config[op_type]
    return None


def resolve_op_config(
    module_config: ModuleQuantizerConfig, op_name: str | None, op_type: str | None
) -> OpQuantizerConfig:
    """Op config for an op of *op_type* named *op_name* inside *module_config*'s scope."""
    named = match_op_config(module_config, op_name, op_type)
    return module_config.op_defaults() if named is None else named


def _check_key(key: Any) -> int | str:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"tensor key must be an int index or a str, got {type(key).__name__}")
    if isinstance(key, str) and key.isascii() and key.isdigit():
        return int(key)
    return key


def lookup_spec_entry(
    specs: Mapping[int | str, QuantizationSpec | None], key: int | str
) -> tuple[bool, QuantizationSpec | None]:
    """``(found, spec)`` for *key*: the explicit entry, else ``"*"``, else not found.

    ``(True, None)`` means the tensor is explicitly left unquantized.
    """
    key = _check_key(key)
    if key in specs:
        return True, specs[key]
    if ALL_TENSORS in specs:
        return True, specs[ALL_TENSORS]
    return False, None


def lookup_spec(
    specs: Mapping[int | str, QuantizationSpec | None], key: int | str
) -> QuantizationSpec | None:
    """Spec for *key* in a spec dict (explicit key > ``"*"``), or None."""
    return lookup_spec_entry(specs, key)[1]


_GROUP_FIELDS = {
    TensorGroup.INPUT: "op_input_spec",
    TensorGroup.OUTPUT: "op_output_spec",
    TensorGroup.STATE: "op_state_spec",
}


def resolve_spec(
    config: QuantizerConfig,
    *,
    module_path: str,
    module_type: type | str | None,
    op_name: str | None,
    op_type: str | None,
    group: TensorGroup | str,
    key: int | str,
    ancestors: Sequence[tuple[str, type | str | None]] | None = None,
) -> QuantizationSpec | None:
    """Spec for one tensor of an op run inside the module at *module_path*, or None.

    Combines :func:`resolve_module_config`, :func:`resolve_op_config` and
    :func:`lookup_spec` (op-level specs only; boundary specs are looked up by the
    modes on the module's resolved config).
    """
    resolved = resolve_module_config(config, module_path, module_type, ancestors=ancestors)
    op_config = resolve_op_config(resolved.config, op_name, op_type)
    specs = getattr(op_config, _GROUP_FIELDS[TensorGroup(group)])
    return lookup_spec(specs, key)
