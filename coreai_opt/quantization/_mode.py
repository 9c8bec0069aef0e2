"""The seam between the ``Quantizer`` facade and the execution modes.

Each execution mode (``coreai_opt.quantization._graph``, ``coreai_opt.quantization._eager``)
subclasses :class:`ModeImplementation` and registers it with :func:`register_mode`
when its package is imported. The facade imports the mode's package on first use
(:func:`get_mode_implementation`) and dispatches ``prepare``, backend ``finalize`` and
``get_compressible_op_names`` to it; everything else (calibration/training modes,
``step`` and the QAT schedule, observer/fake-quant switches, weight-axis defaults,
dropping fake-quantizers whose block size does not fit) is shared and lives in
:mod:`coreai_opt.quantization._lifecycle`. The modes never import each other.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from coreai_opt._export_backend import ExportBackend
from coreai_opt.quantization.config import ExecutionMode
from coreai_opt.quantization.config.quantization_config import parse_execution_mode

if TYPE_CHECKING:
    from coreai_opt.quantization.quantizer import Quantizer

__all__ = [
    "ModeImplementation",
    "ModeUnavailableError",
    "check_example_inputs",
    "check_tensor_keys",
    "get_mode_implementation",
    "module_configs",
    "op_configs",
    "register_mode",
]

_MODE_PACKAGES: dict[ExecutionMode, str] = {
    ExecutionMode.GRAPH: "coreai_opt.quantization._graph",
    ExecutionMode.EAGER: "coreai_opt.quantization._eager",
}
_REGISTRY: dict[ExecutionMode, type[ModeImplementation]] = {}


class ModeUnavailableError(RuntimeError):
    """The implementation of an execution mode is not part of this build."""


class ModeImplementation(abc.ABC):
    """What an execution mode provides to the ``Quantizer`` facade.

    A mode inserts fake-quantizers and finds them again; the facade owns the life
    cycle. ``prepare`` must, in this order: insert the fake-quantizers (built with
    ``QuantizationComponentFactory``), apply
    ``_lifecycle.apply_weight_axis_defaults``, run one calibration forward (observer
    on, fake-quant off, eval, no_grad), call
    ``_lifecycle.remove_disabled_fake_quantizers(model, self.remove_fake_quantizer)``,
    switch observers off / fake-quant on and call ``_lifecycle.mark_prepared``.
    """

    mode: Any = None
    """The ``ExecutionMode`` this class implements (set by :func:`register_mode`)."""

    def __init__(self, quantizer: Quantizer) -> None:
        """Bind to the facade (its ``model`` and ``config``)."""
        self.quantizer = quantizer

    def validate(self) -> None:
        """Check the model and config at ``Quantizer`` construction (mode-specific rules)."""
        return None

    @abc.abstractmethod
    def prepare(
        self,
        example_inputs: tuple[Any, ...],
        dynamic_shapes: Any = None,
        export_with_no_grad: bool = True,
    ) -> torch.nn.Module:
        """Insert fake-quantizers into the facade's model and return the prepared model."""

    @abc.abstractmethod
    def finalize(
        self, model: torch.nn.Module, backend: ExportBackend, mmap_dir: str | None
    ) -> torch.nn.Module:
        """Convert a prepared *model* for *backend* (argument checks already done)."""

    @classmethod
    @abc.abstractmethod
    def get_compressible_op_names(
        cls, model: torch.nn.Module, example_inputs: tuple[Any, ...] | None = None
    ) -> set[str]:
        """Names of the ops of *model* that a config can target in this mode (eager mode
        runs a float model once on *example_inputs*; graph mode ignores them)."""

    def check_model(self, model: torch.nn.Module, caller: str) -> None:
        """Refuse a model of the wrong kind for *caller* (graph mode: not a GraphModule)."""
        return None

    def fake_quantizer_owners(
        self, model: torch.nn.Module
    ) -> Mapping[str, Sequence[str | tuple[str, type | str | None]]] | None:
        """Fake-quantizer name → owning module paths (optionally with types).

        Used to find each fake-quantizer's ``QATSchedule``. None selects the default:
        the module that contains the fake-quantizer (see
        ``_lifecycle.default_owner_path``).
        """
        return None

    def remove_fake_quantizer(self, model: torch.nn.Module, name: str) -> None:
        """Remove the fake-quantizer called *name* from *model* (default: a submodule swap)."""
        from coreai_opt.quantization._lifecycle import remove_submodule_fake_quantizer

        remove_submodule_fake_quantizer(model, name)


def register_mode(
    mode: ExecutionMode | str,
) -> Callable[[type[ModeImplementation]], type[ModeImplementation]]:
    """Class decorator registering the implementation of *mode*."""
    key = parse_execution_mode(mode)

    def decorator(klass: type[ModeImplementation]) -> type[ModeImplementation]:
        if not (isinstance(klass, type) and issubclass(klass, ModeImplementation)):
            raise TypeError(f"register_mode({key.value!r}) needs a ModeImplementation subclass")
        klass.mode = key
        _REGISTRY[key] = klass
        return klass

    return decorator


def get_mode_implementation(
    mode: ExecutionMode | str, *, required_for: str | None = None
) -> type[ModeImplementation] | None:
    """The registered implementation of *mode*, importing its package on first use.

    Returns None when the mode is not part of this build, or raises
    :class:`ModeUnavailableError` naming the mode and *required_for* when given.
    """
    key = parse_execution_mode(mode)
    if key not in _REGISTRY:
        package = _MODE_PACKAGES[key]
        try:
            importlib.import_module(package)
        except ModuleNotFoundError as err:
            if err.name != package:
                raise
    klass = _REGISTRY.get(key)
    if klass is None and required_for is not None:
        available = [m.value for m in ExecutionMode if m in _REGISTRY]
        raise ModeUnavailableError(
            f"{required_for} needs the {key.value!r} execution mode, which is not available "
            f"in this build yet (no implementation registered for execution_mode="
            f"{key.value!r}; available modes: {available or 'none'}). The shared life cycle "
            f"(calibration_mode, training_mode, step, observer/fake-quant switches, "
            f"finalize with backend=ExportBackend._TORCH) works on models prepared by hand."
        )
    return klass


# -- checks both modes share ---------------------------------------------------------------------


def check_example_inputs(example_inputs: Any) -> None:
    """``TypeError`` unless *example_inputs* is a tuple, ``ValueError`` when it is empty."""
    if not isinstance(example_inputs, tuple):
        raise TypeError(
            f"example_inputs must be a tuple of the model's positional inputs, got "
            f"{type(example_inputs).__name__}; wrap a single tensor as (x,)"
        )
    if len(example_inputs) == 0:
        raise ValueError("example_inputs is an empty tuple; pass at least one input")


def module_configs(config: Any) -> list[Any]:
    """Every ``ModuleQuantizerConfig`` of a ``QuantizerConfig`` (global, per type, per name)."""
    configs = [config.global_config, *config.module_type_configs.values()]
    configs += list(config.module_name_configs.values())
    return [c for c in configs if c is not None]


def op_configs(module_config: Any) -> list[Any]:
    """Every op config of one ``ModuleQuantizerConfig``: its op defaults, then the
    per-type and per-name op configs (a None entry disables its ops: it holds no specs)."""
    configs = [module_config.op_defaults()]
    configs += [c for c in module_config.op_type_config.values() if c is not None]
    configs += [c for c in module_config.op_name_config.values() if c is not None]
    return configs


def check_tensor_keys(config: Any, mode: str, *, fields: Sequence[str]) -> None:
    """``NotImplementedError`` for a key of the spec dicts named in *fields* (op configs'
    ``op_input_spec`` / ``op_output_spec``, module configs' ``module_input_spec`` /
    ``module_output_spec``) that is neither an int position nor ``"*"``."""
    for module_config in module_configs(config):
        ops = op_configs(module_config)
        for field in fields:
            holders = ops if field.startswith("op_") else [module_config]
            for holder in holders:
                for key in getattr(holder, field):
                    if not (key == "*" or isinstance(key, int)):
                        raise NotImplementedError(
                            f"{field} key {key!r}: {mode} mode addresses tensors by int "
                            f"position or '*' only"
                        )
