"""Range calculators: base class, registry and the built-in ``"minmax"`` calculator.

A range calculator turns a tensor into its per-block ``(min, max)``; the block layout
comes from the calculator's granularity (one result per block, same rank as the
input). Register custom range calculators with ``@RangeCalculatorBase.register("key")``;
their constructor receives ``granularity`` and ``quantization_target`` (plus any extra
fields of a ``QuantizationSpec`` subclass that it names).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import torch

from coreai_opt import _ops
from coreai_opt.config.spec.factory import CompressionTargetTensor
from coreai_opt.quantization.spec._registry import (
    RANGE_CALCULATOR_REGISTRY,
    ClassRegistry,
    RegistryMixin,
)
from coreai_opt.quantization.spec.granularity import QuantizationGranularity, block_size_for

__all__ = ["MinMaxRangeCalculator", "RangeCalculatorBase"]


def blockwise_minmax_torch(
    x: torch.Tensor, block_size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block min and max with plain (differentiable) torch ops.

    Same numbers as ``torch.ops.coreai_opt.minmax``; used where the result must carry
    autograd history. A block equal to the dimension reduces it, 1 keeps it, anything
    between splits the dimension into ``(size / block, block)`` and reduces the block.
    """
    sizes = list(x.shape)
    view: list[int] = []
    reduce: list[int] = []
    for size, block in zip(sizes, block_size, strict=True):
        if block == size and size != 1:
            reduce.append(len(view))
            view.append(size)
        elif block == 1:
            view.append(size)
        else:
            view.extend((size // block, block))
            reduce.append(len(view) - 1)
    out_shape = [s // b for s, b in zip(sizes, block_size, strict=True)]
    blocks = x.reshape(view)
    if not reduce:
        return blocks.reshape(out_shape), blocks.reshape(out_shape)
    lo = torch.amin(blocks, dim=reduce, keepdim=False).reshape(out_shape)
    hi = torch.amax(blocks, dim=reduce, keepdim=False).reshape(out_shape)
    return lo, hi


class RangeCalculatorBase(RegistryMixin, torch.nn.Module, abc.ABC):
    """Base of the ``nn.Module`` that computes per-block ``(min, max)`` of a tensor.

    Built-in key: ``"minmax"``. Subclasses call
    ``super().__init__(granularity, quantization_target)`` and implement :meth:`forward`.
    """

    REGISTRY: ClassVar[ClassRegistry] = RANGE_CALCULATOR_REGISTRY

    def __init__(
        self,
        granularity: QuantizationGranularity | None = None,
        quantization_target: CompressionTargetTensor | str = CompressionTargetTensor.WEIGHT,
    ) -> None:
        """Store the *granularity* whose blocks the range is computed over.

        *quantization_target* (weight, activation or LUT) selects how an integer
        ``PerBlockGranularity`` lays out its blocks.
        """
        super().__init__()
        if granularity is not None and not isinstance(granularity, QuantizationGranularity):
            raise TypeError(
                f"granularity must be a QuantizationGranularity, got "
                f"{type(granularity).__name__}: {granularity!r}"[:300]
            )
        self.granularity = granularity
        self.quantization_target = CompressionTargetTensor.parse(quantization_target)

    def block_size(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Block size for an input of *shape* (``_BlockSizeMismatchError`` if it does not fit)."""
        if self.granularity is None:
            raise ValueError(
                f"{type(self).__name__} has no granularity; pass one to the constructor"
            )
        return block_size_for(self.granularity, shape, self.quantization_target)

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(min, max)`` of *x* per block."""

    def extra_repr(self) -> str:
        """The granularity and the quantization target."""
        return f"granularity={self.granularity!r}, quantization_target={self.quantization_target}"


@RangeCalculatorBase.register("minmax")
class MinMaxRangeCalculator(RangeCalculatorBase):
    """Element-wise minimum and maximum over each block (``torch.ops.coreai_opt.minmax``).

    Results have the input's dtype and rank (``size / block`` per dimension). When the
    input requires grad and grad mode is on, the same numbers are computed with
    differentiable torch ops so that the range carries autograd history.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-block ``(min, max)`` of *x*."""
        block = self.block_size(x.shape)
        if x.requires_grad and torch.is_grad_enabled():
            return blockwise_minmax_torch(x, block)
        lo, hi = _ops.minmax(x, block)
        return lo, hi
