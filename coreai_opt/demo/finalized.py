"""The bytes a model stores, and the Core AI-finalized copy of a prepared model.

:func:`state_bytes` counts what a model's ``state_dict`` holds: every parameter and
persistent buffer at its actual storage size (``nbytes``), so

* zero-size placeholders (the dense weights finalize leaves behind) count 0;
* a tensor reachable under several names (tied weights, shared qparams) counts once: the
  tensors are grouped by storage (``untyped_storage().data_ptr()``) and the byte ranges
  of the views of one storage are merged;
* a wrapper tensor subclass (coreai-torch's ``Float4Tensor``, which reports the logical
  FP4 shape in ``uint8`` but holds the codes packed two a byte) counts the plain tensors
  it wraps (``__tensor_flatten__``), i.e. the packed bytes;
* the prepared marker (``_coreai_opt_prepared``, non-persistent, but a deep copy of a
  prepared ``GraphModule`` registers it again as a persistent buffer) and every other
  non-persistent buffer are left out.

:func:`finalize_copy` finalizes a deep copy of a prepared model to Core AI (the prepared
model is left as it is) and :func:`finalize_and_compare` also returns the share of
inputs on which the finalized model predicts what the prepared model predicted.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from coreai_opt import ExportBackend
from coreai_opt.demo.train import predict
from coreai_opt.quantization import Quantizer
from coreai_opt.quantization._lifecycle import PREPARED_MARKER

__all__ = [
    "FinalizedModel",
    "StateBytes",
    "finalize_and_compare",
    "finalize_copy",
    "state_bytes",
]


@dataclass(frozen=True)
class StateBytes:
    """What a model's state dict stores.

    Attributes:
        total: bytes, every storage counted once.
        by_dtype: bytes per dtype name of the stored (innermost) tensors, e.g.
            ``{"int8": ..., "float32": ...}``; FP4 codes wrapped by coreai-torch count as
            ``uint8`` (packed two a byte).
        tensors: state-dict entries counted (the prepared marker excluded).
        empty: entries with no elements (the finalized models' dense-weight placeholders).
    """

    total: int
    by_dtype: dict[str, int]
    tensors: int
    empty: int


def _plain_tensors(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """*tensor*, or the plain tensors inside a traceable wrapper subclass (recursively)."""
    if is_traceable_wrapper_subclass(tensor):
        names, _ = tensor.__tensor_flatten__()  # type: ignore[attr-defined]
        for name in names:
            yield from _plain_tensors(getattr(tensor, name))
    else:
        yield tensor


def _merged_length(ranges: list[tuple[int, int]]) -> int:
    """Bytes covered by the half-open ranges ``[start, end)``, overlaps counted once."""
    total = 0
    end_so_far = -1
    for start, end in sorted(ranges):
        if start >= end_so_far:
            total += end - start
            end_so_far = end
        elif end > end_so_far:
            total += end - end_so_far
            end_so_far = end
    return total


def _is_marker(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == PREPARED_MARKER


def state_bytes(model: nn.Module) -> StateBytes:
    """The bytes of *model*'s parameters and persistent buffers (see the module docstring)."""
    state = {
        name: tensor
        for name, tensor in model.state_dict(keep_vars=True).items()
        if not _is_marker(name)
    }
    ranges: dict[int, list[tuple[int, int]]] = {}
    dtypes: dict[int, str] = {}
    empty = 0
    for tensor in state.values():
        plain = [t for t in _plain_tensors(tensor.detach()) if t.numel() > 0]
        if not plain:
            empty += 1
        for t in plain:
            key = t.untyped_storage().data_ptr()
            start = t.storage_offset() * t.element_size()
            ranges.setdefault(key, []).append((start, start + t.nbytes))
            dtypes.setdefault(key, str(t.dtype).removeprefix("torch."))
    by_dtype: dict[str, int] = {}
    for key, spans in ranges.items():
        by_dtype[dtypes[key]] = by_dtype.get(dtypes[key], 0) + _merged_length(spans)
    return StateBytes(sum(by_dtype.values()), dict(sorted(by_dtype.items())), len(state), empty)


def finalize_copy(quantizer: Quantizer, prepared: nn.Module) -> nn.Module:
    """``quantizer.finalize(deepcopy(prepared), backend=ExportBackend.CoreAI)`` in eval mode.

    The prepared model is not changed (finalize converts the copy in place). Raises what
    finalize raises, e.g. ``NotImplementedError`` for dynamic fake-quantizers and
    ``ValueError`` (``FinalizeNodeError``) for what Core AI cannot express (FP4 or
    per-block activations).
    """
    return quantizer.finalize(copy.deepcopy(prepared), backend=ExportBackend.CoreAI).eval()


@dataclass(frozen=True)
class FinalizedModel:
    """A prepared model's Core AI-finalized copy, measured.

    Attributes:
        model: the finalized copy.
        bytes: what its state dict stores (:func:`state_bytes`).
        agreement: share of the inputs on which its prediction (argmax) equals the
            prepared model's.
        max_abs_diff: the largest absolute difference of the two models' outputs.
    """

    model: nn.Module
    bytes: StateBytes
    agreement: float
    max_abs_diff: float


@torch.no_grad()
def finalize_and_compare(
    quantizer: Quantizer,
    prepared: nn.Module,
    inputs: torch.Tensor,
    prepared_outputs: torch.Tensor,
    batch_size: int = 512,
) -> FinalizedModel:
    """Finalize a copy of *prepared* (:func:`finalize_copy`), count its bytes and compare
    its outputs on *inputs* with *prepared_outputs* (the prepared model's, same order)."""
    finalized = finalize_copy(quantizer, prepared)
    outputs = predict(finalized, inputs, batch_size)
    agreement = (outputs.argmax(-1) == prepared_outputs.argmax(-1)).double().mean().item()
    max_abs_diff = (outputs.float() - prepared_outputs.float()).abs().max().item()
    return FinalizedModel(finalized, state_bytes(finalized), agreement, max_abs_diff)
