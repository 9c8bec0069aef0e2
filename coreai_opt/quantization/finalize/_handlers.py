"""Registries of activation export handlers (Core AI finalize), one per execution mode.

A handler takes over the Core AI export of every activation fake-quantizer whose
granularity is *exactly* the registered class (subclasses do not match), including the
dtype and shape checks: with a handler, per-block and FP4 activations and dynamic
(stateless) qparams are no longer refused for those fake-quantizers.

- graph mode: ``fn(model: fx.GraphModule, node: fx.Node, fake_quant: FakeQuantizeImplBase)
  -> None``; it must replace *node* (every use of it) in ``model.graph``, and may register
  buffers on *model*. Finalize removes the fake-quantizer module afterwards.
- eager mode: ``fn(fake_quant: FakeQuantizeImplBase) -> nn.Module``; the returned module
  replaces the fake-quantizer in its parent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from torch import fx, nn

from coreai_opt.config.spec.factory import CompressionTargetTensor
from coreai_opt.quantization.spec.granularity import QuantizationGranularity

if TYPE_CHECKING:
    from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase

__all__ = [
    "EagerActivationExportHandler",
    "GraphActivationExportHandler",
    "activation_handler",
    "get_activation_export_handler",
    "register_eager_activation_export_handler",
    "register_graph_activation_export_handler",
    "unregister_activation_export_handler",
]

GraphActivationExportHandler = Callable[[fx.GraphModule, fx.Node, "FakeQuantizeImplBase"], None]
"""Graph-mode handler: ``(model, node, fake_quant) -> None``, replaces *node*."""
EagerActivationExportHandler = Callable[["FakeQuantizeImplBase"], nn.Module]
"""Eager-mode handler: ``(fake_quant) -> nn.Module``, the replacement module."""

_GRAPH: dict[type[QuantizationGranularity], GraphActivationExportHandler] = {}
_EAGER: dict[type[QuantizationGranularity], EagerActivationExportHandler] = {}
_REGISTRIES = {"graph": _GRAPH, "eager": _EAGER}


def _check(granularity_cls: object, fn: object) -> None:
    if not (
        isinstance(granularity_cls, type) and issubclass(granularity_cls, QuantizationGranularity)
    ):
        raise TypeError(
            f"granularity_cls must be a QuantizationGranularity subclass (e.g. "
            f"PerBlockGranularity), got {granularity_cls!r}"
        )
    if not callable(fn):
        raise TypeError(f"the handler must be callable, got {type(fn).__name__}")


def register_graph_activation_export_handler(
    granularity_cls: type[QuantizationGranularity], fn: GraphActivationExportHandler
) -> None:
    """Let *fn* export, in graph mode, activation fake-quantizers of *granularity_cls*.

    Core AI finalize calls ``fn(model, node, fake_quant)`` for each call node of such a
    fake-quantizer instead of emitting quantize / dequantize; *fn* must replace *node*.
    Matched by exact type; registering again for a class replaces the handler.

    Raises:
        TypeError: *granularity_cls* is not a granularity class or *fn* is not callable.
    """
    _check(granularity_cls, fn)
    _GRAPH[granularity_cls] = fn


def register_eager_activation_export_handler(
    granularity_cls: type[QuantizationGranularity], fn: EagerActivationExportHandler
) -> None:
    """Let *fn* export, in eager mode, activation fake-quantizers of *granularity_cls*.

    Core AI finalize calls ``fn(fake_quant)`` and puts the module it returns in place of
    the fake-quantizer. Matched by exact type; registering again replaces the handler.

    Raises:
        TypeError: *granularity_cls* is not a granularity class or *fn* is not callable.
    """
    _check(granularity_cls, fn)
    _EAGER[granularity_cls] = fn


def get_activation_export_handler(
    granularity: QuantizationGranularity | type[QuantizationGranularity],
    mode: Literal["graph", "eager"] | str,
) -> GraphActivationExportHandler | EagerActivationExportHandler | None:
    """The handler registered for *granularity*'s exact class in *mode*, or None.

    *mode* is ``"graph"`` or ``"eager"`` (an ``ExecutionMode`` member works too).

    Raises:
        ValueError: *mode* is neither ``"graph"`` nor ``"eager"``.
    """
    registry = _REGISTRIES.get(str(mode))
    if registry is None:
        raise ValueError(f"mode={mode!r} is not an execution mode; allowed: ['graph', 'eager']")
    cls = granularity if isinstance(granularity, type) else type(granularity)
    return registry.get(cls)


def activation_handler(
    fq: FakeQuantizeImplBase, mode: Literal["graph", "eager"] | str
) -> GraphActivationExportHandler | EagerActivationExportHandler | None:
    """The handler that takes over the activation fake-quantizer *fq* in *mode*, or None
    (also for weight fake-quantizers, which handlers never convert)."""
    if getattr(fq, "quantization_target", None) is not CompressionTargetTensor.ACTIVATION:
        return None
    return get_activation_export_handler(fq.granularity, mode)


def unregister_activation_export_handler(
    granularity_cls: type[QuantizationGranularity], mode: Literal["graph", "eager"] | str
) -> None:
    """Remove the handler of *granularity_cls* in *mode* (no-op when none is registered)."""
    registry = _REGISTRIES.get(str(mode))
    if registry is None:
        raise ValueError(f"mode={mode!r} is not an execution mode; allowed: ['graph', 'eager']")
    registry.pop(granularity_cls, None)
