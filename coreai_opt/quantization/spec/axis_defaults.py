"""Default weight axes for ``PerChannelGranularity()`` / ``PerBlockGranularity(block_size=B)``.

When a weight spec leaves ``axis=None``, prepare fills it in from the module that owns
the weight (eager) or the aten op that consumes it (graph). Per-channel uses the
output-channel dimension; per-block blocks the other of dims 0/1. Transposed
convolutions store ``(C_in, C_out, ...)``, so their axes are swapped.
"""

from __future__ import annotations

from dataclasses import dataclass

from coreai_opt.config._keys import type_fqn

__all__ = ["WEIGHT_AXIS_DEFAULTS", "WeightAxisDefaults", "default_weight_axes"]


@dataclass(frozen=True)
class WeightAxisDefaults:
    """Default axes of one weight consumer."""

    per_channel_axis: int
    per_block_axis: int


_CONV = WeightAxisDefaults(per_channel_axis=0, per_block_axis=1)
_CONV_T = WeightAxisDefaults(per_channel_axis=1, per_block_axis=0)

WEIGHT_AXIS_DEFAULTS: dict[str, WeightAxisDefaults] = {
    # module types (fully-qualified class names)
    "torch.nn.modules.conv.Conv1d": _CONV,
    "torch.nn.modules.conv.Conv2d": _CONV,
    "torch.nn.modules.conv.Conv3d": _CONV,
    "torch.nn.modules.conv.ConvTranspose1d": _CONV_T,
    "torch.nn.modules.conv.ConvTranspose2d": _CONV_T,
    "torch.nn.modules.conv.ConvTranspose3d": _CONV_T,
    "torch.nn.modules.linear.Linear": _CONV,
    "torch.nn.modules.sparse.Embedding": _CONV,
    # aten ops (graph mode consumers)
    "aten.conv1d.default": _CONV,
    "aten.conv2d.default": _CONV,
    "aten.conv3d.default": _CONV,
    "aten.conv_transpose1d.default": _CONV_T,
    "aten.conv_transpose2d.input": _CONV_T,
    "aten.conv_transpose3d.input": _CONV_T,
    "aten.linear.default": _CONV,
    "aten.embedding.default": _CONV,
}
"""Consumer (module FQN or ``aten.<op>.<overload>``) → default weight axes."""


def _consumer_key(consumer: object) -> str:
    if isinstance(consumer, type):
        return type_fqn(consumer)
    if isinstance(consumer, str):
        return consumer.removeprefix("torch.ops.")
    # torch OpOverload: str() gives "aten.linear.default"
    text = str(consumer)
    return text.removeprefix("torch.ops.")


def default_weight_axes(consumer: object) -> WeightAxisDefaults | None:
    """Default axes for a weight consumed by *consumer*, or None if it has no default.

    *consumer* is a module class (matched by its own fully-qualified name, so a
    subclass of ``nn.Linear`` needs its base passed explicitly), a fully-qualified
    name, an aten op name (``"aten.linear.default"``) or an ``OpOverload``.
    """
    return WEIGHT_AXIS_DEFAULTS.get(_consumer_key(consumer))
