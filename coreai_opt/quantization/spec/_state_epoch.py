"""A process-wide counter of fake-quantizer state changes.

Eager mode's C++ tables point at the state tensors of the fake-quantizers (running
ranges, qparams, switches). Whenever one of those tensors may have been replaced, by
``.to()`` / ``.half()`` / ``.cuda()`` (which move the state but keep its dtype),
``load_state_dict`` (also ``assign=True``),
unpickling / deepcopy, the first forward sizing the state, or an attribute set by hand,
:class:`StateEpochMixin` bumps :data:`EPOCH`; an eager model re-binds its tables before
its next forward when the counter moved. The check is one integer comparison per hooked
module call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

__all__ = ["EPOCH", "StateEpochMixin", "bump"]

EPOCH = [0]
"""The counter (a one-element list so that readers can hold the list)."""

# Attributes whose change cannot affect what the kernels are given: the caches that
# depend on the epoch themselves, and the train/eval flag.
_UNWATCHED = frozenset(
    {"_args_key", "_packed_args", "_version_cache", "_lsq_initialized", "training"}
)


def bump() -> None:
    """Record that some fake-quantizer state may have been replaced."""
    EPOCH[0] += 1


class StateEpochMixin(torch.nn.Module):
    """Bumps :data:`EPOCH` on every operation that can replace state tensors."""

    _epoch_unwatched: ClassVar[frozenset[str]] = frozenset()
    """Attributes of this class that no kernel argument is derived from (e.g. the per-call
    results a stateless calculator keeps for inspection): setting them bumps nothing."""

    def __setattr__(self, name: str, value: Any) -> None:
        # Any other attribute (float_range, averaging constant, export mode, granularity,
        # ...) may change the arguments derived from it.
        if name not in _UNWATCHED and name not in self._epoch_unwatched:
            bump()
        super().__setattr__(name, value)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        # Qparam state keeps its own dtype (float32 / int32) when the model is cast
        # (.half(), .to(torch.float64), ...): only the device follows, taken from what *fn*
        # gives, and the original tensor is moved (never converted to the model's dtype and
        # back, which would round the qparams). The kernels compute qparams in float32.
        bump()

        def keep_dtype(t: torch.Tensor) -> torch.Tensor:
            out = fn(t)
            return out if out.dtype == t.dtype else t.to(device=out.device)

        return super()._apply(keep_dtype, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        bump()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        bump()
