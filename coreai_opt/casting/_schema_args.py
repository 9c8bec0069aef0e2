"""Reading and rewriting a node's non-tensor arguments through its op schema."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.fx import Node


def _is_number_type(arg_type: Any) -> bool:
    """Whether a schema argument type holds a value (``Scalar`` / ``float``), not a size."""
    if isinstance(arg_type, torch.OptionalType):
        arg_type = arg_type.getElementType()
    return isinstance(arg_type, (torch.NumberType, torch.FloatType))


def value_scalars(node: Node) -> Iterator[tuple[str, float | int]]:
    """``(argument name, value)`` of every plain Python number passed as a tensor value.

    Only ``Scalar`` / ``float`` schema arguments count (a fill value, a clamp bound, an
    ``alpha``); ``int`` arguments are sizes and dims, never tensor values.
    """
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return
    for index, argument in enumerate(schema.arguments):
        if not _is_number_type(argument.type):
            continue
        if index < len(node.args) and not argument.kwarg_only:
            value = node.args[index]
        elif argument.name in node.kwargs:
            value = node.kwargs[argument.name]
        else:
            continue
        # bool is an int subclass but never overflows; symbolic numbers are unknown.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield argument.name, value


def overflows_float16(value: float) -> bool:
    """Whether a finite number becomes infinite in float16 (``|x| >= 65520``)."""
    return math.isfinite(value) and math.isinf(float(torch.tensor(value).to(torch.float16)))


def fits_int16(value: int | float) -> bool:
    """Whether a number lies inside the int16 range."""
    info = torch.iinfo(torch.int16)
    return info.min <= value <= info.max


def rewrite_dtypes(value: Any, mapping: dict[torch.dtype, torch.dtype]) -> Any:
    """``value`` with every ``torch.dtype`` in it replaced through ``mapping``.

    Dtype arguments (``dtype=torch.float32`` of ``full`` / ``_to_copy``, the positional dtype
    of ``to.dtype``) are the only ``torch.dtype`` objects in a node's arguments.
    """
    if isinstance(value, torch.dtype):
        return mapping.get(value, value)
    if isinstance(value, (list, tuple)):
        return type(value)(rewrite_dtypes(v, mapping) for v in value)
    if isinstance(value, dict):
        return {k: rewrite_dtypes(v, mapping) for k, v in value.items()}
    return value


def dtype_argument_unset(node: Node) -> bool:
    """Whether the node's op takes a ``dtype`` argument and the node leaves it at None."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return False
    for index, argument in enumerate(schema.arguments):
        if argument.name != "dtype":
            continue
        if index < len(node.args) and not argument.kwarg_only:
            return node.args[index] is None
        return node.kwargs.get("dtype") is None
    return False


def set_dtype_argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], node: Node, dtype: torch.dtype
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` with the op's ``dtype`` argument set to ``dtype``."""
    schema = node.target._schema  # type: ignore[union-attr]
    for index, argument in enumerate(schema.arguments):
        if argument.name != "dtype":
            continue
        if index < len(args) and not argument.kwarg_only:
            new_args = list(args)
            new_args[index] = dtype
            return tuple(new_args), kwargs
        return args, {**kwargs, "dtype": dtype}
    return args, kwargs
