"""Eager-mode finalize to ``ExportBackend.CoreAI`` / ``CoreML``: the pipeline.

An eager-prepared model keeps its modules: weight fake-quantizers are parametrizations
(``<module>.parametrizations.<name>[0]``; a tied weight has one fake-quantizer registered
on every owner) and activation fake-quantizers are submodules whose paths the eager
runtime's tables name. Finalize replaces each in place, so the runtime calls what is put
at an activation fake-quantizer's path through its Python slot.

1. Refuse, before anything changes: a model without fake-quantizers (``ValueError``),
   dynamic fake-quantizers (``NotImplementedError`` naming them, unless a Core AI eager
   activation export handler covers them), the Core ML gates, and (Core AI) what the
   converters cannot express (FP4 weights not in blocks of 32 along the last dimension,
   FP4 or per-block activations without a handler), wrapped in ``FinalizeNodeError``
   (also a ``ValueError`` then); an unusable ``mmap_dir``.
2. Core AI: each weight fake-quantizer becomes a dequantize parametrization in the same
   slot (``_eager_modules``; one module for a tied weight), the dense original a zero-size
   placeholder; each activation fake-quantizer ``Sequential(quantize=..., dequantize=...)``
   under the same attribute name, or what the eager export handler for its granularity
   returns. With ``mmap_dir`` each dequantize module's buffers go to
   ``<module>.<param>.safetensors`` and are mapped back (``_mmap``).
3. Core ML: weight parametrizations are removed, the weight keeping its fake-quantized
   value, with the ``_COREML_/<param>/...`` buffers on every owning module; activation
   fake-quantizers become the ``torch.quantize_per_tensor`` Sequential; the root gets
   ``_COREML_/metadata_version``.
4. The eager runtime re-binds its tables to the new modules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from coreai_opt._export_backend import ExportBackend
from coreai_opt.quantization.finalize._activations import (
    check_activation_exportable,
    export_activation_qparams,
    observed_compute_dtype,
)
from coreai_opt.quantization.finalize._checks import (
    check_coreml_activation,
    check_coreml_weight,
    check_has_fake_quantizers,
    refuse_dynamic,
)
from coreai_opt.quantization.finalize._coreml_graph import (
    COREML_METADATA_VERSION,
    register_coreml_weight_metadata,
)
from coreai_opt.quantization.finalize._coreml_modules import mil_activation_module
from coreai_opt.quantization.finalize._eager_modules import (
    WEIGHT_BUFFERS,
    activation_modules,
    weight_dequantize,
)
from coreai_opt.quantization.finalize._errors import node_error
from coreai_opt.quantization.finalize._export_ops import ExportOps, select_export_ops
from coreai_opt.quantization.finalize._graph_common import zero_size_like
from coreai_opt.quantization.finalize._handlers import activation_handler
from coreai_opt.quantization.finalize._mmap import check_mmap_dir, map_tensors, open_mmap_dir
from coreai_opt.quantization.finalize._weights import check_weight_exportable, export_weight
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase

__all__ = ["EagerActivationFQ", "EagerWeightFQ", "eager_fake_quantizers", "finalize_eager"]


@dataclass
class _Owner:
    """One parametrization slot holding a weight fake-quantizer."""

    path: str
    """The owning module's qualified name ("" for the root)."""
    module: nn.Module
    tensor: str
    """The parametrized tensor's attribute name (``weight``)."""
    index: int
    """The fake-quantizer's position in the parametrization list."""

    @property
    def plist(self) -> parametrize.ParametrizationList:
        """The parametrization list of the tensor."""
        return self.module.parametrizations[self.tensor]  # type: ignore[index,return-value]

    @property
    def qualified(self) -> str:
        """``<module>.<tensor>`` (the tensor's name in the model)."""
        return f"{self.path}.{self.tensor}" if self.path else self.tensor


@dataclass
class EagerWeightFQ:
    """A weight fake-quantizer and every parametrization slot it occupies (a tied weight
    has several owners)."""

    fq: FakeQuantizeImplBase
    owners: list[_Owner] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The fake-quantizer's qualified name, ``<module>.parametrizations.<tensor>.<i>``
        of its first owner."""
        first = self.owners[0]
        prefix = f"{first.path}." if first.path else ""
        return f"{prefix}parametrizations.{first.tensor}.{first.index}"

    @property
    def tensor_name(self) -> str:
        """The first owner's ``<module>.<tensor>``."""
        return self.owners[0].qualified

    def dense(self) -> torch.Tensor:
        """The tensor the fake-quantizer receives: the original, through the
        parametrizations that come before it."""
        first = self.owners[0]
        plist = first.plist
        value = plist.original
        with torch.no_grad():
            for step in list(plist)[: first.index]:
                value = step(value)
        return value


@dataclass
class EagerActivationFQ:
    """An activation fake-quantizer and the submodule paths it is registered at."""

    fq: FakeQuantizeImplBase
    paths: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """Its first qualified name."""
        return self.paths[0]


def eager_fake_quantizers(model: nn.Module) -> tuple[list[EagerWeightFQ], list[EagerActivationFQ]]:
    """The weight (parametrization) and activation (submodule) fake-quantizers of the
    eager-prepared *model*, each once, in module order."""
    weights: dict[int, EagerWeightFQ] = {}
    activations: dict[int, EagerActivationFQ] = {}
    for path, module in model.named_modules():
        if isinstance(module, parametrize.ParametrizationList):
            continue
        if parametrize.is_parametrized(module):
            for tensor, plist in module.parametrizations.items():  # type: ignore[union-attr]
                for index, step in enumerate(plist):
                    if isinstance(step, FakeQuantizeImplBase):
                        entry = weights.setdefault(id(step), EagerWeightFQ(step))
                        entry.owners.append(_Owner(path, module, tensor, index))
        for attr, child in module._modules.items():
            if isinstance(child, FakeQuantizeImplBase):
                child_path = f"{path}.{attr}" if path else attr
                activations.setdefault(id(child), EagerActivationFQ(child)).paths.append(child_path)
    return list(weights.values()), list(activations.values())


def _handled(fq: FakeQuantizeImplBase) -> bool:
    """True when a eager activation export handler takes over *fq*."""
    return activation_handler(fq, "eager") is not None


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, module)


# -- checks --------------------------------------------------------------------------


def _check_coreai(weights: list[EagerWeightFQ], activations: list[EagerActivationFQ]) -> None:
    for weight in weights:
        try:
            check_weight_exportable(weight.fq, tuple(weight.dense().shape), weight.tensor_name)
        except Exception as err:
            raise node_error(weight.name, err) from err
    for act in activations:
        if _handled(act.fq):
            continue
        try:
            check_activation_exportable(act.fq, act.name)
        except Exception as err:
            raise node_error(act.name, err) from err


def _check_coreml(weights: list[EagerWeightFQ], activations: list[EagerActivationFQ]) -> None:
    for weight in weights:
        check_coreml_weight(weight.fq, weight.name)
        for owner in weight.owners:
            if owner.index != 0:
                raise ValueError(
                    f"CoreML export of weight {owner.qualified!r}: its fake-quantizer is "
                    f"parametrization {owner.index} of {len(owner.plist)}; only a "
                    f"fake-quantizer applied to the stored tensor itself (index 0) can be "
                    f"baked into it"
                )
    for act in activations:
        check_coreml_activation(act.fq, act.name)


# -- Core AI -------------------------------------------------------------------------


def _free_originals(owners: list[_Owner]) -> None:
    """Replace the dense originals of *owners* (parametrization index 0) by zero-size
    tensors of the same kind, one per original (tied weights keep sharing it)."""
    empties: dict[int, torch.Tensor] = {}
    for owner in owners:
        if owner.index != 0:
            continue  # earlier parametrizations still read the original
        plist = owner.plist
        is_param = "original" in plist._parameters
        original = plist._parameters["original"] if is_param else plist._buffers["original"]
        if original is None:
            continue
        empty = zero_size_like(original, is_param, empties)
        if is_param:
            plist._parameters["original"] = empty  # type: ignore[assignment]
        else:
            plist._buffers["original"] = empty


def _convert_coreai(
    weights: list[EagerWeightFQ],
    activations: list[EagerActivationFQ],
    model: nn.Module,
    ops: ExportOps,
) -> list[tuple[str, nn.Module]]:
    """Convert every fake-quantizer; returns (file stem, dequantize module) per weight."""
    dequantizers: list[tuple[str, nn.Module]] = []
    for weight in weights:
        try:
            export = export_weight(weight.fq, weight.dense(), weight.tensor_name)
            module = weight_dequantize(export, ops)
        except Exception as err:
            raise node_error(weight.name, err) from err
        for owner in weight.owners:
            owner.plist[owner.index] = module
        _free_originals(weight.owners)
        dequantizers.append((weight.tensor_name, module))
    for act in activations:
        try:
            handler = activation_handler(act.fq, "eager")
            if handler is not None:
                module = handler(act.fq)  # type: ignore[call-arg]
                if not isinstance(module, nn.Module):
                    raise TypeError(
                        f"the eager activation export handler {handler!r} for "
                        f"{type(act.fq.granularity).__name__} returned "
                        f"{type(module).__name__}; it must return the nn.Module that "
                        f"replaces the fake-quantizer"
                    )
            else:
                # (rank None: the rank the FQ observed)
                export = export_activation_qparams(
                    act.fq, observed_compute_dtype(act.fq), name=act.name
                )
                module = activation_modules(export, ops)
        except Exception as err:
            raise node_error(act.name, err) from err
        for path in act.paths:
            _set_submodule(model, path, module)
    return dequantizers


def _map_weights(dequantizers: list[tuple[str, nn.Module]], mmap_dir: Path) -> None:
    """Write each dequantize module's buffers to ``<stem>.safetensors`` and map them back."""
    for stem, module in dequantizers:
        tensors = {
            name: module._buffers[name]
            for name in WEIGHT_BUFFERS
            if module._buffers.get(name) is not None
        }
        mapped = map_tensors(mmap_dir / f"{stem}.safetensors", tensors)  # type: ignore[arg-type]
        module._buffers.update(mapped)


# -- Core ML -------------------------------------------------------------------------


def _convert_coreml(
    weights: list[EagerWeightFQ], activations: list[EagerActivationFQ], model: nn.Module
) -> None:
    for weight in weights:
        try:
            export = export_weight(weight.fq, weight.dense(), weight.tensor_name)
            fake = export.dequantize()
        except Exception as err:
            raise node_error(weight.name, err) from err
        written: set[int] = set()
        for owner in weight.owners:
            plist = owner.plist
            if len(plist) == 1:
                parametrize.remove_parametrizations(
                    owner.module, owner.tensor, leave_parametrized=False
                )
                tensor = getattr(owner.module, owner.tensor)
            else:  # index 0 (checked): later parametrizations read the baked original
                tensor = plist.original
                del plist[owner.index]
            if id(tensor) not in written:
                with torch.no_grad():
                    tensor.copy_(fake)
                written.add(id(tensor))
        for owner in weight.owners:
            register_coreml_weight_metadata(owner.module, owner.tensor, export)
    for act in activations:
        try:
            module = mil_activation_module(act.fq, observed_compute_dtype(act.fq))
        except Exception as err:
            raise node_error(act.name, err) from err
        for path in act.paths:
            _set_submodule(model, path, module)
    model.register_buffer("_COREML_/metadata_version", torch.tensor(COREML_METADATA_VERSION))


# -- entry point ---------------------------------------------------------------------


def _rebind(model: nn.Module) -> None:
    """Let the eager runtime re-bind its tables to the modules now at its paths."""
    from coreai_opt.quantization._eager.runtime import get_runtime

    runtime = get_runtime(model)
    if runtime is not None:
        runtime.bound_epoch = -1
        runtime.rebind()


def finalize_eager(
    model: nn.Module,
    backend: ExportBackend,
    *,
    mmap_dir: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Finalize the eager-prepared *model* for *backend* (CoreAI or CoreML), in place;
    returns it.

    Args:
        model: a model returned by eager-mode ``prepare``.
        backend: ``ExportBackend.CoreAI`` or ``ExportBackend.CoreML``.
        mmap_dir: (Core AI) a new or empty directory: each quantized weight is written to
            ``<module>.<param>.safetensors`` there and mapped back into the model.

    Raises:
        ValueError: no fake-quantizers; ``backend`` is not CoreAI / CoreML; ``mmap_dir``
            with Core ML; Core ML: a formulation other than ZP (``CoreMLExportError``, a
            ``ValueError``, for dtypes and activation granularities).
        NotImplementedError: dynamic fake-quantizers (not covered by a handler).
        NotADirectoryError / FileExistsError: ``mmap_dir`` is a file / not empty.
        FinalizeNodeError: checking or converting one fake-quantizer failed (the message
            names it).
    """
    if backend not in (ExportBackend.CoreAI, ExportBackend.CoreML):
        raise ValueError(f"finalize_eager converts for backend CoreAI or CoreML, got {backend!r}")
    if mmap_dir is not None and backend is not ExportBackend.CoreAI:
        raise ValueError(
            f"mmap_dir is only supported with backend=ExportBackend.CoreAI, got "
            f"backend={backend.value!r}"
        )
    weights, activations = eager_fake_quantizers(model)
    check_has_fake_quantizers(weights or activations, backend)
    fqs = {w.name: w.fq for w in weights} | {a.name: a.fq for a in activations}
    if backend is ExportBackend.CoreAI:
        refuse_dynamic(fqs, backend, covered=_handled)
        _check_coreai(weights, activations)
        ops = select_export_ops()
        if mmap_dir is not None:
            check_mmap_dir(mmap_dir)
        dequantizers = _convert_coreai(weights, activations, model, ops)
        if mmap_dir is not None:
            _map_weights(dequantizers, open_mmap_dir(mmap_dir))
    else:
        refuse_dynamic(fqs, backend)
        _check_coreml(weights, activations)
        _convert_coreml(weights, activations, model)
    _rebind(model)
    return model
