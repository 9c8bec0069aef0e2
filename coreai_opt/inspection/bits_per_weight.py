"""``bits_per_weight``: the storage a model's weights take once its quantized tensors are packed.

Works on an eager-prepared model (weight fake-quantizers attached with
``torch.nn.utils.parametrize``) or any plain ``nn.Module``; a ``torch.fx.GraphModule``
(graph mode) is refused with a ``TypeError``.

Counting rules (all sizes in bits):

* A tensor read by a weight fake-quantizer costs ``numel x n_bits`` (the packed codes),
  plus one scale per block, plus the offsets per block:

  - scales at the spec's ``scale_dtype`` when it has one (8 bits for ``float8_e8m0fnu``,
    the MX formats), else at the weight's own (compute) dtype, which is what an export
    casts the scales to;
  - offsets: a float of the compute dtype per block for the ``minval`` formulation (the
    export keeps ``minval`` whatever the scheme), ``n_bits`` per block for an asymmetric
    zero point, none for a symmetric zero point (it is implied by the format).

  The number of blocks is ``numel / prod(fake_quantizer.get_block_size(shape))``. A
  fake-quantizer that is disabled, or whose block size does not divide the tensor, leaves
  the tensor in float: it is counted as a plain tensor.
* Every other parameter and persistent buffer costs ``numel x`` its dtype's size.
  Non-persistent buffers are not part of the model's state, and the fake-quantizers' own
  state (running min / max, stored scales and zero points, switches) is their
  bookkeeping: the scales that matter are already counted per block above.
* A tensor reachable under several names (tied weights) is counted once. When one of its
  holders quantizes it, the quantized count wins (the first such holder in module order).

``bits_per_weight`` divides the total by the number of *weight* elements: parameters and
tensors read by a weight fake-quantizer. Buffers (batch-norm statistics, ...) add to the
total but not to that count, so a float32 model without buffers is exactly 32 bits per
weight.

Example::

    result = bits_per_weight(prepared_model)
    print(f"{result.bits_per_weight:.3f} bits/weight, {result.total_bytes / 2**20:.2f} MiB")
    for name, entry in result.tensors.items():
        print(name, entry.element_bits, entry.scale_bits, entry.offset_bits, entry.total_bits)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from coreai_opt.config.spec import CompressionTargetTensor
from coreai_opt.quantization.spec._dtype_table import format_info
from coreai_opt.quantization.spec.errors import _BlockSizeMismatchError
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase
from coreai_opt.quantization.spec.granularity import block_size_for
from coreai_opt.quantization.spec.qformulation import QuantizationFormulation
from coreai_opt.quantization.spec.qscheme import QuantizationScheme

__all__ = [
    "BitsPerWeightResult",
    "TensorBits",
    "bits_per_weight",
    "plain_tensor_bits",
    "quantized_tensor_bits",
]

_ORIGINAL = "original"
"""Name parametrize gives the stored tensor of a single-tensor parametrization."""


def _dtype_bits(dtype: torch.dtype) -> int:
    """Bits one element of *dtype* occupies in memory (``bool`` takes a byte)."""
    return dtype.itemsize * 8


@dataclass(frozen=True)
class TensorBits:
    """What one tensor of the model costs (sizes in bits).

    Attributes:
        name: user-facing qualified name; a parametrized weight is reported as
            ``<module>.<name>``, not ``<module>.parametrizations.<name>.original``.
        numel: number of elements.
        dtype: the tensor's own dtype (for a quantized tensor, its compute dtype).
        is_buffer: True for a buffer, False for a parameter.
        quantized: True when a weight fake-quantizer packs it.
        quant_dtype: the quantized format (e.g. ``torch.int4``), None when not quantized.
        element_bits: bits per element: the format's ``n_bits`` when quantized, else the
            dtype's size.
        num_blocks: number of scales (1 per tensor, one per channel or block); 0 when not
            quantized.
        scale_bits: all scales together: ``num_blocks`` times the size of ``scale_dtype``
            (or of the compute dtype).
        offset_bits: all zero points / minvals together (0 for symmetric zero points).
        fake_quantizer: the module path of the fake-quantizer, None when not quantized.
        aliases: the tensor's other names (tied tensors), counted once under ``name``.
    """

    name: str
    numel: int
    dtype: torch.dtype
    is_buffer: bool
    quantized: bool
    quant_dtype: torch.dtype | None
    element_bits: int
    num_blocks: int
    scale_bits: int
    offset_bits: int
    fake_quantizer: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def payload_bits(self) -> int:
        """The elements themselves: ``numel * element_bits``."""
        return self.numel * self.element_bits

    @property
    def total_bits(self) -> int:
        """Payload, scales and offsets."""
        return self.payload_bits + self.scale_bits + self.offset_bits

    @property
    def is_weight(self) -> bool:
        """True for a parameter or a quantized tensor (what ``bits_per_weight`` divides by)."""
        return self.quantized or not self.is_buffer


@dataclass(frozen=True)
class BitsPerWeightResult:
    """The storage of a model's tensors, quantized tensors packed.

    Attributes:
        tensors: one entry per distinct tensor, keyed by its user-facing name, in module
            order (see :class:`TensorBits`).
        total_bits: every tensor counted once: ``quantized_bits + float_bits``.
        total_params: weight elements: parameters plus tensors read by a weight
            fake-quantizer (buffers excluded); ``quantized_params + float_params``.
        bits_per_weight: ``total_bits / total_params`` (0.0 for a model without weights).
        quantized_bits: the quantized tensors: codes, scales and offsets.
        float_bits: everything kept in its own dtype: parameters and persistent buffers.
        quantized_params: elements of the quantized tensors.
        float_params: elements of the parameters that are not quantized.
        buffer_bits: the part of ``float_bits`` that persistent buffers take.
    """

    tensors: Mapping[str, TensorBits]
    total_bits: int
    total_params: int
    bits_per_weight: float
    quantized_bits: int
    float_bits: int
    quantized_params: int
    float_params: int
    buffer_bits: int

    @property
    def total_bytes(self) -> float:
        """``total_bits / 8``."""
        return self.total_bits / 8

    @property
    def bits_per_quantized_weight(self) -> float:
        """``quantized_bits / quantized_params``, scales and offsets included (0.0 if none)."""
        return self.quantized_bits / self.quantized_params if self.quantized_params else 0.0


def plain_tensor_bits(name: str, tensor: torch.Tensor, *, is_buffer: bool = False) -> TensorBits:
    """What *tensor* costs kept in its own dtype: ``numel x`` the dtype's size.

    For callers that pair fake-quantizers with tensors themselves (see
    :func:`quantized_tensor_bits`) and count the other tensors too.
    """
    return TensorBits(
        name=name,
        numel=tensor.numel(),
        dtype=tensor.dtype,
        is_buffer=is_buffer,
        quantized=False,
        quant_dtype=None,
        element_bits=_dtype_bits(tensor.dtype),
        num_blocks=0,
        scale_bits=0,
        offset_bits=0,
    )


def _block_size(fq: FakeQuantizeImplBase, shape: torch.Size) -> tuple[int, ...]:
    get_block_size = getattr(fq, "get_block_size", None)
    if get_block_size is not None:
        return tuple(int(b) for b in get_block_size(shape))
    # A user implementation written against the bare base class: its granularity, if any,
    # tells the same thing.
    granularity = getattr(fq, "granularity", None)
    if granularity is None:
        raise TypeError(
            f"{type(fq).__name__} has neither get_block_size(shape) nor a granularity; "
            f"bits_per_weight cannot tell how many scales it stores"
        )
    target = getattr(fq, "quantization_target", CompressionTargetTensor.WEIGHT)
    return block_size_for(granularity, shape, target)


def _n_bits(fq: FakeQuantizeImplBase) -> int:
    n_bits = getattr(fq, "n_bits", None)
    if n_bits is not None:
        return int(n_bits)
    dtype = getattr(fq, "dtype", None)
    if dtype is None:
        raise TypeError(
            f"{type(fq).__name__} has neither n_bits nor dtype; bits_per_weight cannot tell "
            f"the size of its codes"
        )
    return format_info(dtype).n_bits


def _scale_dtype(fq: FakeQuantizeImplBase) -> torch.dtype | None:
    # The built-in fake-quantizers keep it on their qparams calculator.
    if (scale_dtype := getattr(fq, "scale_dtype", None)) is not None:
        return scale_dtype
    return getattr(getattr(fq, "qparams_calculator", None), "scale_dtype", None)


def quantized_tensor_bits(
    name: str,
    fake_quantizer: FakeQuantizeImplBase,
    tensor: torch.Tensor,
    *,
    fake_quantizer_name: str | None = None,
    is_buffer: bool = False,
) -> TensorBits | None:
    """What *tensor* costs once packed by *fake_quantizer* (the module docstring's rules).

    For callers that pair fake-quantizers with tensors themselves (``bits_per_weight``
    does it for eager models). Returns None when the fake-quantizer leaves the tensor in
    float: it is disabled, or its block size does not divide the tensor's shape.
    """
    if fake_quantizer.is_disabled():
        return None
    try:
        block = _block_size(fake_quantizer, tensor.shape)
    except _BlockSizeMismatchError:
        return None  # the fake-quantizer disables itself on this tensor at its first forward
    numel = tensor.numel()
    num_blocks = numel // math.prod(block) if numel else 0
    n_bits = _n_bits(fake_quantizer)
    compute_bits = _dtype_bits(tensor.dtype)
    scale_dtype = _scale_dtype(fake_quantizer)
    scale_bits = num_blocks * (compute_bits if scale_dtype is None else _dtype_bits(scale_dtype))
    qformulation = getattr(fake_quantizer, "qformulation", QuantizationFormulation.ZP)
    if qformulation is QuantizationFormulation.MINVAL:
        # The minval formulation stores its float offset whatever the scheme.
        offset_bits = num_blocks * compute_bits
    elif getattr(fake_quantizer, "qscheme", None) is QuantizationScheme.ASYMMETRIC:
        offset_bits = num_blocks * n_bits
    else:
        offset_bits = 0  # a symmetric zero point is fixed by the format
    return TensorBits(
        name=name,
        numel=numel,
        dtype=tensor.dtype,
        is_buffer=is_buffer,
        quantized=True,
        quant_dtype=getattr(fake_quantizer, "dtype", None),
        element_bits=n_bits,
        num_blocks=num_blocks,
        scale_bits=scale_bits,
        offset_bits=offset_bits,
        fake_quantizer=fake_quantizer_name,
    )


def _graph_mode_error(where: str) -> TypeError:
    return TypeError(
        f"bits_per_weight does not support graph mode ({where} is a torch.fx.GraphModule): "
        f"graph mode calls its weight fake-quantizers as graph nodes on the weights, not as "
        f"parametrizations of them, so the module does not record which tensor each one "
        f"packs. Pass the eager-prepared model (QuantizerConfig(execution_mode='eager')) or "
        f"the float nn.Module instead."
    )


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Every module under every name, except the fake-quantizers and what they hold."""
    yield prefix, module
    for name, child in module._modules.items():
        if child is None or isinstance(child, FakeQuantizeImplBase):
            continue
        yield from _walk(child, _join(prefix, name))


@dataclass
class _Holder:
    """One name under which a tensor is reachable."""

    name: str
    tensor: torch.Tensor
    is_buffer: bool
    fake_quantizer: FakeQuantizeImplBase | None = None
    fake_quantizer_name: str | None = None


def _own_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """``(name, tensor, is_buffer)`` for the parameters and persistent buffers of *module*."""
    for name, param in module._parameters.items():
        if param is not None:
            yield name, param, False
    for name, buffer in module._buffers.items():
        if buffer is not None and name not in module._non_persistent_buffers_set:
            yield name, buffer, True


def _holders(model: nn.Module) -> Iterator[_Holder]:
    """Every (name, tensor) of *model*, a parametrized tensor paired with its fake-quantizer."""
    for path, module in _walk(model):
        if isinstance(module, fx.GraphModule) and any(
            isinstance(m, FakeQuantizeImplBase) for m in module.modules()
        ):
            raise _graph_mode_error(f"submodule {path!r}")
        if not isinstance(module, parametrize.ParametrizationList):
            for name, tensor, is_buffer in _own_tensors(module):
                yield _Holder(_join(path, name), tensor, is_buffer)
            continue
        # <owner>.parametrizations.<tensor name>: report the tensor as <owner>.<tensor name>
        # and pair it with the list's fake-quantizer (parametrize applies the list in order;
        # a weight fake-quantizer is its first entry).
        parts = path.split(".")
        if len(parts) >= 2 and parts[-2] == "parametrizations":
            user_name = ".".join(parts[:-2] + parts[-1:])
        else:  # a list not placed by parametrize: keep its own path
            user_name = _join(path, _ORIGINAL)
        fq_index, fq = next(
            ((i, p) for i, p in enumerate(module) if isinstance(p, FakeQuantizeImplBase)),
            (None, None),
        )
        for name, tensor, is_buffer in _own_tensors(module):
            if name != _ORIGINAL:
                # original0, original1, ...: a parametrization stored as several tensors;
                # none of them is the tensor a fake-quantizer reads.
                yield _Holder(_join(path, name), tensor, is_buffer)
                continue
            yield _Holder(
                user_name,
                tensor,
                is_buffer,
                fq,
                None if fq is None else _join(path, str(fq_index)),
            )


def bits_per_weight(model: nn.Module) -> BitsPerWeightResult:
    """Count the storage of *model*'s tensors with its quantized weights packed.

    *model* is an eager-prepared model (weight fake-quantizers attached with
    ``torch.nn.utils.parametrize``, the tensor at
    ``<module>.parametrizations.<name>.original``, the fake-quantizer at
    ``<module>.parametrizations.<name>[0]``) or any plain ``nn.Module``. The counting
    rules are in the module docstring. The fake-quantizers do not need to have run: the
    number of blocks follows from their granularity and the tensor's shape.

    Raises:
        TypeError: *model* is not an ``nn.Module``, or it (or a submodule holding
            fake-quantizers) is a ``torch.fx.GraphModule``: graph mode is not supported.
    """
    if isinstance(model, fx.GraphModule):
        raise _graph_mode_error("the model")
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"bits_per_weight takes an nn.Module (eager-prepared or float), got "
            f"{type(model).__name__}"
        )
    # Group the names by tensor object first: a tied tensor is counted once, and quantized
    # when any of its holders quantizes it, whichever name comes first.
    by_tensor: dict[int, list[_Holder]] = {}
    for holder in _holders(model):
        by_tensor.setdefault(id(holder.tensor), []).append(holder)

    tensors: dict[str, TensorBits] = {}
    for holders in by_tensor.values():
        entry: TensorBits | None = None
        for holder in holders:
            if holder.fake_quantizer is not None:
                entry = quantized_tensor_bits(
                    holder.name,
                    holder.fake_quantizer,
                    holder.tensor,
                    fake_quantizer_name=holder.fake_quantizer_name,
                    is_buffer=holder.is_buffer,
                )
                if entry is not None:
                    break
        if entry is None:
            first = holders[0]
            entry = plain_tensor_bits(first.name, first.tensor, is_buffer=first.is_buffer)
        aliases = tuple(dict.fromkeys(h.name for h in holders if h.name != entry.name))
        tensors[entry.name] = dataclasses.replace(entry, aliases=aliases)

    quantized = [t for t in tensors.values() if t.quantized]
    plain = [t for t in tensors.values() if not t.quantized]
    quantized_bits = sum(t.total_bits for t in quantized)
    float_bits = sum(t.total_bits for t in plain)
    quantized_params = sum(t.numel for t in quantized)
    float_params = sum(t.numel for t in plain if t.is_weight)
    total_bits = quantized_bits + float_bits
    total_params = quantized_params + float_params
    return BitsPerWeightResult(
        tensors=tensors,
        total_bits=total_bits,
        total_params=total_params,
        bits_per_weight=total_bits / total_params if total_params else 0.0,
        quantized_bits=quantized_bits,
        float_bits=float_bits,
        quantized_params=quantized_params,
        float_params=float_params,
        buffer_bits=sum(t.total_bits for t in plain if t.is_buffer),
    )
