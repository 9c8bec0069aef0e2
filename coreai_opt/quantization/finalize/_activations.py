"""An activation fake-quantizer's qparams in the form Core AI's quantize / dequantize take.

:func:`export_activation_qparams` gives per-tensor qparams as 0-d tensors and per-channel
ones flattened to 1-D with their ``axis``; per-block qparams and FP4 activations have no
such form and are refused (an activation export handler registered for the granularity
takes over before this is called). Scales (and minval) are cast to the compute dtype (the
activation's), E8M0 scales stored as ``float8_e8m0fnu``; the dequantize result dtype
(``output_dtype``) is always the compute dtype. ZP keeps the zero point in the container
dtype (int8 / uint8) and drops minval, MINVAL the opposite; float formats have neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from coreai_opt import _ops
from coreai_opt._export_backend import ExportBackend
from coreai_opt.quantization.finalize._checks import refuse_dynamic
from coreai_opt.quantization.finalize._weights import ops_minval
from coreai_opt.quantization.spec._dtype_table import format_info
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase
from coreai_opt.quantization.spec.granularity import (
    PerChannelGranularity,
    PerTensorGranularity,
)
from coreai_opt.quantization.spec.qformulation import QuantizationFormulation

__all__ = [
    "SUPPORTED_ACTIVATION_GRANULARITIES",
    "ActivationExport",
    "check_activation_exportable",
    "export_activation_qparams",
    "observed_compute_dtype",
]

FP4 = torch.float4_e2m1fn_x2
E8M0 = torch.float8_e8m0fnu
SUPPORTED_ACTIVATION_GRANULARITIES: tuple[type, ...] = (PerTensorGranularity, PerChannelGranularity)
"""Activation granularities the built-in Core AI export expresses (0-d / 1-D qparams)."""

_HANDLER_HINT = (
    "register an activation export handler for this granularity "
    "(coreai_opt.quantization.finalize.register_graph_activation_export_handler / "
    "register_eager_activation_export_handler), or finalize with backend=ExportBackend._TORCH"
)


@dataclass
class ActivationExport:
    """Qparams of one activation fake-quantizer for ``quantize`` / ``dequantize``."""

    scale: torch.Tensor
    """0-d (per tensor) or 1-D (per channel); compute dtype or ``float8_e8m0fnu``."""
    zero_point: torch.Tensor | None
    """Scale's shape, container dtype (int8 / uint8); ZP formulation of integer formats."""
    minval: torch.Tensor | None
    """Scale's shape, compute dtype; MINVAL formulation."""
    axis: int | None
    """The channel axis (non-negative) for per-channel qparams, else None."""
    dtype: torch.dtype
    """The quantized dtype (``quantize``'s ``output_dtype``): the FQ's dtype."""
    input_dtype: torch.dtype | None
    """``dequantize``'s ``input_dtype``: the integer dtype, None for float formats."""
    compute_dtype: torch.dtype
    """The activation's dtype: ``dequantize``'s ``output_dtype``."""

    @property
    def storage_dtype(self) -> torch.dtype:
        """The dtype that holds one code (int8 / uint8 / float8); a quantized cache has it."""
        return getattr(torch, format_info(self.dtype).storage)

    def quantize_kwargs(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """``quantize``'s keyword arguments, omitting those that are None.

        *tensors* maps ``"zero_point"`` / ``"minval"`` to what the call should pass for them
        (graph nodes, or the tensors themselves).
        """
        kwargs: dict[str, Any] = {}
        if self.zero_point is not None:
            kwargs["zero_point"] = tensors["zero_point"]
        if self.minval is not None:
            kwargs["minval"] = tensors["minval"]
        if self.axis is not None:
            kwargs["axis"] = self.axis
        return kwargs

    def quantize_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """*x* quantized by the ``quantize`` op, stored in :attr:`storage_dtype`.

        For state that finalize converts itself (a KV cache buffer). *x*, the scale and the
        minval are taken in float32 (the fake-quantizer computed in float32), so integer
        codes are ``clamp(round(x / s) + zp)`` or ``clamp(round((x - minval) / s) + qmin)``
        over the format's range and float codes ``cast(clamp(x / s))``.
        """
        scale = self.scale if self.scale.dtype == torch.float8_e8m0fnu else self.scale.float()
        codes = _ops.coreai_quantize(
            x.detach().float(),
            scale,
            self.dtype,
            zero_point=self.zero_point,
            minval=None if self.minval is None else self.minval.float(),
            axis=0 if self.axis is None else self.axis,
        )
        return codes if codes.dtype == self.storage_dtype else codes.view(self.storage_dtype)

    def dequantize_kwargs(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """``dequantize``'s keyword arguments, omitting those that are None (the order is
        the reference's: output_dtype, offsets, input_dtype, axis)."""
        kwargs: dict[str, Any] = {"output_dtype": self.compute_dtype}
        if self.zero_point is not None:
            kwargs["zero_point"] = tensors["zero_point"]
        if self.minval is not None:
            kwargs["minval"] = tensors["minval"]
        if self.input_dtype is not None:
            kwargs["input_dtype"] = self.input_dtype
        if self.axis is not None:
            kwargs["axis"] = self.axis
        return kwargs


def observed_compute_dtype(fq: FakeQuantizeImplBase) -> torch.dtype:
    """The floating-point dtype the activation fake-quantizer observed (float32 when
    unknown)."""
    calc = getattr(fq, "qparams_calculator", None)
    dtype = getattr(calc, "_compute_dtype_for_export", None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def check_activation_exportable(fq: FakeQuantizeImplBase, name: str = "<activation>") -> None:
    """Refuse what :func:`export_activation_qparams` cannot convert (finalize checks every
    activation before it changes the model).

    Raises:
        ValueError: FP4 activations, or a granularity other than per-tensor / per-channel
            (the message lists the supported ones and points to the export handlers).
        NotImplementedError: *fq* recomputes its qparams on every forward (stateless).
    """
    refuse_dynamic({name: fq}, ExportBackend.CoreAI)
    granularity = fq.granularity
    if fq.dtype == FP4:
        raise ValueError(
            f"Core AI export does not support FP4 (float4_e2m1fn_x2) activation quantization "
            f"({name!r}, granularity={granularity!r}): FP4 needs per-block scales, and the "
            f"supported activation granularities are "
            f"{[g.__name__ for g in SUPPORTED_ACTIVATION_GRANULARITIES]}; {_HANDLER_HINT}"
        )
    if type(granularity) not in SUPPORTED_ACTIVATION_GRANULARITIES:
        raise ValueError(
            f"Core AI export does not support {type(granularity).__name__} on activations "
            f"({name!r}, granularity={granularity!r}): quantize / dequantize take 0-d or 1-D "
            f"qparams; supported activation granularities: "
            f"{[g.__name__ for g in SUPPORTED_ACTIVATION_GRANULARITIES]}; {_HANDLER_HINT}"
        )


def export_activation_qparams(
    fq: FakeQuantizeImplBase,
    compute_dtype: torch.dtype,
    rank: int | None = None,
    name: str = "<activation>",
) -> ActivationExport:
    """*fq*'s stored qparams in the form ``quantize`` / ``dequantize`` take.

    Args:
        fq: the activation's fake-quantizer.
        compute_dtype: the activation's dtype (scales and minval are cast to it).
        rank: the activation's rank, to resolve a negative per-channel axis (default: the
            rank the FQ observed).
        name: the fake-quantizer's name, for error messages.

    Raises:
        ValueError: FP4 activations, or a granularity other than per-tensor / per-channel
            (the message lists the supported ones).
        NotImplementedError: *fq* recomputes its qparams on every forward (stateless).
    """
    check_activation_exportable(fq, name)
    dtype: torch.dtype = fq.dtype
    info = format_info(dtype)
    e8m0 = bool(getattr(fq.qparams_calculator, "e8m0", False))
    granularity = fq.granularity
    with torch.no_grad():
        scale, zero_point, minval = (
            t.detach() if t is not None else t for t in fq.calculate_qparams()
        )
        axis: int | None = None
        if isinstance(granularity, PerChannelGranularity):
            if rank is None:
                rank = getattr(fq.qparams_calculator, "_input_rank", None) or scale.dim()
            axis = granularity.resolved_axis(rank)

        def shaped(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(()) if axis is None else t.reshape(-1)

        scale_c = shaped(scale).to(compute_dtype)
        zp_out = minval_out = None
        if not info.is_float:
            if QuantizationFormulation(fq.qformulation) is QuantizationFormulation.MINVAL:
                minval_c = shaped(minval).to(compute_dtype)
                minval_out = ops_minval(minval_c, scale_c, float(fq.quant_min), dtype)
            else:
                zp_out = shaped(zero_point).to(getattr(torch, info.storage))
        return ActivationExport(
            scale=shaped(scale).to(E8M0) if e8m0 else scale_c,
            zero_point=zp_out,
            minval=minval_out,
            axis=axis,
            dtype=dtype,
            input_dtype=None if info.is_float else dtype,
            compute_dtype=compute_dtype,
        )
