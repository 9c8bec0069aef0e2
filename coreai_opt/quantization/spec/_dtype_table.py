"""The one Python table of quantization formats and their code ranges.

``quant_range(dtype, narrow)`` must agree with the C++ table behind
``torch.ops.coreai_opt.format_range``. Integers: signed n-bit ``[-2^(n-1), 2^(n-1)-1]``
(``narrow`` → ``[-(2^(n-1)-1), 2^(n-1)-1]``), unsigned ``[0, 2^n-1]`` (``narrow`` has no
effect). Floats: ``[-max, max]`` (``narrow`` has no effect).

:data:`FORMATS` lists the formats the C++ kernels implement. :func:`format_info` also
describes other integer dtypes by their name (``int1``, ``uint3``, ``int16``, ...), so
that a widened ``QuantizationSpec.SUPPORTED_DTYPES`` still gets bit widths and ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

__all__ = ["FORMATS", "FormatInfo", "format_info", "is_kernel_format", "quant_range"]

_INT_NAME = re.compile(r"(u?)int([0-9]+)")


@dataclass(frozen=True)
class FormatInfo:
    """One quantized format: integer (``signed``, ``n_bits``) or float (``max_abs``)."""

    name: str
    n_bits: int
    is_float: bool
    signed: bool
    max_abs: float
    storage: str
    """Name of the torch dtype that holds one unpacked code (``target_dtype``)."""


FORMATS: dict[str, FormatInfo] = {
    "int8": FormatInfo("int8", 8, False, True, 0.0, "int8"),
    "int4": FormatInfo("int4", 4, False, True, 0.0, "int8"),
    "int2": FormatInfo("int2", 2, False, True, 0.0, "int8"),
    "uint8": FormatInfo("uint8", 8, False, False, 0.0, "uint8"),
    "uint4": FormatInfo("uint4", 4, False, False, 0.0, "uint8"),
    "uint2": FormatInfo("uint2", 2, False, False, 0.0, "uint8"),
    "float8_e4m3fn": FormatInfo("float8_e4m3fn", 8, True, True, 448.0, "float8_e4m3fn"),
    "float8_e5m2": FormatInfo("float8_e5m2", 8, True, True, 57344.0, "float8_e5m2"),
    "float4_e2m1fn_x2": FormatInfo("float4_e2m1fn_x2", 4, True, True, 6.0, "float8_e4m3fn"),
}


def _name(dtype: torch.dtype | str) -> str:
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    if isinstance(dtype, str):
        return dtype.removeprefix("torch.")
    raise TypeError(f"dtype must be a torch.dtype or its name, got {type(dtype).__name__}")


def format_info(dtype: torch.dtype | str) -> FormatInfo:
    """Table entry for *dtype* (``ValueError`` listing the known formats otherwise).

    Integer dtypes outside :data:`FORMATS` (``int1``, ``uint3``, ``int16``, ...) are
    described from their name: n bits, signed unless ``u``-prefixed, stored in
    int8 / uint8 up to 8 bits and in themselves beyond.
    """
    name = _name(dtype)
    if name in FORMATS:
        return FORMATS[name]
    match = _INT_NAME.fullmatch(name)
    if match is not None and 0 < int(match.group(2)) <= 64:
        unsigned, bits = match.group(1) == "u", int(match.group(2))
        storage = name if bits > 8 else ("uint8" if unsigned else "int8")
        return FormatInfo(name, bits, False, not unsigned, 0.0, storage)
    raise ValueError(
        f"dtype {name!r} is not a quantization format; known formats: {list(FORMATS)} and "
        f"other int<n> / uint<n> dtypes"
    )


def is_kernel_format(dtype: torch.dtype | str) -> bool:
    """True when the C++ kernels implement *dtype* (an entry of :data:`FORMATS`)."""
    try:
        return _name(dtype) in FORMATS
    except TypeError:
        return False


def quant_range(dtype: torch.dtype | str, narrow: bool) -> tuple[float, float]:
    """``(quant_min, quant_max)`` of *dtype*; *narrow* drops a signed int's lowest code."""
    info = format_info(dtype)
    if info.is_float:
        return (-info.max_abs, info.max_abs)
    if info.signed:
        qmax = 2 ** (info.n_bits - 1) - 1
        return (float(-qmax if narrow else -qmax - 1), float(qmax))
    return (0.0, float(2**info.n_bits - 1))
