"""The quantization life cycle shared by both execution modes.

Works on any ``nn.Module`` that contains fake-quantizers (instances of
``FakeQuantizeImplBase``) and carries the prepared marker (:func:`mark_prepared`):

* the prepared marker: a non-persistent buffer ``_coreai_opt_prepared``;
* :func:`calibration_mode` / :func:`training_mode` context managers;
* :class:`LifecycleState`: the QAT step counter and per-fake-quantizer
  ``QATSchedule`` (resolved from the config level of the module that owns the
  fake-quantizer), advanced by :func:`step`;
* switches for a whole model or a submodule (:func:`set_switches`);
* weight-axis defaults (:func:`apply_weight_axis_defaults`);
* removal of fake-quantizers disabled by a block-size mismatch
  (:func:`remove_disabled_fake_quantizers`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.fx.graph_module import _USER_PRESERVED_ATTRIBUTES_KEY

from coreai_opt.quantization import distributed as _distributed
from coreai_opt.quantization.config import QATSchedule, QuantizerConfig
from coreai_opt.quantization.config.resolution import (
    build_module_config_dict,
    resolve_module_config,
)
from coreai_opt.quantization.spec.axis_defaults import default_weight_axes
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase
from coreai_opt.quantization.spec.granularity import (
    PerBlockGranularity,
    PerChannelGranularity,
    QuantizationGranularity,
)

__all__ = [
    "PREPARED_MARKER",
    "LifecycleState",
    "apply_weight_axis_defaults",
    "calibration_mode",
    "config_has_schedule",
    "default_owner_path",
    "fake_quantizers",
    "is_prepared",
    "mark_prepared",
    "remove_disabled_fake_quantizers",
    "remove_submodule_fake_quantizer",
    "require_prepared",
    "resolve_schedules",
    "restore_training_flags",
    "set_switches",
    "step",
    "training_mode",
]

PREPARED_MARKER = "_coreai_opt_prepared"
"""Name of the non-persistent buffer that marks a prepared model."""

Owner = str | tuple[str, type | str | None]


# -- prepared marker --------------------------------------------------------------------


def mark_prepared(model: nn.Module) -> nn.Module:
    """Mark *model* as prepared: a non-persistent buffer ``_coreai_opt_prepared = True``,
    or on a ``GraphModule`` a tensor attribute of that name that its user-preserved
    attributes carry through deepcopy and pickling (which rebuild the module from the
    graph)."""
    if isinstance(model, torch.fx.GraphModule):
        # A GraphModule's deepcopy and unpickling re-register every root buffer as
        # persistent (the marker would join the state_dict): a plain tensor attribute,
        # restored from the user-preserved attributes, marks it instead.
        model.__dict__[PREPARED_MARKER] = torch.tensor(True)
        preserve_across_deepcopy(model, PREPARED_MARKER, torch.tensor(True))
    else:
        model.register_buffer(PREPARED_MARKER, torch.tensor(True), persistent=False)
    return model


def preserve_across_deepcopy(gm: torch.fx.GraphModule, name: str, value: object) -> None:
    """Record *value* as attribute *name* of *gm* where ``GraphModule.__deepcopy__``
    restores it (its user-preserved attributes in ``gm.meta``); the copy rebuilds the
    module from the graph and keeps nothing else."""
    gm.meta.setdefault(_USER_PRESERVED_ATTRIBUTES_KEY, {})[name] = value


def is_prepared(model: nn.Module) -> bool:
    """True when *model* carries the prepared marker (a buffer, or the attribute a
    GraphModule's deepcopy restores)."""
    if not isinstance(model, nn.Module):
        return False
    return PREPARED_MARKER in model._buffers or isinstance(
        model.__dict__.get(PREPARED_MARKER), torch.Tensor
    )


def require_prepared(model: nn.Module, caller: str) -> None:
    """Raise ``RuntimeError`` naming *caller* unless *model* is prepared."""
    if not is_prepared(model):
        raise RuntimeError(
            f"{caller} needs a prepared model (one returned by Quantizer.prepare()); "
            f"{type(model).__name__} has no {PREPARED_MARKER!r} marker"
        )


# -- fake-quantizers and switches ---------------------------------------------------------


def fake_quantizers(model: nn.Module) -> dict[str, FakeQuantizeImplBase]:
    """Fake-quantizers of *model* by (first) name; a shared one appears once."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, FakeQuantizeImplBase)
    }


def set_switches(
    module: nn.Module, *, observer: bool | None = None, fake_quant: bool | None = None
) -> None:
    """Set the observer / fake-quant switches of every fake-quantizer under *module*."""
    for sub in module.modules():
        if isinstance(sub, FakeQuantizeImplBase):
            if observer is not None:
                sub.enable_observer(observer)
            if fake_quant is not None:
                sub.enable_fake_quant(fake_quant)


@contextlib.contextmanager
def restore_training_flags(model: nn.Module) -> Iterator[None]:
    """Put back every module's train/eval flag on exit (also on an exception): the life
    cycle's modes and eager prepare switch modules to eval for their own passes."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def calibration_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Observers on, fake-quant off, eval mode; on exit observers off, fake-quant on.

    The train/eval flags of every module are restored on exit. On a normal exit under
    ``torch.distributed`` the observer ranges are first synchronised across the ranks
    (:func:`coreai_opt.quantization.distributed.sync_observers_if_enabled`); not after an
    exception, which other ranks may not have raised.
    """
    require_prepared(model, "calibration_mode()")
    with restore_training_flags(model):
        model.eval()
        set_switches(model, observer=True, fake_quant=False)
        try:
            yield model
            _distributed.sync_observers_if_enabled(model)
        finally:
            set_switches(model, observer=False, fake_quant=True)


# -- QAT schedule -------------------------------------------------------------------------


def config_has_schedule(config: QuantizerConfig) -> bool:
    """True when any config level (global, type, name) sets a ``qat_schedule``."""
    configs = [config.global_config, *config.module_type_configs.values()]
    configs += list(config.module_name_configs.values())
    return any(c is not None and c.qat_schedule is not None for c in configs)


def default_owner_path(fq_name: str) -> str:
    """Path of the module that owns the fake-quantizer called *fq_name*.

    A parametrization (``lin.parametrizations.weight.0``) belongs to the
    parametrized module (``lin``); any other fake-quantizer to its parent module.
    """
    parts = fq_name.split(".")
    if "parametrizations" in parts:
        return ".".join(parts[: parts.index("parametrizations")])
    return ".".join(parts[:-1])


def resolve_schedules(
    model: nn.Module,
    config: QuantizerConfig,
    owners: Mapping[str, Sequence[Owner]] | None = None,
) -> dict[str, QATSchedule]:
    """``QATSchedule`` of every fake-quantizer of *model* that has one.

    *owners* maps fake-quantizer names to their owning module paths (with types where
    the module is not in *model*, as in graph mode); by default every name under which
    the fake-quantizer is reachable gives one owner (:func:`default_owner_path`). A
    fake-quantizer with owners whose schedules differ keeps the first one and warns.
    """
    module_configs = build_module_config_dict(config, model)
    names_of: dict[int, list[str]] = {}
    canonical: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, FakeQuantizeImplBase):
            canonical.setdefault(id(module), name)
            names_of.setdefault(id(module), []).append(name)
    result: dict[str, QATSchedule] = {}
    for key, name in canonical.items():
        given = None if owners is None else owners.get(name)
        entries: Sequence[Owner] = (
            given if given is not None else [default_owner_path(n) for n in names_of[key]]
        )
        chosen: list[tuple[str, QATSchedule | None]] = []
        for entry in entries:
            path, mtype = (entry, None) if isinstance(entry, str) else entry
            if path in module_configs and mtype is None:
                resolved = module_configs[path]
            else:
                resolved = resolve_module_config(config, path, mtype)
            chosen.append((path, resolved.config.qat_schedule))
        if not chosen:
            continue
        first_path, first = chosen[0]
        conflicts = [p for p, s in chosen[1:] if s != first]
        if conflicts:
            warnings.warn(
                f"fake-quantizer {name!r} is shared by modules with different qat_schedule "
                f"settings ({first_path!r} and {conflicts}); using the schedule of "
                f"{first_path!r}",
                UserWarning,
                stacklevel=2,
            )
        if first is not None:
            result[name] = first
    return result


@dataclass
class LifecycleState:
    """Per-``Quantizer`` life-cycle state: QAT step count, schedules, training flag."""

    step_count: int = 0
    in_training: bool = False
    training_model: nn.Module | None = None
    schedules: dict[str, QATSchedule] | None = field(default=None)


def _apply_schedule(model: nn.Module, state: LifecycleState) -> None:
    fqs = fake_quantizers(model)
    for name, schedule in (state.schedules or {}).items():
        fq = fqs.get(name)
        if fq is None:
            continue
        obs_on, fq_on = schedule.state_at(state.step_count)
        fq.enable_observer(obs_on)
        fq.enable_fake_quant(fq_on)


@contextlib.contextmanager
def training_mode(
    model: nn.Module, state: LifecycleState, schedules: Callable[[], dict[str, QATSchedule]]
) -> Iterator[nn.Module]:
    """Train mode with observers and fake-quant on (or their scheduled state).

    Nested use raises ``RuntimeError``. On exit observers are off, fake-quant on and
    every module's train/eval flag is restored. The step count is never reset.
    """
    require_prepared(model, "training_mode()")
    if state.in_training:
        raise RuntimeError(
            "training_mode() is already active for this quantizer; nested training_mode() "
            "contexts are not allowed"
        )
    if state.schedules is None:
        state.schedules = schedules()
    state.in_training = True
    state.training_model = model
    try:
        with restore_training_flags(model):
            model.train()
            set_switches(model, observer=True, fake_quant=True)
            _apply_schedule(model, state)
            try:
                yield model
            finally:
                set_switches(model, observer=False, fake_quant=True)
    finally:
        state.in_training = False
        state.training_model = None


def step(state: LifecycleState) -> None:
    """Advance the QAT step count by one and apply the scheduled switch states.

    ``RuntimeError`` outside :func:`training_mode`; a ``UserWarning`` when no
    fake-quantizer has a schedule (the count does not advance). Under
    ``torch.distributed`` the observer ranges are first synchronised across the ranks,
    schedule or not
    (:func:`coreai_opt.quantization.distributed.sync_observers_if_enabled`).
    """
    if not state.in_training or state.training_model is None:
        raise RuntimeError(
            "step() must be called inside a training_mode() context (it advances the "
            "QATSchedule of the model being trained)"
        )
    _distributed.sync_observers_if_enabled(state.training_model)
    if not state.schedules:
        warnings.warn(
            "step() advances no QATSchedule: no qat_schedule is configured on any module "
            "config (under torch.distributed it still synchronised the observer ranges)",
            UserWarning,
            stacklevel=3,
        )
        return
    state.step_count += 1
    _apply_schedule(state.training_model, state)


# -- weight-axis defaults -------------------------------------------------------------------


def _needs_axis(granularity: QuantizationGranularity) -> str | None:
    if isinstance(granularity, PerChannelGranularity) and granularity.axis is None:
        return "per_channel"
    if (
        isinstance(granularity, PerBlockGranularity)
        and granularity.axis is None
        and isinstance(granularity.block_size, int)
    ):
        return "per_block"
    return None


def _consumer_name(consumer: object) -> str:
    if isinstance(consumer, type):
        return consumer.__name__
    return str(consumer)


def apply_weight_axis_defaults(
    weight_fqs: Mapping[str, tuple[FakeQuantizeImplBase, Sequence[object]]],
    activation_fqs: Mapping[str, FakeQuantizeImplBase] | None = None,
) -> None:
    """Fill in ``axis=None`` of weight granularities from their consumers.

    Args:
        weight_fqs: name → (fake-quantizer, consumers); a consumer is a module class
            or an aten op (see ``spec.axis_defaults``). Only
            ``PerChannelGranularity(axis=None)`` and ``PerBlockGranularity(axis=None,
            block_size=int)`` are changed; explicit axes never are.
        activation_fqs: name → fake-quantizer; an activation granularity that needs an
            axis and has none is an error (activations have no default).

    Raises:
        ValueError: a weight whose consumers have no default axis, a shared weight
            whose consumers disagree, or an activation with an unresolved axis.
    """
    unresolved: list[str] = []
    conflicts: list[str] = []
    updates: list[tuple[FakeQuantizeImplBase, QuantizationGranularity]] = []
    for name, (fq, consumers) in weight_fqs.items():
        granularity = getattr(fq, "granularity", None)
        kind = None if granularity is None else _needs_axis(granularity)
        if kind is None:
            continue
        axes: dict[int, list[str]] = {}
        missing = False
        for consumer in consumers:
            defaults = default_weight_axes(consumer)
            if defaults is None:
                missing = True
                break
            axis = defaults.per_channel_axis if kind == "per_channel" else defaults.per_block_axis
            axes.setdefault(axis, []).append(_consumer_name(consumer))
        if missing or not axes:
            names = [_consumer_name(c) for c in consumers] or ["no consumer"]
            unresolved.append(f"{name} ({kind}, consumed by {names})")
            continue
        if len(axes) > 1:
            conflicts.append(f"{name}: " + ", ".join(f"axis {a} for {c}" for a, c in axes.items()))
            continue
        updates.append((fq, granularity.model_copy(update={"axis": next(iter(axes))})))
    if unresolved:
        raise ValueError(
            "Weight fake-quantize modules with unresolved axis=None: "
            + "; ".join(unresolved)
            + ". Default axes exist only for Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear and "
            "Embedding weights; set granularity axis explicitly for other consumers"
        )
    if conflicts:
        raise ValueError(
            "Conflicting default axes for shared weights: "
            + "; ".join(conflicts)
            + ". Set the granularity axis explicitly for these weights"
        )
    bad_acts = [
        f"{name} ({kind})"
        for name, fq in (activation_fqs or {}).items()
        if (kind := _needs_axis(getattr(fq, "granularity", None) or _NO_GRANULARITY)) is not None
    ]
    if bad_acts:
        raise ValueError(
            "Activation fake-quantize modules with unresolved axis=None: "
            + ", ".join(bad_acts)
            + ". Activations have no default axis; set it in the spec's granularity"
        )
    for fq, granularity in updates:
        fq.granularity = granularity  # type: ignore[attr-defined]


class _NoGranularity:
    """Stand-in for fake-quantizers without a granularity attribute."""


_NO_GRANULARITY = _NoGranularity()


# -- removing disabled fake-quantizers ---------------------------------------------------------


def remove_submodule_fake_quantizer(model: nn.Module, name: str) -> None:
    """Remove the fake-quantizer submodule *name* from *model*.

    A parametrization is removed from its parametrization list (the tensor is left as
    it was); any other fake-quantizer is replaced by ``nn.Identity``.
    """
    parent_path, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if isinstance(parent, nn.utils.parametrize.ParametrizationList):
        owner_path, _, _ = parent_path.rpartition(".parametrizations.")
        tensor_name = parent_path.rsplit(".", 1)[-1]
        owner = model.get_submodule(owner_path) if owner_path else model
        if len(parent) == 1:
            nn.utils.parametrize.remove_parametrizations(
                owner, tensor_name, leave_parametrized=False
            )
        else:
            del parent[int(attr)]
        return
    setattr(parent, attr, nn.Identity())


def remove_disabled_fake_quantizers(
    model: nn.Module, remove: Callable[[nn.Module, str], None] = remove_submodule_fake_quantizer
) -> list[str]:
    """Remove (with a ``UserWarning``) the fake-quantizers disabled by a block mismatch.

    *remove* is the mode's removal function. Returns the removed names.
    """
    disabled = [name for name, fq in fake_quantizers(model).items() if fq.is_disabled()]
    if disabled:
        warnings.warn(
            f"removed {len(disabled)} fake-quantizer(s) whose granularity block size does not "
            f"fit the tensor shape (those tensors stay unquantized): {disabled}",
            UserWarning,
            stacklevel=2,
        )
    for name in disabled:
        remove(model, name)
    return disabled
