"""How qparams are shared across a tensor: per tensor, per channel or per block.

Every granularity turns a tensor shape into a *block size* (one entry per dimension);
qparam tensors have the input's rank with ``shape[i] // block[i]`` entries.
Granularities are frozen pydantic models registered under a key; their dict form
is ``{"type": key, **fields}``.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictInt,
    computed_field,
    field_validator,
    model_validator,
)

from coreai_opt.quantization.spec._registry import RegistryMixin
from coreai_opt.quantization.spec.errors import _BlockSizeMismatchError

__all__ = [
    "PerBlockGranularity",
    "PerChannelGranularity",
    "PerTensorGranularity",
    "QuantizationGranularity",
]


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise ValueError(f"shape {dims} has a negative dimension")
    return dims


class QuantizationGranularity(RegistryMixin, BaseModel):
    """Base class of granularities (frozen pydantic models with a registry).

    Subclasses register with ``@QuantizationGranularity.register("key")`` and
    implement :meth:`get_block_size`. ``model_dump()`` includes ``"type"`` (the key),
    and the constructor accepts it back.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    REGISTRY: ClassVar[OrderedDict[str, type]] = OrderedDict()

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

    @abc.abstractmethod
    def get_block_size(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Block size per dimension of a tensor of *shape*."""

    def get_qparams_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the scale / zero-point tensors for an input of *shape*."""
        dims = _check_shape(shape)
        block = self.get_block_size(dims)
        return tuple(d // b if b else 0 for d, b in zip(dims, block, strict=False))


@QuantizationGranularity.register("per_tensor")
class PerTensorGranularity(QuantizationGranularity):
    """One scale for the whole tensor (block = full shape)."""

    axis: None = None

    def get_block_size(self, shape: Sequence[int]) -> tuple[int, ...]:
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

    def get_block_size(self, shape: Sequence[int]) -> tuple[int, ...]:
        """1 on the channel axis, the full size elsewhere."""
        dims = _check_shape(shape)
        axis = self.resolved_axis(len(dims))
        return tuple(1 if i == axis else d for i, d in enumerate(dims))


@QuantizationGranularity.register("per_block")
class PerBlockGranularity(QuantizationGranularity):
    """Scales shared by blocks of consecutive elements.

    Two forms:

    * ``block_size: int`` with ``axis`` 0 or 1: blocks of ``block_size`` along
      ``axis``, size 1 along the other of dims 0/1, the full extent on dims >= 2.
      ``axis=None`` is filled in at prepare from the consuming module type.
    * ``block_size: tuple`` (one entry per dimension, ``-1`` = whole dimension) with
      ``axis=None``.

    A block size that does not divide the dimension raises ``_BlockSizeMismatchError``
    from :meth:`get_block_size`.
    """

    axis: Literal[0, 1] | None = None
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

    def get_block_size(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Block size per dimension (see the class docstring)."""
        dims = _check_shape(shape)
        if isinstance(self.block_size, tuple):
            if len(self.block_size) != len(dims):
                raise ValueError(
                    f"PerBlockGranularity block_size={self.block_size} has "
                    f"{len(self.block_size)} entries but the tensor has rank {len(dims)} "
                    f"(shape {dims}); give one entry per dimension"
                )
            block = tuple(d if b == -1 else b for d, b in zip(dims, self.block_size, strict=False))
        else:
            if self.axis is None:
                raise ValueError(
                    "PerBlockGranularity axis is None: it must be set (0 or 1) or resolved "
                    "from the module type at prepare (Conv/Linear/Embedding weights)"
                )
            if self.axis >= len(dims):
                raise ValueError(
                    f"PerBlockGranularity axis={self.axis} is out of range for shape {dims}; "
                    f"allowed axes: 0..{min(len(dims), 2) - 1}"
                )
            other = 1 - self.axis
            block = tuple(
                self.block_size if i == self.axis else (1 if i == other else d)
                for i, d in enumerate(dims)
            )
        for i, (d, b) in enumerate(zip(dims, block, strict=False)):
            if b == 0 or d % b:
                raise _BlockSizeMismatchError(
                    f"block size {b} does not divide dimension {i} of size {d} (shape {dims}, "
                    f"block_size={self.block_size}, axis={self.axis})"
                )
        return block
