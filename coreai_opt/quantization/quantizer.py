"""``Quantizer``: the one entry point for PTQ and QAT in both execution modes.

The facade owns the life cycle (:mod:`coreai_opt.quantization._lifecycle`) and
dispatches the mode-specific steps (``prepare``, backend ``finalize``,
``get_compressible_op_names``) to the implementation registered for
``config.execution_mode`` (:mod:`coreai_opt.quantization._mode`).

Both modes are registered (``_graph``, ``_eager``); for a mode without an
implementation, ``prepare`` (and ``finalize`` for the CoreAI / CoreML backends, and
``get_compressible_op_names``) raise
:class:`~coreai_opt.quantization._mode.ModeUnavailableError` (a ``RuntimeError``)
naming the mode. Every other method works on a model whose fake-quantizers were
inserted by other means and that was marked with ``_lifecycle.mark_prepared``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from coreai_opt._export_backend import ExportBackend
from coreai_opt.quantization import _lifecycle, distributed
from coreai_opt.quantization._mode import ModeImplementation, get_mode_implementation
from coreai_opt.quantization.config import ExecutionMode, QATSchedule, QuantizerConfig

__all__ = ["Quantizer"]


class Quantizer:
    """Quantizes a model: prepare, calibrate or train, finalize.

    Args:
        model: the model to quantize (modified in place by eager mode).
        config: what to quantize and how; None means ``QuantizerConfig()`` (int8
            weights per channel and int8 activations per tensor, graph mode).

    Workflow: ``prepare(example_inputs)`` inserts fake-quantizers and initialises
    their qparams; ``calibration_mode()`` (or :meth:`calibrate`) refines activation
    ranges; ``training_mode()`` + ``step()`` run QAT with the configured
    ``QATSchedule``; ``finalize(backend=...)`` converts for export.

    The mode-specific steps (``prepare``, ``get_compressible_op_names``, ``finalize``
    for ``ExportBackend.CoreAI`` / ``CoreML``) run the implementation registered for
    ``config.execution_mode`` (graph and eager both are).
    """

    def __init__(self, model: nn.Module, config: QuantizerConfig | None = None) -> None:
        """Bind *model* and *config*; the mode implementation validates them if present."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if config is None:
            config = QuantizerConfig()
        if not isinstance(config, QuantizerConfig):
            raise TypeError(
                f"config must be a QuantizerConfig or None, got {type(config).__name__}"
            )
        self._model = model
        self._config = config
        self._prepared_model: nn.Module | None = None
        self._state = _lifecycle.LifecycleState()
        impl_cls = get_mode_implementation(config.execution_mode)
        self._impl: ModeImplementation | None = None if impl_cls is None else impl_cls(self)
        if self._impl is not None:
            self._impl.validate()

    # -- accessors ---------------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The model given to the constructor."""
        return self._model

    @property
    def config(self) -> QuantizerConfig:
        """The quantizer config."""
        return self._config

    @property
    def execution_mode(self) -> ExecutionMode:
        """``config.execution_mode``."""
        return self._config.execution_mode

    @property
    def step_count(self) -> int:
        """Number of ``step()`` calls so far (never reset)."""
        return self._state.step_count

    def _require_impl(self, caller: str) -> ModeImplementation:
        if self._impl is None:
            impl_cls = get_mode_implementation(self.execution_mode, required_for=caller)
            assert impl_cls is not None
            self._impl = impl_cls(self)
        return self._impl

    def _target(self, model: nn.Module | None, caller: str) -> nn.Module:
        if model is None:
            model = self._prepared_model if self._prepared_model is not None else self._model
        elif not isinstance(model, nn.Module):
            raise TypeError(
                f"{caller}: model must be a torch.nn.Module, got {type(model).__name__}"
            )
        if self._impl is not None:
            self._impl.check_model(model, caller)
        _lifecycle.require_prepared(model, caller)
        return model

    def _schedules(self, model: nn.Module) -> dict[str, QATSchedule]:
        owners = None if self._impl is None else self._impl.fake_quantizer_owners(model)
        return _lifecycle.resolve_schedules(model, self._config, owners)

    # -- mode-specific steps ------------------------------------------------------------

    def prepare(
        self,
        example_inputs: tuple[Any, ...],
        dynamic_shapes: dict[str, Any] | tuple[Any, ...] | list[Any] | None = None,
        export_with_no_grad: bool = True,
    ) -> nn.Module:
        """Insert fake-quantizers and run one calibration pass on *example_inputs*.

        Dispatched to the implementation of ``config.execution_mode``
        (``ModeUnavailableError``, a ``RuntimeError``, for a mode without one).
        """
        impl = self._require_impl("Quantizer.prepare()")
        prepared = impl.prepare(example_inputs, dynamic_shapes, export_with_no_grad)
        self._prepared_model = prepared
        self._state.schedules = None
        return prepared

    def finalize(
        self,
        model: nn.Module | None = None,
        backend: ExportBackend | str = ExportBackend.CoreAI,
        *,
        mmap_dir: str | os.PathLike[str] | None = None,
    ) -> nn.Module:
        """Convert a prepared model for *backend*.

        ``ExportBackend._TORCH`` returns the prepared model (fake-quantizers in place;
        graph mode folds conv-bn pairs). ``CoreAI`` and ``CoreML`` are converted by the
        mode implementation (see ``coreai_opt.quantization.finalize``).

        ``mmap_dir`` (both modes, ``CoreAI`` only, every parameter and buffer on the CPU):
        a new or empty directory; each quantized weight is written there as one
        safetensors file (eager ``<module>.<param>.safetensors``, graph ``<weight target
        with . -> _>.safetensors``; a tied weight once) and the model's tensors are mapped
        from those files.

        Raises:
            ValueError: *backend* is not an export backend; ``mmap_dir`` with another
                backend than CoreAI, or with tensors off the CPU.
            TypeError: ``mmap_dir`` is not a str / path-like.
            NotADirectoryError: ``mmap_dir`` exists and is not a directory.
            FileExistsError: ``mmap_dir`` is a directory that is not empty.
        """
        model = self._target(model, "finalize()")
        try:
            backend = ExportBackend(backend)
        except ValueError:
            raise ValueError(
                f"backend={backend!r} is not an export backend; allowed: "
                f"{[b.value for b in ExportBackend]}"
            ) from None
        if mmap_dir is not None:
            if backend is not ExportBackend.CoreAI:
                raise ValueError(
                    f"mmap_dir is only supported with backend=ExportBackend.CoreAI (quantized "
                    f"weights written to safetensors files), got backend={backend.value!r}"
                )
            off_cpu = sorted(
                {str(t.device) for t in [*model.parameters(), *model.buffers()]} - {"cpu"}
            )
            if off_cpu:
                raise ValueError(
                    f"mmap_dir needs every parameter and buffer on the CPU; found devices "
                    f"{off_cpu}. Move the model with .cpu() first"
                )
            from coreai_opt.quantization.finalize._mmap import check_mmap_dir

            check_mmap_dir(mmap_dir)
        if backend is ExportBackend._TORCH and self._impl is None:
            impl_cls = get_mode_implementation(self.execution_mode)
            if impl_cls is None:
                return model
            self._impl = impl_cls(self)
        impl = self._require_impl(f"finalize(backend={backend.value!r})")
        return impl.finalize(model, backend, mmap_dir)

    @classmethod
    def get_compressible_op_names(
        cls,
        model: nn.Module,
        execution_mode: ExecutionMode | str,
        example_inputs: tuple[Any, ...] | None = None,
    ) -> set[str]:
        """Names of the ops of *model* that a config can target in *execution_mode*.

        Eager mode answers for an eager-prepared model, or for a float model given
        *example_inputs* (one forward names the ops); graph mode reads the exported graph.
        """
        impl_cls = get_mode_implementation(
            execution_mode, required_for="Quantizer.get_compressible_op_names()"
        )
        assert impl_cls is not None
        return impl_cls.get_compressible_op_names(model, example_inputs)

    # -- life cycle ---------------------------------------------------------------------

    @contextlib.contextmanager
    def calibration_mode(self, model: nn.Module | None = None) -> Iterator[nn.Module]:
        """Observers on, fake-quant off, eval mode; on exit observers off, fake-quant on.

        Raises ``RuntimeError`` if the model is not prepared.
        """
        target = self._target(model, "calibration_mode()")
        with _lifecycle.calibration_mode(target) as m:
            yield m

    @contextlib.contextmanager
    def training_mode(self, model: nn.Module | None = None) -> Iterator[nn.Module]:
        """Train mode with observers and fake-quant on, or their ``QATSchedule`` state.

        On exit observers are off and fake-quant on (whatever the schedule) and the
        train/eval flags are restored. The step count resumes where it was. Raises
        ``RuntimeError`` if the model is not prepared or when nested.
        """
        target = self._target(model, "training_mode()")
        with _lifecycle.training_mode(target, self._state, lambda: self._schedules(target)) as m:
            yield m

    def step(self) -> None:
        """Advance the QAT schedule by one step, then apply the new switch states.

        Must run inside :meth:`training_mode` (``RuntimeError`` otherwise); warns and
        does nothing else when no module config has a ``qat_schedule``. Under
        ``torch.distributed`` it first synchronises the observer ranges across the ranks
        (a collective: call it on every rank), unless
        ``coreai_opt.quantization.distributed.set_auto_sync(False)``.
        """
        _lifecycle.step(self._state)

    def sync_observers(
        self, model: nn.Module | None = None, *, group: distributed.ProcessGroup | None = None
    ) -> int:
        """Synchronise the observer ranges across the data-parallel ranks now.

        A collective: every rank of *group* (None: the default process group) must call
        it. Reduces every stateful fake-quantizer's running range (MIN of the minima, MAX
        of the maxima) in one all-reduce and recomputes its qparams; see
        :mod:`coreai_opt.quantization.distributed` for the rules. *model* is the prepared
        model (default: the one ``prepare`` returned) or the ``DistributedDataParallel``
        wrapping it, which warns when it was built with ``broadcast_buffers=True``. Runs
        whatever ``distributed.set_auto_sync`` says (that switch only covers the automatic
        sync at calibration exit and ``step()``).

        Returns:
            The number of fake-quantizers synchronised; 0, with no collective, when
            ``torch.distributed`` is not initialised or the group has one rank.
        """
        wrapper = model if isinstance(model, nn.parallel.DistributedDataParallel) else None
        inner = wrapper.module if wrapper is not None else model
        target = self._target(inner, "sync_observers()")
        return distributed.sync_observers(wrapper if wrapper is not None else target, group)

    def _toggle(
        self,
        module: nn.Module | None,
        caller: str,
        *,
        observer: bool | None = None,
        fake_quant: bool | None = None,
    ) -> None:
        model = self._target(None, caller)
        if _lifecycle.config_has_schedule(self._config):
            raise RuntimeError(
                f"{caller} is not allowed when a qat_schedule is configured (the schedule "
                f"controls observers and fake-quant; remove qat_schedule from the config to "
                f"toggle them by hand)"
            )
        if module is None:
            module = model
        elif not any(m is module for m in model.modules()):
            raise ValueError(
                f"{caller}: module {type(module).__name__} is not part of the prepared model"
            )
        _lifecycle.set_switches(module, observer=observer, fake_quant=fake_quant)

    def enable_observer(self, module: nn.Module | None = None) -> None:
        """Turn observers on for the prepared model or the subtree *module*."""
        self._toggle(module, "enable_observer()", observer=True)

    def disable_observer(self, module: nn.Module | None = None) -> None:
        """Turn observers off for the prepared model or the subtree *module*."""
        self._toggle(module, "disable_observer()", observer=False)

    def enable_fake_quant(self, module: nn.Module | None = None) -> None:
        """Turn fake quantization on for the prepared model or the subtree *module*."""
        self._toggle(module, "enable_fake_quant()", fake_quant=True)

    def disable_fake_quant(self, module: nn.Module | None = None) -> None:
        """Turn fake quantization off for the prepared model or the subtree *module*."""
        self._toggle(module, "disable_fake_quant()", fake_quant=False)

    def calibrate(
        self,
        data: Iterable[Any],
        model: nn.Module | None = None,
        *,
        progress: bool | None = None,
        max_batches: int | None = None,
    ) -> nn.Module:
        """Run the prepared model over *data* in :meth:`calibration_mode` (no grad).

        Each batch is passed as ``model(*batch)`` for a tuple/list, ``model(**batch)``
        for a dict and ``model(batch)`` otherwise. A tqdm progress bar is shown when
        *progress* is True, or when it is None and stderr is a terminal.
        """
        target = self._target(model, "calibrate()")
        if max_batches is not None and max_batches < 0:
            raise ValueError(f"max_batches={max_batches} must be >= 0 or None")
        show = sys.stderr.isatty() if progress is None else bool(progress)
        total = None
        if hasattr(data, "__len__"):
            total = len(data)  # type: ignore[arg-type]
            if max_batches is not None:
                total = min(total, max_batches)
        with self.calibration_mode(target), torch.no_grad():
            bar = tqdm(data, total=total, disable=not show, desc="calibrating", unit="batch")
            for index, batch in enumerate(bar):
                if max_batches is not None and index >= max_batches:
                    break
                if isinstance(batch, (tuple, list)):
                    target(*batch)
                elif isinstance(batch, dict):
                    target(**batch)
                else:
                    target(batch)
            bar.close()
        return target
