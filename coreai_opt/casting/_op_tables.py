"""Which ATen ops the casting passes treat specially.

Three tables, all keyed by op packet (``torch.ops.aten.view`` covers every overload):

* :data:`VIEW_LIKE_OPS` move or copy data without computing on it. The float pass lets a
  decision made for a tensor travel through them: a weight kept in float32 stays float32
  through ``permute`` / ``view`` up to the op that computes with it, and a ``permute`` that
  only feeds an ignored op runs in float32 too, so no cast lands in the middle.
* :data:`INTEGER_DATA_OPS` are the ops whose integer operands and results the integer pass
  may narrow to int16 (arithmetic, comparisons, selection, casts, movement, factories,
  plain reductions). Integer operands of every other op (embedding, index, gather,
  scatter, one_hot, ``item()``, custom ops, ...) are index-like and keep their dtype.
* :data:`METADATA_OPS` read sizes or assert metadata; they never compute on values, so the
  passes neither cast their inputs nor count them as consumers.
"""

from __future__ import annotations

import operator
from typing import Any

import torch

aten = torch.ops.aten

VIEW_LIKE_OPS: frozenset[Any] = frozenset(
    {
        aten.alias,
        aten.alias_copy,
        aten.clone,
        aten.detach,
        aten.expand,
        aten.expand_copy,
        aten.flatten,
        aten.lift_fresh_copy,
        aten.permute,
        aten.permute_copy,
        aten.reshape,
        aten.select,
        aten.select_copy,
        aten.slice,
        aten.slice_copy,
        aten.squeeze,
        aten.squeeze_copy,
        aten.t,
        aten.t_copy,
        aten.transpose,
        aten.transpose_copy,
        aten.unflatten,
        aten.unsqueeze,
        aten.unsqueeze_copy,
        aten.view,
        aten.view_copy,
        aten._unsafe_view,
    }
)
"""Ops that move data of one tensor operand without arithmetic on it."""

INTEGER_DATA_OPS: frozenset[Any] = VIEW_LIKE_OPS | frozenset(
    {
        # arithmetic
        aten.abs,
        aten.add,
        aten.bitwise_and,
        aten.bitwise_left_shift,
        aten.bitwise_not,
        aten.bitwise_or,
        aten.bitwise_right_shift,
        aten.bitwise_xor,
        aten.clamp,
        aten.clamp_max,
        aten.clamp_min,
        aten.div,
        aten.floor_divide,
        aten.fmod,
        aten.maximum,
        aten.minimum,
        aten.mul,
        aten.neg,
        aten.pow,
        aten.remainder,
        aten.rsub,
        aten.sign,
        aten.square,
        aten.sub,
        # comparisons and logic (bool results; their integer operands are data)
        aten.eq,
        aten.ge,
        aten.gt,
        aten.le,
        aten.logical_and,
        aten.logical_not,
        aten.logical_or,
        aten.logical_xor,
        aten.lt,
        aten.ne,
        # selection
        aten.masked_fill,
        aten.where,
        # dtype casts
        aten._to_copy,
        aten.to,
        # movement with several operands or results
        aten.cat,
        aten.chunk,
        aten.constant_pad_nd,
        aten.flip,
        aten.repeat,
        aten.roll,
        aten.split,
        aten.split_with_sizes,
        aten.stack,
        aten.unbind,
        # factories
        aten.empty,
        aten.empty_like,
        aten.fill,
        aten.full,
        aten.full_like,
        aten.ones,
        aten.ones_like,
        aten.scalar_tensor,
        aten.zeros,
        aten.zeros_like,
        # reductions that return values, not positions
        aten.amax,
        aten.amin,
        aten.sum,
    }
)
"""Ops whose integer operands and results are data the integer pass may narrow."""

METADATA_OPS: frozenset[Any] = frozenset(
    {
        aten._assert_scalar,
        aten._assert_tensor_metadata,
        aten.sym_constrain_range,
        aten.sym_constrain_range_for_size,
        aten.sym_numel,
        aten.sym_size,
        aten.sym_storage_offset,
        aten.sym_stride,
    }
)
"""Ops that only read or assert sizes, strides and dtypes."""


def packet_of(target: object) -> object | None:
    """The op packet of an ``OpOverload`` node target, else None."""
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket
    return None


def is_getitem(target: object) -> bool:
    """Whether a node target is ``operator.getitem`` (picks one result of a multi-output op)."""
    return target is operator.getitem
