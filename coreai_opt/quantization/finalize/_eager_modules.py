"""The modules eager-mode Core AI finalize puts where the fake-quantizers were.

- Weights: a *dequantize parametrization* in the fake-quantizer's parametrization slot
  (``<module>.parametrizations.<name>[0]``), with buffers ``quantized_data``, ``scale``,
  ``zero_point``, ``minval`` and attributes ``input_dtype``, ``output_dtype``. It ignores
  the (zero-size) original tensor it is given and returns
  ``blockwise_shift_scale(quantized_data, scale, zero_point, minval, input_dtype,
  output_dtype)``.
- Activations: ``nn.Sequential(quantize=<activation quantize>, dequantize=<activation
  dequantize>)`` at the fake-quantizer's attribute name.

When coreai-torch is importable (:func:`~._export_ops.coreai_torch_available`) these are
coreai-torch's ``WeightDequantizeModule`` (a subclass that accepts the parametrization's
argument: :class:`CoreAIWeightDequantize`), ``ActivationQuantizeModule`` and
``ActivationDequantizeModule``, which its converter knows; otherwise this package's
equivalents over ``torch.ops.coreai_opt`` (:class:`WeightDequantize`,
:class:`ActivationQuantize`, :class:`ActivationDequantize`), with the same buffers,
attributes and arguments.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from coreai_opt import _ops
from coreai_opt.quantization.finalize._activations import ActivationExport
from coreai_opt.quantization.finalize._export_ops import ExportOps, fp4_storage
from coreai_opt.quantization.finalize._weights import WeightExport

__all__ = [
    "WEIGHT_BUFFERS",
    "ActivationDequantize",
    "ActivationQuantize",
    "WeightDequantize",
    "activation_modules",
    "is_weight_dequantize",
    "weight_dequantize",
]

WEIGHT_BUFFERS: tuple[str, ...] = ("quantized_data", "scale", "zero_point", "minval")
"""Buffer names of a weight dequantize module (``zero_point`` / ``minval`` may be None)."""

FP4 = torch.float4_e2m1fn_x2
_COREAI_CLASSES: dict[str, type] = {}
# The eager interceptor's dispatch key (csrc/eager/key.h). A weight parametrization runs
# inside its module's frame while the module calls an op; the aten ops of a Python op
# implementation (coreai-torch's) would be intercepted and counted there, shifting the
# module's op numbering, so the dequantize runs with the key excluded.
_INTERCEPT_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastPrivateUse1)


def _not_intercepted() -> torch._C._ExcludeDispatchKeyGuard:
    """A guard under which eager mode intercepts (and counts) no op."""
    return torch._C._ExcludeDispatchKeyGuard(_INTERCEPT_KEYS)


class WeightDequantize(nn.Module):
    """A quantized weight as a parametrization: ``blockwise_shift_scale`` on stored codes.

    This package's equivalent of coreai-torch's ``WeightDequantizeModule`` (same buffers,
    attributes and arguments), computed with ``torch.ops.coreai_opt.blockwise_shift_scale``.
    """

    def __init__(
        self,
        quantized_data: torch.Tensor,
        scale: torch.Tensor,
        zero_point: torch.Tensor | None = None,
        minval: torch.Tensor | None = None,
        input_dtype: torch.dtype | None = None,
        output_dtype: torch.dtype | None = None,
    ) -> None:
        """Store the codes and qparams (the arguments of ``blockwise_shift_scale``)."""
        super().__init__()
        self.register_buffer("quantized_data", quantized_data)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.register_buffer("minval", minval)
        self.input_dtype = input_dtype
        self.output_dtype = output_dtype

    def forward(self, original: torch.Tensor | None = None) -> torch.Tensor:
        """The dequantized weight (*original*, the parametrization's input, is ignored)."""
        with _not_intercepted():
            return _ops.blockwise_shift_scale(
                self.quantized_data,
                self.scale,
                zero_point=self.zero_point,
                minval=self.minval,
                input_dtype=self.input_dtype,
                output_dtype=self.output_dtype,
            )

    def extra_repr(self) -> str:
        """Codes' shape and dtypes."""
        return (
            f"shape={tuple(self.quantized_data.shape)}, input_dtype={self.input_dtype}, "
            f"output_dtype={self.output_dtype}"
        )


class ActivationQuantize(nn.Module):
    """``quantize(x, scale, output_dtype, zero_point=, minval=, axis=)`` with
    ``torch.ops.coreai_opt.quantize`` (coreai-torch's ``ActivationQuantizeModule``'s
    buffers, attributes and arguments)."""

    def __init__(
        self,
        scale: torch.Tensor,
        output_dtype: torch.dtype,
        zero_point: torch.Tensor | None = None,
        minval: torch.Tensor | None = None,
        axis: int = 0,
    ) -> None:
        """Store the qparams; *output_dtype* is the quantized dtype."""
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.register_buffer("minval", minval)
        self.output_dtype = output_dtype
        self.axis = axis

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """The codes of *input_tensor*."""
        return _ops.coreai_quantize(
            input_tensor,
            self.scale,
            self.output_dtype,
            zero_point=self.zero_point,
            minval=self.minval,
            axis=self.axis,
        )

    def extra_repr(self) -> str:
        """The quantized dtype and axis."""
        return f"output_dtype={self.output_dtype}, axis={self.axis}"


class ActivationDequantize(nn.Module):
    """``dequantize(q, scale, zero_point=, minval=, axis=, input_dtype=, output_dtype=)``
    with ``torch.ops.coreai_opt.dequantize`` (coreai-torch's
    ``ActivationDequantizeModule``'s buffers, attributes and arguments)."""

    def __init__(
        self,
        scale: torch.Tensor,
        zero_point: torch.Tensor | None = None,
        minval: torch.Tensor | None = None,
        axis: int = 0,
        input_dtype: torch.dtype | None = None,
        output_dtype: torch.dtype | None = None,
    ) -> None:
        """Store the qparams; *input_dtype* is the logical integer dtype of the codes,
        *output_dtype* the dtype of the result."""
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.register_buffer("minval", minval)
        self.axis = axis
        self.input_dtype = input_dtype
        self.output_dtype = output_dtype

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """The values the codes *input_tensor* stand for."""
        return _ops.coreai_dequantize(
            input_tensor,
            self.scale,
            zero_point=self.zero_point,
            minval=self.minval,
            axis=self.axis,
            input_dtype=self.input_dtype,
            output_dtype=self.output_dtype,
        )

    def extra_repr(self) -> str:
        """Axis and dtypes."""
        return f"axis={self.axis}, input_dtype={self.input_dtype}, output_dtype={self.output_dtype}"


def _coreai_classes() -> dict[str, type]:
    """coreai-torch's module classes (and the parametrization subclass), built once."""
    if not _COREAI_CLASSES:
        from coreai_torch._compression.custom_layers import (
            ActivationDequantizeModule,
            ActivationQuantizeModule,
            WeightDequantizeModule,
        )

        class CoreAIWeightDequantize(WeightDequantizeModule):
            """coreai-torch's ``WeightDequantizeModule`` usable as a parametrization: its
            ``forward`` takes no tensor, a parametrization is called with the original."""

            def forward(self, original: torch.Tensor | None = None) -> torch.Tensor:
                """The dequantized weight (*original* is ignored)."""
                with _not_intercepted():
                    return super().forward()

        # Pickled by reference: this module's __getattr__ finds it again.
        CoreAIWeightDequantize.__module__ = __name__
        CoreAIWeightDequantize.__qualname__ = "CoreAIWeightDequantize"
        _COREAI_CLASSES.update(
            CoreAIWeightDequantize=CoreAIWeightDequantize,
            WeightDequantizeModule=WeightDequantizeModule,
            ActivationQuantizeModule=ActivationQuantizeModule,
            ActivationDequantizeModule=ActivationDequantizeModule,
        )
    return _COREAI_CLASSES


def __getattr__(name: str) -> Any:
    """``CoreAIWeightDequantize`` is created on first use (it needs coreai-torch)."""
    if name == "CoreAIWeightDequantize":
        return _coreai_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_weight_dequantize(module: object) -> bool:
    """True for a weight dequantize module of either library."""
    if isinstance(module, WeightDequantize):
        return True
    return bool(_COREAI_CLASSES) and isinstance(module, _COREAI_CLASSES["WeightDequantizeModule"])


def weight_dequantize(export: WeightExport, ops: ExportOps) -> nn.Module:
    """The dequantize parametrization of one exported weight, for the library of *ops*."""
    quantized = fp4_storage(export.quantized, ops) if export.dtype == FP4 else export.quantized
    args = (
        quantized,
        export.scale,
        export.zero_point,
        export.minval,
        export.input_dtype,
        export.output_dtype,
    )
    if ops.uses_coreai_torch:
        return _coreai_classes()["CoreAIWeightDequantize"](*args)
    return WeightDequantize(*args)


def activation_modules(export: ActivationExport, ops: ExportOps) -> nn.Sequential:
    """``Sequential(quantize=..., dequantize=...)`` of one activation fake-quantizer, with
    the modules of *ops*'s library: quantize to ``export.dtype``, dequantize to the compute
    dtype (``output_dtype``), ``axis`` the channel axis or 0."""
    axis = 0 if export.axis is None else export.axis
    if ops.uses_coreai_torch:
        classes = _coreai_classes()
        quantize_cls: Any = classes["ActivationQuantizeModule"]
        dequantize_cls: Any = classes["ActivationDequantizeModule"]
    else:
        quantize_cls, dequantize_cls = ActivationQuantize, ActivationDequantize
    quantize = quantize_cls(export.scale, export.dtype, export.zero_point, export.minval, axis=axis)
    dequantize = dequantize_cls(
        export.scale.clone(),
        None if export.zero_point is None else export.zero_point.clone(),
        None if export.minval is None else export.minval.clone(),
        axis=axis,
        input_dtype=export.input_dtype,
        output_dtype=export.compute_dtype,
    )
    return nn.Sequential(OrderedDict(quantize=quantize, dequantize=dequantize))
