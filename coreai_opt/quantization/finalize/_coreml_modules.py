"""The Core ML form of a quantized activation: ``torch.quantize_per_tensor`` + dequantize.

coremltools converts a traced ``quantize_per_tensor`` → ``dequantize`` pair into MIL
quantize / dequantize ops. :func:`mil_activation_module` builds the
``Sequential(quantize=..., dequantize=...)`` that replaces an activation fake-quantizer
(graph mode calls it ``_mil_act_quant_<node name>``; eager mode puts it at the FQ's
attribute). Only per-tensor int8 / uint8 qparams reach it (the Core ML gates).
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
from torch import nn

from coreai_opt.quantization.spec._dtype_table import format_info
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase

__all__ = [
    "MILActivationDequantize",
    "MILActivationQuantize",
    "mil_activation_module",
    "mil_module_name",
]

_QTYPES = {torch.int8: torch.qint8, torch.uint8: torch.quint8}


class MILActivationQuantize(nn.Module):
    """``torch.quantize_per_tensor(x, scale, zero_point, dtype)`` (buffers scale, zero_point).

    Inputs that are not float32 are quantized from float32 (``quantize_per_tensor`` takes
    float32 only).
    """

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, dtype: torch.dtype) -> None:
        """*scale* (float32) and *zero_point* (int8 / uint8) of one element; *dtype* is
        ``torch.qint8`` or ``torch.quint8``."""
        super().__init__()
        if dtype not in _QTYPES.values():
            raise ValueError(f"dtype must be torch.qint8 or torch.quint8, got {dtype}")
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.dtype = dtype
        self.axis: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The quantized *x* (a ``torch.qint8`` / ``torch.quint8`` tensor)."""
        if x.dtype != torch.float32:
            x = x.float()
        return torch.quantize_per_tensor(x, self.scale, self.zero_point, self.dtype)

    def extra_repr(self) -> str:
        """The quantized dtype."""
        return f"dtype={self.dtype}"


class MILActivationDequantize(nn.Module):
    """``x.dequantize()``, cast back to the activation's dtype when that is not float32."""

    def __init__(self, output_dtype: torch.dtype = torch.float32) -> None:
        """*output_dtype*: the activation's dtype."""
        super().__init__()
        self.output_dtype = output_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The dequantized *x*."""
        y = x.dequantize()
        return y if self.output_dtype == torch.float32 else y.to(self.output_dtype)

    def extra_repr(self) -> str:
        """The output dtype."""
        return f"output_dtype={self.output_dtype}"


def mil_activation_module(
    fq: FakeQuantizeImplBase, compute_dtype: torch.dtype = torch.float32
) -> nn.Sequential:
    """``Sequential(quantize=MILActivationQuantize, dequantize=MILActivationDequantize)``
    with *fq*'s stored per-tensor qparams (float32 scale, zero point in the FQ's dtype).

    The caller has run :func:`~coreai_opt.quantization.finalize._checks.check_coreml_activation`.
    """
    scale, zero_point, _ = fq.calculate_qparams()
    storage = getattr(torch, format_info(fq.dtype).storage)
    with torch.no_grad():
        quantize = MILActivationQuantize(
            scale.detach().float().clone(),
            zero_point.detach().to(storage),
            _QTYPES[storage],
        )
    return nn.Sequential(
        OrderedDict(quantize=quantize, dequantize=MILActivationDequantize(compute_dtype))
    )


def mil_module_name(node_name: str) -> str:
    """``_mil_act_quant_<node_name>`` with every character that is not a letter, digit or
    underscore replaced by ``_`` (a valid attribute name)."""
    return "_mil_act_quant_" + re.sub(r"\W", "_", node_name)
