"""Quantization schemes (how the integer grid is placed around zero)."""

from __future__ import annotations

from coreai_opt._deprecated_enum import StrEnumBase

__all__ = ["QuantizationScheme"]


class QuantizationScheme(StrEnumBase):
    """Placement of the quantization grid (a ``str`` enum; lookup is case-insensitive).

    Members:
        SYMMETRIC: grid centred on zero (zero point at the middle of the range).
        ASYMMETRIC: grid spans ``[min, max]`` with a zero point.
        SYMMETRIC_WITH_CLIPPING: symmetric, and signed integer ranges drop their most
            negative code (int8 uses ``[-127, 127]``); unsigned ranges are unchanged.
    """

    SYMMETRIC = "symmetric"
    ASYMMETRIC = "asymmetric"
    SYMMETRIC_WITH_CLIPPING = "symmetric_with_clipping"
