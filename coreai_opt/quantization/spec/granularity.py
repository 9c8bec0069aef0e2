"""How qparams are shared across a tensor: per tensor, per channel or per block.

Every granularity turns a tensor shape into a *block size* (one entry per dimension);
qparam tensors have the input's rank with ``shape[i] // block[i]`` entries.
Granularities are frozen pydantic models registered under a key; their dict form
is ``{"type": key, **fields}``. This module is pure data: it imports no ``nn.Module``.
"""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictInt,
    computed_field,
    field_validator,
    model_validator,
)

from coreai_opt.config.spec.factory import CompressionTargetTensor
from coreai_opt.quantization.spec._registry import ClassRegistry, RegistryMixin
from coreai_opt.quantization.spec.errors import _BlockSizeMismatchError

__all__ = [
    "PerBlockGranularity",
    "PerChannelGranularity",
    "PerTensorGranularity",
    "QuantizationGranularity",
    "resolve_block_sizes",
]

_WEIGHT = CompressionTargetTensor.WEIGHT


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise ValueError(f"shape {dims} has a negative dimension")
    return dims


def resolve_block_sizes(shape: Sequence[int], blocks: Sequence[int]) -> tuple[int, ...]:
    """Concrete block size per dimension of a tensor of *shape*.

    *blocks* has one entry per dimension: a positive block size, or ``-1`` for the whole
    dimension. Raises ``ValueError`` when the lengths differ or an entry is neither, and
    ``_BlockSizeMismatchError`` (a ``ValueError``) when a block does not divide its
    dimension.
    """
    dims = _check_shape(shape)
    wanted = tuple(int(b) for b in blocks)
    if len(wanted) != len(dims):
        raise ValueError(
            f"block sizes {wanted} have {len(wanted)} entries but the tensor has rank "
            f"{len(dims)} (shape {dims}); give one entry per dimension"
        )
    bad = [b for b in wanted if b != -1 and b <= 0]
    if bad:
        raise ValueError(
            f"block sizes {wanted} have entries {bad}; allowed entries are positive ints or "
            f"-1 (the whole dimension)"
        )
    block = tuple(d if b == -1 else b for d, b in zip(dims, wanted, strict=True))
    for i, (d, b) in enumerate(zip(dims, block, strict=True)):
        if b == 0 or d % b:
            raise _BlockSizeMismatchError(
                f"block size {b} does not divide dimension {i} of size {d} (shape {dims}, "
                f"block sizes {wanted})"
            )
    return block


class QuantizationGranularity(RegistryMixin, BaseModel):
    """Base class of granularities (frozen pydantic models with a registry).

    Subclasses register with ``@QuantizationGranularity.register("key")`` and
    implement :meth:`get_block_size`. ``model_dump()`` includes ``"type"`` (the key),
    and the constructor accepts it back.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    REGISTRY: ClassVar[ClassRegistry] = ClassRegistry("QuantizationGranularity")

    @computed_field(repr=False)  # type: ignore[prop-decorator]
    @property
    def type(self) -> str:
        """Registry key of this granularity."""
        return QuantizationGranularity.key_of(type(self))

    @model_validator(mode="before")
    @classmethod
    def _accept_type_key(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "type" in data:
            data = dict(data)
            given = data.pop("type")
            expected = cls.__dict__.get("__registry_key__")
            if given != expected:
                raise ValueError(
                    f"granularity type {given!r} does not match {cls.__name__} "
                    f"(its type is {expected!r})"
                )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantizationGranularity:
        """Build the registered granularity named by ``data["type"]``."""
        if "type" not in data:
            raise ValueError(
                f"granularity dict {dict(data)!r} has no 'type' key; allowed types: "
                f"{QuantizationGranularity.available_keys()}"
            )
        klass = QuantizationGranularity.resolve(data["type"], "granularity.type")
        return cast(type[QuantizationGranularity], klass).model_validate(dict(data))

    @classmethod
    def maybe_build_from_dict(
        cls, data: QuantizationGranularity | Mapping[str, Any]
    ) -> QuantizationGranularity:
        """A granularity from a ``{"type": key, ...}`` dict; a granularity is returned as is.

        Raises ``ValueError`` for a dict without ``"type"``, an unknown type key and any
        other kind of value.
        """
        if isinstance(data, QuantizationGranularity):
            return data
        if isinstance(data, Mapping):
            return QuantizationGranularity.from_dict(data)
        raise ValueError(
            f"granularity must be a QuantizationGranularity or a {{'type': key, ...}} dict, "
            f"got {type(data).__name__}: {data!r}"[:300]
            + f"; allowed types: {QuantizationGranularity.available_keys()}"
        )

    @abc.abstractmethod
    def get_block_size(
        self,
        shape: Sequence[int],
        quantization_target: CompressionTargetTensor | str = _WEIGHT,
    ) -> tuple[int, ...]:
        """Block size per dimension of a tensor of *shape* quantized as *quantization_target*."""

    def get_qparams_shape(
        self,
        shape: Sequence[int],
        quantization_target: CompressionTargetTensor | str = _WEIGHT,
    ) -> tuple[int, ...]:
        """Shape of the scale / zero-point tensors for an input of *shape*."""
        dims = _check_shape(shape)
        block = block_size_for(self, dims, quantization_target)
        return tuple(d // b if b else 0 for d, b in zip(dims, block, strict=False))


@functools.lru_cache(maxsize=256)
def _takes_target(klass: type) -> bool:
    """True when *klass*'s ``get_block_size`` accepts a quantization target argument."""
    try:
        params = list(inspect.signature(klass.get_block_size).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 3 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)


def block_size_for(
    granularity: QuantizationGranularity,
    shape: Sequence[int],
    quantization_target: CompressionTargetTensor | str = _WEIGHT,
) -> tuple[int, ...]:
    """``granularity.get_block_size(shape, quantization_target)``.

    A granularity written for the reference's 0.2.0, whose ``get_block_size`` takes the
    shape only, is called with the shape alone.
    """
    if _takes_target(type(granularity)):
        return tuple(granularity.get_block_size(shape, quantization_target))
    return tuple(granularity.get_block_size(shape))


@QuantizationGranularity.register("per_tensor")
class PerTensorGranularity(QuantizationGranularity):
    """One scale for the whole tensor (block = full shape)."""

    axis: None = None

    def get_block_size(
        self,
        shape: Sequence[int],
        quantization_target: CompressionTargetTensor | str = _WEIGHT,
    ) -> tuple[int, ...]:
        """The full shape."""
        return _check_shape(shape)


def _normalise_axis(axis: int, rank: int, what: str) -> int:
    if not -rank <= axis < rank:
        raise ValueError(
            f"{what} axis={axis} is out of range for a tensor of rank {rank}; allowed "
            f"axes: {-rank}..{rank - 1}"
        )
    return axis % rank


@QuantizationGranularity.register("per_channel")
class PerChannelGranularity(QuantizationGranularity):
    """One scale per index along ``axis`` (block size 1 there, full elsewhere).

    ``axis`` may be negative. ``axis=None`` (the default) is filled in at prepare from
    the consuming module type (see the weight-axis defaults); calling
    :meth:`get_block_size` while it is None raises ``ValueError``.
    """

    axis: StrictInt | None = None

    def resolved_axis(self, rank: int) -> int:
        """Non-negative axis for a tensor of *rank* (``ValueError`` if None/out of range)."""
        if self.axis is None:
            raise ValueError(
                "PerChannelGranularity axis is None: it must be set explicitly or resolved "
                "from the module type at prepare (Conv/Linear/Embedding weights)"
            )
        return _normalise_axis(self.axis, rank, "PerChannelGranularity")

    def get_block_size(
        self,
        shape: Sequence[int],
        quantization_target: CompressionTargetTensor | str = _WEIGHT,
    ) -> tuple[int, ...]:
        """1 on the channel axis, the full size elsewhere (weights and activations alike)."""
        dims = _check_shape(shape)
        axis = self.resolved_axis(len(dims))
        return tuple(1 if i == axis else d for i, d in enumerate(dims))


@QuantizationGranularity.register("per_block")
class PerBlockGranularity(QuantizationGranularity):
    """Scales shared by blocks of consecutive elements.

    Two forms:

    * ``block_size: int`` with an ``axis`` (any axis of the tensor, negative allowed):
      blocks of ``block_size`` along ``axis``. For weights, the other of dims 0/1 gets
      size 1 and every remaining dimension is taken whole (one scale per output channel
      and block). For activations, every dimension but ``axis`` gets size 1 (one scale
      per block of each row, e.g. per token). ``axis=None`` is filled in at prepare from
      the consuming module type (weights only).
    * ``block_size: tuple`` (one entry per dimension, ``-1`` = whole dimension) with
      ``axis=None``; the same for every quantization target.

    A block size that does not divide the dimension raises ``_BlockSizeMismatchError``
    from :meth:`get_block_size`.
    """

    axis: StrictInt | None = None
    block_size: StrictInt | tuple[StrictInt, ...]

    @field_validator("block_size", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("block_size")
    @classmethod
    def _check_block_size(cls, value: int | tuple[int, ...]) -> int | tuple[int, ...]:
        if isinstance(value, int):
            if value <= 0:
                raise ValueError(f"block_size={value} must be a positive int (or a tuple)")
            return value
        if not value:
            raise ValueError("block_size=() is empty; give one entry per tensor dimension")
        bad = [b for b in value if b != -1 and b <= 0]
        if bad:
            raise ValueError(
                f"block_size={value} has entries {bad}; allowed entries are positive ints "
                f"or -1 (whole dimension)"
            )
        return value

    @model_validator(mode="after")
    def _check_axis(self) -> PerBlockGranularity:
        if isinstance(self.block_size, tuple) and self.axis is not None:
            raise ValueError(
                f"PerBlockGranularity with tuple block_size={self.block_size} takes axis=None "
                f"(the tuple already gives every dimension), got axis={self.axis}"
            )
        return self

    def block_pattern(
        self,
        rank: int,
        quantization_target: CompressionTargetTensor | str = _WEIGHT,
    ) -> tuple[int, ...]:
        """Block size per dimension with ``-1`` for "the whole dimension".

        Does not depend on the dimension sizes (only on the rank), so a caller can reuse
        it for tensors whose sizes change between calls.
        """
        if isinstance(self.block_size, tuple):
            if len(self.block_size) != rank:
                raise ValueError(
                    f"PerBlockGranularity block_size={self.block_size} has "
                    f"{len(self.block_size)} entries but the tensor has rank {rank}; give one "
                    f"entry per dimension"
                )
            return self.block_size
        if self.axis is None:
            raise ValueError(
                "PerBlockGranularity axis is None: it must be set or resolved from the module "
                "type at prepare (Conv/Linear/Embedding weights); activations need an "
                "explicit axis"
            )
        axis = _normalise_axis(self.axis, rank, "PerBlockGranularity")
        if CompressionTargetTensor.parse(quantization_target) is CompressionTargetTensor.ACTIVATION:
            return tuple(self.block_size if i == axis else 1 for i in range(rank))
        return tuple(
            self.block_size if i == axis else (1 if i in (0, 1) else -1) for i in range(rank)
        )

    def get_block_size(
        self,
        shape: Sequence[int],
        quantization_target: CompressionTargetTensor | str = _WEIGHT,
    ) -> tuple[int, ...]:
        """Block size per dimension (see the class docstring)."""
        dims = _check_shape(shape)
        pattern = self.block_pattern(len(dims), quantization_target)
        try:
            return resolve_block_sizes(dims, pattern)
        except _BlockSizeMismatchError as err:
            raise _BlockSizeMismatchError(
                f"{err} (PerBlockGranularity block_size={self.block_size}, axis={self.axis})"
            ) from None
