"""``ExecutionMode.EAGER``: the model stays an ``nn.Module``; ops are intercepted in C++.

prepare = recording pass (``recording``) → placement (``placement``) → fake-quantizers
attached (activation FQs as submodules of the module that ran the op, weights through
``torch.nn.utils.parametrize``) → weight-axis defaults → module frames and C++ tables
(``runtime``) → one calibration forward → the shared life cycle (``_lifecycle``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from coreai_opt._export_backend import ExportBackend
from coreai_opt.quantization import _lifecycle
from coreai_opt.quantization import distributed as _distributed
from coreai_opt.quantization._eager import op_registry
from coreai_opt.quantization._eager.pickling import make_module_picklable
from coreai_opt.quantization._eager.placement import EagerPlan, plan_placement
from coreai_opt.quantization._eager.recording import Recording, record
from coreai_opt.quantization._eager.runtime import RUNTIME_ATTR, EagerRuntime, get_runtime
from coreai_opt.quantization._eager.weight_access import install_module_fast_weight_access
from coreai_opt.quantization._mode import (
    ModeImplementation,
    check_example_inputs,
    check_tensor_keys,
    module_configs,
    register_mode,
)
from coreai_opt.quantization.config import ExecutionMode
from coreai_opt.quantization.spec import QuantizationComponentFactory
from coreai_opt.quantization.spec.fake_quantize import FakeQuantize, FakeQuantizeImplBase

__all__ = ["EagerMode"]

_OP_NAMES_ATTR = "_coreai_opt_eager_op_names"


@register_mode(ExecutionMode.EAGER)
class EagerMode(ModeImplementation):
    """Eager-mode prepare / finalize through the C++ dispatch-key interceptor."""

    def validate(self) -> None:
        """Op input / output spec keys must be int or "*"; preserved_attributes is ignored."""
        config = self.quantizer.config
        check_tensor_keys(config, "eager", fields=("op_input_spec", "op_output_spec"))
        configs = module_configs(config)
        known = op_registry.registered_op_types()
        unknown = sorted({key for c in configs for key in c.op_type_config} - known)
        if unknown:
            warnings.warn(
                f"op_type_config keys {unknown} name no op type eager mode intercepts, so they "
                f"match nothing; eager op types: {sorted(known)} (register more with "
                f"coreai_opt.quantization.eager_ops.register_eager_op_type)",
                UserWarning,
                stacklevel=3,
            )
        if config.preserved_attributes:
            warnings.warn(
                f"preserved_attributes={config.preserved_attributes!r} is ignored in eager "
                f"mode: the prepared model is the model itself, so every attribute stays",
                UserWarning,
                stacklevel=3,
            )

    def prepare(
        self,
        example_inputs: tuple[Any, ...],
        dynamic_shapes: Any = None,
        export_with_no_grad: bool = True,
    ) -> nn.Module:
        """Insert fake-quantizers into the model (in place) and initialise their qparams."""
        model = self.quantizer.model
        if _lifecycle.is_prepared(model):
            warnings.warn(
                "the model is already prepared; Quantizer.prepare() returns it unchanged",
                UserWarning,
                stacklevel=3,
            )
            return model
        check_example_inputs(example_inputs)
        # Sharded (FSDP2) parameters would be seen as activations: refuse before recording.
        _distributed.check_unsharded(model)
        if dynamic_shapes is not None or export_with_no_grad is not True:
            warnings.warn(
                "dynamic_shapes and export_with_no_grad are graph-mode (torch.export) options; "
                "eager mode ignores them",
                UserWarning,
                stacklevel=3,
            )
        # Inside torch.inference_mode the fake-quantizers' state would be inference
        # tensors, which nothing outside inference mode may update: build it normal.
        with torch.inference_mode(False):
            return self._prepare(model, example_inputs)

    def _prepare(self, model: nn.Module, example_inputs: tuple[Any, ...]) -> nn.Module:
        recording = record(model, example_inputs)
        plan = plan_placement(model, self.quantizer.config, recording)
        hooked = _frame_modules(recording)
        weight_fqs, activation_fqs = _attach(model, plan)
        _lifecycle.apply_weight_axis_defaults(weight_fqs, activation_fqs)
        runtime = _install_runtime(model, plan, hooked)
        # One walk over the model for both per-module steps (each a no-op on a module
        # without parametrizations).
        for module in model.modules():
            make_module_picklable(module)
            install_module_fast_weight_access(module)
        _lifecycle.set_switches(model, observer=True, fake_quant=False)
        with _lifecycle.restore_training_flags(model):
            model.eval()
            with torch.no_grad():
                model(*example_inputs)
            _lifecycle.remove_disabled_fake_quantizers(model, self.remove_fake_quantizer)
            _lifecycle.set_switches(model, observer=False, fake_quant=True)
        runtime.bound_epoch = -1
        return _lifecycle.mark_prepared(model)

    def remove_fake_quantizer(self, model: nn.Module, name: str) -> None:
        """Remove fake-quantizer *name*: a parametrization, or an activation submodule
        (deleted, and its sites dropped from the C++ tables)."""
        if ".parametrizations." in f".{name}":
            _lifecycle.remove_submodule_fake_quantizer(model, name)
            return
        parent_path, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        delattr(parent, attr)
        runtime = get_runtime(model)
        if runtime is not None:
            runtime.drop_sites(name)

    def finalize(self, model: nn.Module, backend: ExportBackend, mmap_dir: str | None) -> nn.Module:
        """Finalize the eager-prepared *model* for *backend* (in place).

        ``_TORCH``: the prepared model unchanged. ``CoreAI`` / ``CoreML``: the
        fake-quantizers are replaced in place
        (``coreai_opt.quantization.finalize._eager_finalize``): dequantize parametrizations
        and quantize / dequantize modules (Core AI, weights optionally written to and mapped
        from *mmap_dir*), or fake-quantized weights with Core ML metadata and
        ``torch.quantize_per_tensor`` modules (Core ML); checks run before any change.
        """
        _lifecycle.require_prepared(model, "finalize()")
        if backend is ExportBackend._TORCH:
            return model
        from coreai_opt.quantization.finalize._eager_finalize import finalize_eager

        return finalize_eager(model, backend, mmap_dir=mmap_dir)

    @classmethod
    def get_compressible_op_names(
        cls, model: nn.Module, example_inputs: tuple[Any, ...] | None = None
    ) -> set[str]:
        """Op names (``<module>.<op>[_k]``) a config can target in *model*.

        An eager-prepared model answers from its prepare pass; a float model needs
        *example_inputs* for one recording forward. Raises ``ValueError`` otherwise.
        """
        names = model.__dict__.get(_OP_NAMES_ATTR)
        if isinstance(names, dict):
            return set(names)
        if example_inputs is None:
            raise ValueError(
                f"eager-mode get_compressible_op_names needs an eager-prepared model or "
                f"example_inputs to run {type(model).__name__} once (eager op names exist only "
                f"while the model runs)"
            )
        check_example_inputs(example_inputs)
        return {op.op_name for op in record(model, example_inputs).ops}

    def fake_quantizer_owners(self, model: nn.Module) -> Mapping[str, Sequence[str]] | None:
        """Default ownership (the module holding the FQ; the parametrized module)."""
        return None


_WeightFQs = dict[str, tuple[FakeQuantizeImplBase, Sequence[object]]]
_ActFQs = dict[str, FakeQuantizeImplBase]


def _attach(model: nn.Module, plan: EagerPlan) -> tuple[_WeightFQs, _ActFQs]:
    """Create and attach the fake-quantizers of *plan*; returns (weights with their
    consumer types, activations) by qualified name."""
    activation_fqs: dict[str, FakeQuantizeImplBase] = {}
    for site in plan.sites:
        if site.fq_path in activation_fqs:
            continue
        owner = model.get_submodule(site.module_path) if site.module_path else model
        fq = QuantizationComponentFactory.create_fake_quantizer(site.spec, "activation")
        owner.add_module(site.fq_name, fq)
        activation_fqs[site.fq_path] = fq
    for boundary in plan.boundaries:
        owner = model.get_submodule(boundary.module_path) if boundary.module_path else model
        fq = QuantizationComponentFactory.create_fake_quantizer(boundary.spec, "activation")
        owner.add_module(boundary.fq_name, fq)
        activation_fqs[boundary.fq_path] = fq
    weight_fqs: _WeightFQs = {}
    for state in plan.states:
        fq = QuantizationComponentFactory.create_fake_quantizer(state.spec, "weight")
        if isinstance(fq, FakeQuantize):
            # Inference reads each weight version once through its parametrization.
            fq.enable_version_cache()
        first_path, first_name = state.owners[0]
        fq.tensor_fqn = f"{first_path}.{first_name}" if first_path else first_name
        for path, name in state.owners:
            owner = model.get_submodule(path) if path else model
            torch.nn.utils.parametrize.register_parametrization(owner, name, fq, unsafe=True)
        fq_name = f"{first_path}.parametrizations.{first_name}.0".lstrip(".")
        weight_fqs[fq_name] = (fq, state.consumers)
    return weight_fqs, activation_fqs


def _frame_modules(recording: Recording) -> dict[int, str]:
    """Every module of the model gets a frame (fake-quantizers added later do not).

    Hooking only the modules that ran intercepted ops while recording would attribute an
    op that runs elsewhere later (a branch not taken while recording, BatchNorm's
    ``num_batches_tracked.add_`` in train mode) to the parent's frame and shift the
    parent's op numbering; a frame costs about 1.5 µs per module call.
    """
    return dict(enumerate(recording.paths))


def _install_runtime(model: nn.Module, plan: EagerPlan, hooked: Mapping[int, str]) -> EagerRuntime:
    sites = [site.ref for site in plan.sites]
    runtime = EagerRuntime(model, sites, sorted(hooked.items()))
    for b in plan.boundaries:
        ins, outs = runtime.boundaries.setdefault(b.module_path, ([], []))
        (outs if b.output else ins).append((b.index, b.fq_name))
    runtime.install_hooks()
    model.__dict__[RUNTIME_ATTR] = runtime
    model.__dict__[_OP_NAMES_ATTR] = dict(plan.op_names)
    return runtime
