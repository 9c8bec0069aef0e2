"""YAML reading and writing for configs: safe loader only, YAML-safe output."""

from __future__ import annotations

import enum
import io
import os
from pathlib import Path
from typing import IO, Any

import torch
import yaml

YamlSource = str | os.PathLike | IO[str] | IO[bytes]


def read_yaml_source(source: object) -> tuple[str, str]:
    """Return ``(text, description)`` for a path, a YAML string or an open stream.

    A ``str`` naming an existing file is read as a file; any other ``str`` is YAML
    text. ``os.PathLike`` values are always paths. Streams are read to the end.
    """
    if isinstance(source, os.PathLike):
        path = Path(source)
        return path.read_text(encoding="utf-8"), str(path)
    if isinstance(source, str):
        if "\n" not in source and len(source) < 4096:
            try:
                is_file = os.path.isfile(source)
            except (ValueError, OSError):
                is_file = False
            if is_file:
                return Path(source).read_text(encoding="utf-8"), source
        return source, "<string>"
    read = getattr(source, "read", None)
    if callable(read):
        data = read()
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"YAML stream is not valid UTF-8: {exc}") from None
        if not isinstance(data, str):
            raise TypeError(f"stream.read() returned {type(data).__name__}, expected str/bytes")
        return data, getattr(source, "name", "<stream>")
    raise TypeError(
        f"expected a file path (str or os.PathLike), YAML text (str) or a readable stream, "
        f"got {type(source).__name__}"
    )


def safe_load(text: str, description: str) -> Any:
    """Parse YAML with :func:`yaml.safe_load`; every YAML error becomes ``ValueError``.

    ``!!python/...`` tags are refused by the safe loader (nothing is constructed or run).
    The message names the source and, when known, the line and column.
    """
    try:
        return yaml.safe_load(io.StringIO(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ValueError(f"Could not parse YAML from {description}{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"Could not parse YAML from {description}: {exc}") from None
    except RecursionError:
        raise ValueError(f"Could not parse YAML from {description}: nesting too deep") from None


def to_yaml_safe(obj: Any, path: str = "") -> Any:
    """Convert a python-mode ``model_dump`` into plain YAML-safe data.

    ``torch.dtype`` → its name (``"int8"``), enum members → their values, registered
    classes → their registry key (``__registry_key__``), tuples → lists.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj.value if isinstance(obj, enum.Enum) else obj
    if isinstance(obj, enum.Enum):
        return to_yaml_safe(obj.value, path)
    if isinstance(obj, torch.dtype):
        return str(obj).removeprefix("torch.")
    if isinstance(obj, type):
        key = obj.__dict__.get("__registry_key__")
        if isinstance(key, str):
            return key
        raise TypeError(
            f"cannot write class {obj.__qualname__} at {path or '<root>'} to YAML: it is not "
            f"registered under a key (use the register('key') decorator of its base class)"
        )
    if isinstance(obj, dict):
        return {to_yaml_safe(k, path): to_yaml_safe(v, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_yaml_safe(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(
        f"cannot write value {obj!r} of type {type(obj).__name__} at {path or '<root>'} to YAML"
    )


def safe_dump(data: Any) -> str:
    """Serialise YAML-safe *data* with block style and insertion order kept."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
