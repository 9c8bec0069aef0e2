"""A weight fake-quantizer and its dense weight in the reference's storage layout.

:func:`export_weight` turns the FQ's stored qparams and the dense weight into what a Core AI
``blockwise_shift_scale`` node reads (and what the Core ML metadata describes):

- integer formats: codes ``clamp(round(w / s) + zp, qmin, qmax)`` (ZP) or
  ``clamp(round((w - minval) / s) + qmin, qmin, qmax)`` (MINVAL) in an int8 / uint8
  container, with the logical dtype (``torch.int4``, ...) as ``input_dtype``; ZP keeps the
  zero point (cast to the container dtype) and drops minval, MINVAL the opposite;
- FP8: codes ``cast(clamp(w / s, -max, max))`` in the float8 dtype, ``input_dtype`` None;
- FP4 (weights only, resolved block ``(1, ..., 1, 32)``): codes packed two a byte in uint8,
  the even index in the low nibble, ``input_dtype`` None.

Scales (and minval) are cast to the compute dtype (the weight's) before the weight is
quantized with them, as in the reference, so the codes match what the exported graph
dequantizes. E8M0 scales are stored as ``float8_e8m0fnu`` with ``output_dtype`` = the
compute dtype (a power-of-two dtype cannot be a result dtype); they quantize in float32,
where they are exact. Codes are computed in float32 with the formulas of the fake-quantize
kernels, so with a float32 weight they equal the codes the prepared model used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from coreai_opt import _ops
from coreai_opt._export_backend import ExportBackend
from coreai_opt.quantization.finalize._checks import refuse_dynamic
from coreai_opt.quantization.spec._dtype_table import format_info, quant_range
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase
from coreai_opt.quantization.spec.granularity import PerBlockGranularity
from coreai_opt.quantization.spec.qformulation import QuantizationFormulation

__all__ = [
    "FP4_BLOCK",
    "WeightExport",
    "block_view",
    "check_weight_exportable",
    "export_weight",
    "lowest_code",
    "ops_minval",
]

FP4 = torch.float4_e2m1fn_x2
E8M0 = torch.float8_e8m0fnu
FP4_BLOCK = 32
"""The only FP4 block size the exporters take (OCP MX): along the last dimension."""


@dataclass
class WeightExport:
    """One quantized weight in storage form (the arguments of ``blockwise_shift_scale``).

    ``quantized`` has the weight's shape (FP4: last dimension halved, two codes a byte);
    ``scale`` / ``zero_point`` / ``minval`` have the weight's rank with one entry per block.
    """

    quantized: torch.Tensor
    """int8 / uint8 codes, float8 codes, or FP4 codes packed in uint8."""
    scale: torch.Tensor
    """In the compute dtype, or ``float8_e8m0fnu`` for E8M0 scales."""
    zero_point: torch.Tensor | None
    """In the container dtype (ZP formulation of integer formats), else None."""
    minval: torch.Tensor | None
    """In the compute dtype (MINVAL formulation), else None."""
    input_dtype: torch.dtype | None
    """The logical integer dtype (``torch.int4``, ...); None for float formats."""
    output_dtype: torch.dtype | None
    """The compute dtype when the scale is E8M0 (then required), else None."""
    dtype: torch.dtype
    """The fake-quantizer's quantization dtype."""
    compute_dtype: torch.dtype
    """The dense weight's dtype, which the dequantized weight has again."""

    @property
    def n_bits(self) -> int:
        """Bits per code."""
        return format_info(self.dtype).n_bits

    def dequantize(self) -> torch.Tensor:
        """The dense weight these codes stand for, in the compute dtype.

        Computed in float32 as the fake-quantize kernels do (``(q - zp) * s``,
        ``(q - qmin) * s + minval``, ``q * s``), then cast: with a float32 weight this is
        exactly the prepared model's fake-quantized weight.
        """
        shape = self.logical_shape
        view, qview = block_view(shape, self.scale.shape)
        scale = self.scale.float().reshape(qview)
        codes = _ops.unpack(self.quantized, FP4) if self.dtype == FP4 else self.quantized.float()
        codes = codes.reshape(view)
        if self.zero_point is not None:
            values = (codes - self.zero_point.float().reshape(qview)) * scale
        elif self.minval is not None:
            offset = self.minval.float().reshape(qview)
            values = (codes - lowest_code(self.dtype)) * scale + offset
        else:
            values = codes * scale
        return values.reshape(shape).to(self.compute_dtype)

    @property
    def logical_shape(self) -> tuple[int, ...]:
        """The dense weight's shape (FP4: twice the packed last dimension)."""
        shape = tuple(self.quantized.shape)
        if self.dtype == FP4:
            return (*shape[:-1], shape[-1] * 2)
        return shape


def lowest_code(dtype: torch.dtype) -> float:
    """The lowest code of integer format *dtype* (``-2^(n-1)`` signed, 0 unsigned): the
    offset of the MINVAL formulation in the Core AI ops."""
    return quant_range(dtype, narrow=False)[0]


def ops_minval(
    minval: torch.Tensor, scale: torch.Tensor, quant_min: float, dtype: torch.dtype
) -> torch.Tensor:
    """*minval* (compute dtype) as the Core AI ops need it for a FQ whose codes start at
    *quant_min*.

    The ops offset MINVAL codes by the format's lowest code, the FQ by its own quant_min;
    they differ for symmetric_with_clipping (-127 vs -128). Shifting minval by the
    difference (in steps of *scale*) makes the exported graph dequantize to the FQ's
    values (the reference keeps minval and is off by one step there).
    """
    dtype_min = lowest_code(dtype)
    if quant_min == dtype_min:
        return minval
    return (minval.float() + (dtype_min - quant_min) * scale.float()).to(minval.dtype)


def block_view(
    shape: tuple[int, ...] | torch.Size, qshape: tuple[int, ...] | torch.Size
) -> tuple[list[int], list[int]]:
    """Views in which a qparam of *qshape* (one entry per block, the tensor's rank)
    broadcasts over a tensor of *shape* without being repeated to full size: each
    dimension splits into (entries, block). Returns (tensor view shape, qparam view shape);
    a contiguous tensor and its qparam take them with ``reshape``.

    Raises:
        ValueError: the ranks differ or a qparam dimension does not divide the tensor's.
    """
    shape = tuple(int(d) for d in shape)
    qshape = tuple(int(d) for d in qshape)
    if len(qshape) != len(shape):
        raise ValueError(
            f"qparams of shape {qshape} do not fit a tensor of shape {shape}: "
            f"they need the tensor's rank ({len(shape)})"
        )
    view: list[int] = []
    qview: list[int] = []
    for dim, (size, blocks) in enumerate(zip(shape, qshape, strict=True)):
        if blocks == 0 or size % blocks:
            raise ValueError(
                f"qparams of shape {qshape} do not fit a tensor of shape {shape}: "
                f"dimension {dim} ({blocks} entries) does not divide {size}"
            )
        view += [blocks, size // blocks]
        qview += [blocks, 1]
    return view, qview


def check_weight_exportable(
    fq: FakeQuantizeImplBase, shape: tuple[int, ...] | torch.Size, name: str = "<weight>"
) -> None:
    """Refuse what :func:`export_weight` cannot convert, from the format and the shape
    alone (finalize checks every weight before it changes the model).

    Raises:
        ValueError: FP4 without ``PerBlockGranularity`` resolving to ``(1, ..., 1, 32)``.
        NotImplementedError: *fq* recomputes its qparams on every forward (stateless).
    """
    refuse_dynamic({name: fq}, ExportBackend.CoreAI)
    if fq.dtype == FP4:
        _check_fp4(fq, tuple(int(d) for d in shape), name)


def _check_fp4(fq: FakeQuantizeImplBase, shape: tuple[int, ...], name: str) -> None:
    """FP4 weights: ``PerBlockGranularity`` whose resolved block is ``(1, ..., 1, 32)``."""
    granularity = fq.granularity
    if not isinstance(granularity, PerBlockGranularity):
        raise ValueError(
            f"FP4 (float4_e2m1fn_x2) export of weight {name!r} requires PerBlockGranularity "
            f"with blocks of {FP4_BLOCK} along the last dimension; got {granularity!r}"
        )
    block = tuple(fq.get_block_size(shape))
    wanted = (1,) * (len(shape) - 1) + (FP4_BLOCK,)
    if block != wanted:
        raise ValueError(
            f"FP4 (float4_e2m1fn_x2) export of weight {name!r} (shape {shape}) requires the "
            f"resolved block sizes {wanted} (blocks of {FP4_BLOCK} along the last dimension, "
            f"no blocking elsewhere); got {block} from granularity={granularity!r}"
        )


def export_weight(
    fq: FakeQuantizeImplBase, weight: torch.Tensor, name: str = "<weight>"
) -> WeightExport:
    """Quantize the dense *weight* with *fq*'s stored qparams into storage form.

    Args:
        fq: the weight's fake-quantizer (a built-in implementation or one with the same
            attributes: ``dtype``, ``qformulation``, ``quant_min`` / ``quant_max``,
            ``calculate_qparams()``, ``qparams_calculator.e8m0``).
        weight: the dense floating-point weight the FQ quantizes.
        name: the weight's name, for error messages.

    Raises:
        TypeError: *weight* is not floating-point.
        ValueError: FP4 with a granularity other than blocks of 32 along the last
            dimension, or qparams whose shape does not fit the weight.
        NotImplementedError: *fq* recomputes its qparams on every forward (stateless).
    """
    if not weight.is_floating_point():
        raise TypeError(f"weight {name!r} has dtype {weight.dtype}; only float weights quantize")
    check_weight_exportable(fq, weight.shape, name)
    dtype: torch.dtype = fq.dtype
    info = format_info(dtype)
    shape = tuple(weight.shape)
    compute = weight.dtype
    e8m0 = bool(getattr(fq.qparams_calculator, "e8m0", False))
    with torch.no_grad():
        scale, zero_point, minval = (
            t.detach() if t is not None else t for t in fq.calculate_qparams()
        )
        # The reference casts the scale to the compute dtype before quantizing; an E8M0
        # scale is a power of two, exact in float32 (a float16 cast could underflow it).
        scale_c = scale.float() if e8m0 else scale.to(compute)
        # Blocked views: each qparam broadcasts over its block (no full-size copies).
        view, qview = block_view(shape, scale.shape)
        block_scale = scale_c.float().reshape(qview)
        w = weight.detach().float().reshape(view)
        if info.is_float:
            scaled = (w / block_scale).clamp(-info.max_abs, info.max_abs).reshape(shape)
            quantized = _ops.pack(scaled, FP4) if dtype == FP4 else scaled.to(dtype)
            return WeightExport(
                quantized=quantized,
                scale=scale.to(E8M0) if e8m0 else scale_c,
                zero_point=None,
                minval=None,
                input_dtype=None,
                output_dtype=compute if e8m0 else None,
                dtype=dtype,
                compute_dtype=compute,
            )
        qmin, qmax = float(fq.quant_min), float(fq.quant_max)
        storage = getattr(torch, info.storage)
        if QuantizationFormulation(fq.qformulation) is QuantizationFormulation.MINVAL:
            if minval is None:
                raise ValueError(f"weight {name!r}: qformulation='minval' but no minval stored")
            minval_c = minval.to(compute)
            offset = minval_c.float().reshape(qview)
            codes = (torch.round((w - offset) / block_scale) + qmin).clamp(qmin, qmax)
            zp_out, minval_out = None, ops_minval(minval_c, scale_c, qmin, dtype)
        else:
            if zero_point is None:
                raise ValueError(f"weight {name!r}: qformulation='zp' but no zero_point stored")
            zp = zero_point.float().reshape(qview)
            codes = (torch.round(w / block_scale) + zp).clamp(qmin, qmax)
            zp_out, minval_out = zero_point.to(storage), None
        return WeightExport(
            quantized=codes.reshape(shape).to(storage),
            scale=scale_c,
            zero_point=zp_out,
            minval=minval_out,
            input_dtype=dtype,
            output_dtype=None,
            dtype=dtype,
            compute_dtype=compute,
        )
