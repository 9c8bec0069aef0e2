"""Normalisation of the keys that config dicts accept.

Nothing here imports or evaluates a string taken from a config: module-type names are
handled as text, regexes are only compiled.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import torch

ALL_TENSORS = "*"
"""Key meaning "every tensor of this group" in a spec dict."""


def type_fqn(cls: type) -> str:
    """Fully-qualified name of a class: ``f"{cls.__module__}.{cls.__qualname__}"``."""
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.lru_cache(maxsize=1)
def _torch_nn_short_names() -> dict[str, str]:
    """Public ``torch.nn.X`` spellings mapped to the class's defining path.

    Built by looking at the classes ``torch.nn`` already exports (no config text is
    imported): ``"torch.nn.Linear"`` → ``"torch.nn.modules.linear.Linear"``.
    """
    table: dict[str, str] = {}
    for name in dir(torch.nn):
        obj = getattr(torch.nn, name, None)
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
            table[f"torch.nn.{name}"] = type_fqn(obj)
    return table


def normalize_module_type_key(key: object) -> str:
    """Return the fully-qualified class name a ``module_type_configs`` key stands for.

    * an ``nn.Module`` subclass → its defining path (``module.qualname``);
    * a dotted string → kept as text, except the public ``torch.nn.X`` spellings
      (``"torch.nn.Linear"``), which are rewritten to the defining path
      (``"torch.nn.modules.linear.Linear"``) so that they match;
    * a string without a dot → ``ValueError`` that shows the expected full form;
    * anything else → ``TypeError``.
    """
    if isinstance(key, type):
        if not issubclass(key, torch.nn.Module):
            raise TypeError(
                f"module_type_configs key {key!r} is a class but not a torch.nn.Module "
                f"subclass; allowed keys are nn.Module subclasses or their fully-qualified "
                f"names (e.g. 'torch.nn.modules.linear.Linear')"
            )
        return type_fqn(key)
    if not isinstance(key, str):
        raise TypeError(
            f"module_type_configs key {key!r} has type {type(key).__name__}; allowed keys "
            f"are nn.Module subclasses or fully-qualified class names (str)"
        )
    text = key.strip()
    if "." not in text or text.startswith(".") or text.endswith("."):
        hint = _torch_nn_short_names().get(f"torch.nn.{text}")
        example = hint if hint is not None else f"<package>.<module>.{text or 'ClassName'}"
        raise ValueError(
            f"module_type_configs key {key!r} is not a fully-qualified class name: expected "
            f"the class's module path plus its name, e.g. {example!r} (for a class C, "
            f'f"{{C.__module__}}.{{C.__qualname__}}"), or pass the class itself'
        )
    return _torch_nn_short_names().get(text, text)


def compile_regex_key(key: object, field: str) -> re.Pattern[str]:
    """Compile a name-regex key of *field*; a bad pattern becomes ``ValueError``."""
    if not isinstance(key, str):
        raise TypeError(
            f"{field} key {key!r} has type {type(key).__name__}; allowed keys are regular "
            f"expressions (str) matched against the whole name"
        )
    return _compile(key, field)


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str, field: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(
            f"{field} key {pattern!r} is not a valid regular expression ({exc}); keys must "
            f"be Python regexes matched with re.fullmatch"
        ) from None


def normalize_spec_dict_keys(value: Mapping[Any, Any], field: str, *, state: bool) -> dict:
    """Validate and normalise the keys of a spec dict (values are left alone).

    Activation dicts (*state* False) accept non-negative ``int`` indices, ``"*"`` and
    tensor names; digit strings (``"0"``) become ints, and a dict may not mix indices
    with names. State dicts accept ``"*"`` and state names (``"weight"``).
    """
    out: dict[int | str, Any] = {}
    for raw_key, spec in value.items():
        key: int | str
        if isinstance(raw_key, bool) or not isinstance(raw_key, (int, str)):
            allowed = "'*' or a state name (str)" if state else "'*', an int index or a name"
            raise ValueError(
                f"{field} key {raw_key!r} has type {type(raw_key).__name__}; allowed keys "
                f"are {allowed}"
            )
        if isinstance(raw_key, int):
            if state:
                raise ValueError(
                    f"{field} key {raw_key!r} is an index; state tensors are keyed by name "
                    f"('weight', 'bias', ...) or '*'"
                )
            if raw_key < 0:
                raise ValueError(
                    f"{field} key {raw_key!r} is negative; allowed keys are '*' and indices >= 0"
                )
            key = raw_key
        elif not state and raw_key.isascii() and raw_key.isdigit():
            key = int(raw_key)
        else:
            if raw_key == "":
                raise ValueError(f"{field} key '' is empty; allowed keys are '*', names or ints")
            key = raw_key
        if key in out:
            raise ValueError(
                f"{field} has two keys for tensor {key!r} (an int and its digit string); "
                f"keep one of them"
            )
        out[key] = spec
    if not state:
        kinds = {type(k) for k in out if k != ALL_TENSORS}
        if len(kinds) > 1:
            raise ValueError(
                f"{field} mixes index keys and name keys ({sorted(map(str, out))}); use "
                f"either int indices or names (plus '*'), not both"
            )
    return out
