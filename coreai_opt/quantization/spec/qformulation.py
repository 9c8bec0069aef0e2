"""Quantization formulations (how the integer offset is expressed)."""

from __future__ import annotations

from coreai_opt._deprecated_enum import StrEnumBase

__all__ = ["QuantizationFormulation"]


class QuantizationFormulation(StrEnumBase):
    """Offset form used by integer quantization.

    Members:
        ZP: ``q = clamp(round(x / s) + zero_point)``, ``x' = (q - zero_point) * s``.
        MINVAL: ``q = clamp(round((x - minval) / s) + qmin)``,
            ``x' = (q - qmin) * s + minval``.

    Floating-point dtypes only support ``ZP``.
    """

    MINVAL = "minval"
    ZP = "zp"
