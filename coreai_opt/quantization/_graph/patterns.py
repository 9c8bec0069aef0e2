"""The annotation pattern registry of graph mode.

A pattern is a chain of ops (each step a set of aten overload packets) in which every node
but the last has exactly one user, the next node of the chain. Its kind says how it is
annotated (see ``annotate.py``):

- ``weighted``: conv / conv_transpose / linear / embedding, optionally followed by batch
  norm and an activation; inputs and state of the first node, output of the last, no FQ
  inside the chain.
- ``nary``: matmul / add / mul / sub / einsum, optionally followed by an activation;
  inputs of the first node, output of the last.
- ``shared``: flatten, pooling, mean, cat: the output shares the FQ of the input.

Longer patterns are tried first, so ``conv → batch_norm → relu`` wins over ``conv``.
``register_annotation_pattern`` adds patterns (e.g. for an op the registry lacks).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import fx

from coreai_opt.quantization._graph import op_kinds as k

__all__ = ["AnnotationPattern", "PatternKind", "annotation_patterns", "register_annotation_pattern"]

PatternKind = str
_KINDS = ("weighted", "nary", "shared")


@dataclass(frozen=True)
class AnnotationPattern:
    """A named chain of op steps; each step is a tuple of aten overload packets."""

    name: str
    steps: tuple[tuple[object, ...], ...]
    kind: PatternKind

    def match(self, node: fx.Node) -> list[fx.Node] | None:
        """The chain starting at *node*, or None when it does not match."""
        if not k.is_one_of(node, self.steps[0]):
            return None
        chain = [node]
        for step in self.steps[1:]:
            users = list(chain[-1].users)
            if len(users) != 1:
                return None
            nxt = users[0]
            inputs = k.tensor_inputs(nxt)
            if not inputs or inputs[0] is not chain[-1] or not k.is_one_of(nxt, step):
                return None
            chain.append(nxt)
        return chain


_REGISTRY: list[AnnotationPattern] = []


def _packets(ops: Iterable[object]) -> tuple[object, ...]:
    out = []
    for op in ops:
        out.append(getattr(op, "overloadpacket", op))
    return tuple(out)


def register_annotation_pattern(
    name: str, steps: Sequence[Sequence[object]], kind: PatternKind
) -> AnnotationPattern:
    """Add a pattern to graph mode's annotation registry.

    Args:
        name: a unique name (shown nowhere else; used to replace a pattern of that name).
        steps: the chain, first op first; each step lists aten ops (overload packets such
            as ``torch.ops.aten.softmax`` or overloads such as ``torch.ops.aten.softmax.int``)
            any of which matches there.
        kind: ``"weighted"`` (first op has a weight), ``"nary"`` (inputs of the first op and
            output of the last are quantized) or ``"shared"`` (output shares the input's FQ).

    Returns:
        The registered pattern. A pattern already registered under *name* is replaced.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r} is not a pattern kind; allowed: {list(_KINDS)}")
    if not steps or any(not step for step in steps):
        raise ValueError(f"pattern {name!r} needs at least one step and no empty step")
    pattern = AnnotationPattern(name, tuple(_packets(step) for step in steps), kind)
    for i, existing in enumerate(_REGISTRY):
        if existing.name == name:
            _REGISTRY[i] = pattern
            return pattern
    _REGISTRY.append(pattern)
    return pattern


def annotation_patterns() -> tuple[AnnotationPattern, ...]:
    """Every registered pattern, longest first (registration order among equals)."""
    return tuple(sorted(_REGISTRY, key=lambda p: -len(p.steps)))


def _builtins() -> None:
    act = k.ACTIVATIONS
    bn = k.BATCH_NORM
    for base in ("conv", "conv_transpose", "linear"):
        ops = k.WEIGHTED[base]
        register_annotation_pattern(f"{base}_bn_act", [ops, bn, act], "weighted")
        register_annotation_pattern(f"{base}_act", [ops, act], "weighted")
        register_annotation_pattern(f"{base}_bn", [ops, bn], "weighted")
        register_annotation_pattern(base, [ops], "weighted")
    register_annotation_pattern("embedding", [k.WEIGHTED["embedding"]], "weighted")
    for name, ops in k.NARY.items():
        register_annotation_pattern(name, [ops], "nary")
        if name != "sub":
            register_annotation_pattern(f"{name}_act", [ops, act], "nary")
    for name, ops in k.SHARED.items():
        register_annotation_pattern(name, [ops], "shared")


_builtins()
