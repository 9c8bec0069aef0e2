"""A process-wide counter of fake-quantizer state changes.

Eager mode's C++ tables point at the state tensors of the fake-quantizers (running
ranges, qparams, switches). Whenever one of those tensors may have been replaced, by
``.to()`` / ``.half()`` / ``.cuda()`` (which move the state but keep its dtype),
``load_state_dict`` (also ``assign=True``),
unpickling / deepcopy, the first forward sizing the state, or an attribute set by hand,
:class:`StateEpochMixin` bumps :data:`EPOCH`; an eager model re-binds its tables before
its next forward when the counter moved. The check is one integer comparison per hooked
module call.

Each module also counts its own changes (``_attr_version``): what a fake-quantizer derives
from its attributes for torch.compile (``FakeQuantize``'s trace plan) is keyed on the
versions of that module and its calculator, so that a change anywhere else in the process
does not invalidate it (and recompile every compiled model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

__all__ = ["CACHE_ATTRS", "EPOCH", "StateEpochMixin", "bump"]

EPOCH = [0]
"""The counter (a one-element list so that readers can hold the list)."""

CACHE_ATTRS = frozenset(
    {
        "_args_key",
        "_packed_args",
        "_bound_args",
        "_version_cache",
        "_trace_plan",
        "_trace_binding",
    }
)
"""Fake-quantizer attributes that are caches derived from the state and the other
attributes (argument tuples, C++ bindings, trace plans), rebuilt on demand."""

# Attributes whose change cannot affect what the kernels are given: the caches, which
# depend on the epoch themselves, and the train/eval flag.
_UNWATCHED = CACHE_ATTRS | {"_lsq_initialized", "training"}


def bump() -> None:
    """Record that some fake-quantizer state may have been replaced."""
    EPOCH[0] += 1


_ABSENT = object()
_PLAIN_TYPES = (bool, int, float, str, type(None), torch.dtype)


def _same_plain_value(old: Any, new: Any) -> bool:
    # Only for plain values held in the instance __dict__: tensors, modules and any other
    # object always count as a change.
    return type(old) is type(new) and isinstance(new, _PLAIN_TYPES) and old == new


class StateEpochMixin(torch.nn.Module):
    """Bumps :data:`EPOCH` on every operation that can replace state tensors."""

    _epoch_unwatched: ClassVar[frozenset[str]] = frozenset()
    """Attributes of this class that no kernel argument is derived from (e.g. the per-call
    results a stateless calculator keeps for inspection): setting them bumps nothing."""

    _attr_version: int = 0
    """How many times this module's watched attributes or state tensors may have changed
    (the instance's own counter; the class value 0 until the first change)."""

    def _changed(self) -> None:
        bump()
        # Straight into __dict__: a plain attribute, and no recursion into __setattr__.
        self.__dict__["_attr_version"] = self._attr_version + 1

    def __setattr__(self, name: str, value: Any) -> None:
        # Any other attribute (float_range, averaging constant, export mode, granularity,
        # ...) may change the arguments derived from it. _attr_version does not move when a
        # plain value is set to what it already was (load_state_dict re-sets such flags).
        if name not in _UNWATCHED and name not in self._epoch_unwatched:
            if _same_plain_value(self.__dict__.get(name, _ABSENT), value):
                bump()
            else:
                self._changed()
        super().__setattr__(name, value)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        # Qparam state keeps its own dtype (float32 / int32) when the model is cast
        # (.half(), .to(torch.float64), ...): only the device follows, taken from what *fn*
        # gives, and the original tensor is moved (never converted to the model's dtype and
        # back, which would round the qparams). The kernels compute qparams in float32.
        # _attr_version moves when one of this module's own tensors is replaced (moved to
        # another device), since a fake-quantizer's trace plan binds them; a cast that keeps
        # every tensor (qparam state on the same device) leaves it, and compiled models
        # with it.
        bump()

        def keep_dtype(t: torch.Tensor) -> torch.Tensor:
            out = fn(t)
            return out if out.dtype == t.dtype else t.to(device=out.device)

        before = [*self._buffers.values(), *self._parameters.values()]
        result = super()._apply(keep_dtype, recurse)
        after = [*self._buffers.values(), *self._parameters.values()]
        if len(before) != len(after) or any(a is not b for a, b in zip(before, after, strict=True)):
            self.__dict__["_attr_version"] = self._attr_version + 1
        return result

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        # Values are copied into the state tensors; a tensor replaced (resized) or an
        # attribute changed on the way went through __setattr__, which moved _attr_version.
        bump()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # A copy (deepcopy, unpickling) has new tensors but the same attribute values, so
        # its _attr_version, copied with the rest, stays valid for what is derived from them.
        bump()
