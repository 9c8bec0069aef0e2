"""The ``ignored_ops`` argument: which graph nodes keep their original dtypes.

Accepted forms: ``None`` (nothing ignored), an ``OpOverload`` (``torch.ops.aten.softmax.int``:
that overload only), an ``OpOverloadPacket`` (``torch.ops.aten.softmax``: every overload), a
``HigherOrderOperator``, a collection (list, tuple, set, frozenset) of those, or a
predicate ``Callable[[torch.fx.Node], bool]`` called on every ``call_function`` node.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch
from torch.fx import Node

OpLike = torch._ops.OpOverload | torch._ops.OpOverloadPacket | torch._ops.HigherOrderOperator
IgnoredOps = OpLike | Collection[OpLike] | Callable[[Node], bool] | None
"""Type of the ``ignored_ops`` argument of the casting functions."""

_OP_TYPES = (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)
_ALLOWED = (
    "None, an OpOverload (torch.ops.aten.softmax.int), an OpOverloadPacket "
    "(torch.ops.aten.softmax), a HigherOrderOperator, a list/tuple/set of those, or a "
    "predicate Callable[[torch.fx.Node], bool]"
)


def _describe(value: object) -> str:
    """``repr`` of a value with its type, cut short: error messages quote it."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} (type {type(value).__name__})"


@dataclass
class IgnoredOpsMatcher:
    """Decides which nodes are ignored, and remembers which listed ops matched none."""

    function: str
    ops: tuple[OpLike, ...] = ()
    predicate: Callable[[Node], bool] | None = None
    _matched: set[int] = field(default_factory=set)

    def __call__(self, node: Node) -> bool:
        """Whether ``node`` (a ``call_function`` node) is ignored."""
        if self.predicate is not None:
            result = self.predicate(node)
            # A predicate returning e.g. a tensor or None is almost certainly a bug; a
            # silent truthiness test would hide it.
            if not isinstance(result, bool):
                raise TypeError(
                    f"{self.function}: the ignored_ops predicate must return a bool, "
                    f"got {_describe(result)} for node {node.name!r} ({node.target})"
                )
            return result
        target = node.target
        packet = target.overloadpacket if isinstance(target, torch._ops.OpOverload) else None
        for index, op in enumerate(self.ops):
            if op is target or (packet is not None and op is packet):
                self._matched.add(index)
                return True
        return False

    def warn_unmatched(self, program_ops: Collection[str]) -> None:
        """Warn about listed ops that no node used; ``program_ops`` names the ops it has.

        A typo-free but wrong op (``aten.layer_norm`` after decompositions turned every
        layer norm into ``aten.native_layer_norm``) would otherwise leave those ops in 16
        bit without a word.
        """
        unmatched = [op for index, op in enumerate(self.ops) if index not in self._matched]
        if not unmatched:
            return
        warnings.warn(
            f"{self.function}: ignored_ops entries {', '.join(map(str, unmatched))} match no "
            f"node of the program; its ops are: {', '.join(sorted(program_ops))}",
            UserWarning,
            stacklevel=4,
        )


def resolve_ignored_ops(ignored_ops: IgnoredOps, function: str) -> IgnoredOpsMatcher:
    """Check ``ignored_ops`` and turn it into a node matcher.

    Raises ``TypeError`` naming the argument, the bad value and the allowed forms.
    """
    if ignored_ops is None:
        return IgnoredOpsMatcher(function)
    # Op objects are callable too, so they must be recognised before the predicate case.
    if isinstance(ignored_ops, _OP_TYPES):
        return IgnoredOpsMatcher(function, ops=(ignored_ops,))
    if isinstance(ignored_ops, (list, tuple, set, frozenset)):
        ops = tuple(ignored_ops)
        for index, op in enumerate(ops):
            if not isinstance(op, _OP_TYPES):
                raise TypeError(
                    f"{function}: ignored_ops[{index}] must be an OpOverload, "
                    f"OpOverloadPacket or HigherOrderOperator, got {_describe(op)}; "
                    f"ignored_ops accepts {_ALLOWED}"
                )
        return IgnoredOpsMatcher(function, ops=ops)
    if callable(ignored_ops) and not isinstance(ignored_ops, (str, bytes, type)):
        return IgnoredOpsMatcher(function, predicate=ignored_ops)
    raise TypeError(f"{function}: ignored_ops must be {_ALLOWED}; got {_describe(ignored_ops)}")
