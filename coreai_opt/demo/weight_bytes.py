"""Bytes a quantized model's weights would take once packed, read from its fake-quantizers.

The counting rules are :func:`coreai_opt.inspection.bits_per_weight`'s:

* a tensor read by a weight fake-quantizer costs ``numel x n_bits`` (the packed payload),
  plus one scale per block at ``scale_dtype`` (8 bits for E8M0) or else at the weight's
  own dtype, plus offsets: a float (weight dtype) per block for the minval formulation,
  ``n_bits`` per block for an asymmetric zero point, none for a symmetric zero point;
* every other entry of the state dict (parameters and persistent buffers, batch-norm
  statistics included) costs its dtype size; the fake-quantizers' own state is not
  counted, and a tensor reachable under several names counts once.

An eager-prepared or float model is counted by ``bits_per_weight`` itself. It refuses
graph mode, which the demo runs, so for a ``GraphModule`` this module pairs each weight
fake-quantizer with its tensor and counts every tensor with the same per-tensor rules
(``quantized_tensor_bits``, ``plain_tensor_bits``). In graph mode each weight
fake-quantizer is a root submodule ``activation_post_process_N`` called on the weight: on
the ``get_attr`` node itself, or on the conv-bn QAT form (``weight * bn_factor``). The
weight is the largest floating-point parameter upstream of the call that reaches it only
through tensor arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import fx, nn

from coreai_opt.config.spec import CompressionTargetTensor
from coreai_opt.inspection.bits_per_weight import (
    TensorBits,
    bits_per_weight,
    plain_tensor_bits,
    quantized_tensor_bits,
)
from coreai_opt.quantization._lifecycle import fake_quantizers
from coreai_opt.quantization.finalize._graph_common import fake_quantizer_calls
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase

__all__ = ["WeightBytes", "weight_bytes"]


@dataclass(frozen=True)
class WeightBytes:
    """A model's weight storage: quantized tensors packed, everything else as stored.

    Attributes:
        quantized: one entry per tensor read by a weight fake-quantizer (sizes in bits,
            see :class:`coreai_opt.inspection.bits_per_weight.TensorBits`).
        plain_bits: parameters and persistent buffers that are not quantized.
        plain_numel: their element count.
    """

    quantized: tuple[TensorBits, ...]
    plain_bits: int
    plain_numel: int

    @property
    def total_bits(self) -> int:
        """Every tensor counted once."""
        return self.plain_bits + sum(t.total_bits for t in self.quantized)

    @property
    def total_bytes(self) -> float:
        """``total_bits / 8``."""
        return self.total_bits / 8

    @property
    def quantized_bytes(self) -> float:
        """The quantized tensors: payload, scales and offsets."""
        return sum(t.total_bits for t in self.quantized) / 8

    @property
    def plain_bytes(self) -> float:
        """The tensors left in their own dtype."""
        return self.plain_bits / 8

    @property
    def bits_per_quantized_weight(self) -> float:
        """Average bits per element of the quantized tensors, scales included (0 if none)."""
        numel = sum(t.numel for t in self.quantized)
        return sum(t.total_bits for t in self.quantized) / numel if numel else 0.0


def _summarize(entries: Iterable[TensorBits]) -> WeightBytes:
    """Keep the quantized entries and total the plain ones (each tensor counted once)."""
    counted = list(entries)
    plain = [t for t in counted if not t.quantized]
    return WeightBytes(
        tuple(t for t in counted if t.quantized),
        sum(t.total_bits for t in plain),
        sum(t.numel for t in plain),
    )


def _upstream_parameter(node: fx.Node, params: dict[str, torch.Tensor]) -> str | None:
    """The largest floating-point parameter read (through ``call_function`` nodes) by *node*."""
    best: tuple[int, str] | None = None
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op == "get_attr":
            tensor = params.get(str(current.target))
            if tensor is not None and tensor.is_floating_point():
                candidate = (tensor.numel(), str(current.target))
                if best is None or candidate[0] > best[0]:
                    best = candidate
        elif current.op == "call_function":
            stack.extend(n for n in current.all_input_nodes)
    return None if best is None else best[1]


def _tensor_of_fake_quantizer(
    fq_name: str,
    fq: FakeQuantizeImplBase,
    params: dict[str, torch.Tensor],
    calls: dict[str, list[fx.Node]],
) -> str:
    """The state-dict name of the tensor *fq* reads; *calls*: ``call_module`` nodes by target."""
    fqn = fq.tensor_fqn
    if fqn in params:
        return fqn
    for node in calls.get(fq_name, ()):
        source = node.args[0]
        if isinstance(source, fx.Node):
            name = _upstream_parameter(source, params)
            if name is not None:
                return name
    raise ValueError(
        f"cannot tell which parameter the weight fake-quantizer {fq_name!r} reads "
        f"(tensor_fqn={fqn!r})"
    )


def _eager_weight_bytes(model: nn.Module) -> WeightBytes:
    """``bits_per_weight``'s count, in this module's form."""
    return _summarize(bits_per_weight(model).tensors.values())


def _graph_weight_bytes(model: fx.GraphModule) -> WeightBytes:
    """Pair each enabled weight FQ with its tensor, then count every state-dict tensor."""
    all_fqs = fake_quantizers(model)
    fqs = {
        name: fq
        for name, fq in all_fqs.items()
        if fq.quantization_target is CompressionTargetTensor.WEIGHT and not fq.is_disabled()
    }
    fq_prefixes = tuple(f"{name}." for name in all_fqs)
    calls = {c.name: c.nodes for c in fake_quantizer_calls(model)}
    state = {
        name: tensor
        for name, tensor in model.state_dict(keep_vars=True).items()
        if not name.startswith(fq_prefixes)
    }
    buffer_ids = {id(b) for b in model.buffers()}
    # By tensor object: a tensor under several names (a shared weight) counts once.
    entries: dict[int, TensorBits] = {}
    for fq_name, fq in fqs.items():
        tensor_name = _tensor_of_fake_quantizer(fq_name, fq, state, calls)
        tensor = state[tensor_name]
        if id(tensor) in entries:
            continue  # a shared weight: counted with its first fake-quantizer
        entry = quantized_tensor_bits(tensor_name, fq, tensor, fake_quantizer_name=fq_name)
        if entry is not None:  # None: the block size does not fit, the tensor stays float
            entries[id(tensor)] = entry
    for name, tensor in state.items():
        if id(tensor) not in entries:
            is_buffer = id(tensor) in buffer_ids
            entries[id(tensor)] = plain_tensor_bits(name, tensor, is_buffer=is_buffer)
    return _summarize(entries.values())


def weight_bytes(model: nn.Module) -> WeightBytes:
    """Count the packed weight storage of *model* (a prepared GraphModule or any module).

    A model without fake-quantizers (the float model) counts every state-dict tensor at
    its dtype size. Raises ``ValueError`` when a graph-mode weight fake-quantizer's tensor
    cannot be found.
    """
    if isinstance(model, fx.GraphModule):
        return _graph_weight_bytes(model)
    return _eager_weight_bytes(model)
