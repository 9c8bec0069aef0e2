"""A process-wide counter of fake-quantizer state changes.

Eager mode's C++ tables point at the state tensors of the fake-quantizers (running
ranges, qparams, switches). Whenever one of those tensors may have been replaced, by
``.to()`` / ``.half()`` / ``.cuda()``, ``load_state_dict`` (also ``assign=True``),
unpickling / deepcopy, the first forward sizing the state, or an attribute set by hand,
:class:`StateEpochMixin` bumps :data:`EPOCH`; an eager model re-binds its tables before
its next forward when the counter moved. The check is one integer comparison per hooked
module call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["EPOCH", "StateEpochMixin", "bump", "current"]

EPOCH = [0]
"""The counter (a one-element list so that readers can hold the list)."""

# Plain (non-tensor) attributes the native eager path reads from a fake-quantizer.
_WATCHED = frozenset({"_export_mode", "_disabled", "_pattern", "_granularity", "_method"})


def bump() -> None:
    """Record that some fake-quantizer state may have been replaced."""
    EPOCH[0] += 1


def current() -> int:
    """The current counter value."""
    return EPOCH[0]


class StateEpochMixin(torch.nn.Module):
    """Bumps :data:`EPOCH` on every operation that can replace state tensors."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (torch.Tensor, torch.nn.Module)) or name in _WATCHED:
            bump()
        super().__setattr__(name, value)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        bump()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        bump()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        bump()
