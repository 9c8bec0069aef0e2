"""Errors raised by the spec layer."""

from __future__ import annotations

__all__: list[str] = []


class _BlockSizeMismatchError(ValueError):
    """A granularity's block size does not divide the tensor shape it is applied to.

    Raised by ``get_block_size``; prepare catches it and drops that fake-quantizer.
    """
