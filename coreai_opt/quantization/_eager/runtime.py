"""The running side of an eager-prepared model: module frames, the C++ tables and their
re-binding.

:class:`EagerRuntime` lives on the prepared model (attribute ``_coreai_opt_eager``). It
owns the ``EagerProgram`` (C++ tables: which op call's tensors go through which
fake-quantizer) and puts a :class:`FramedForward` on every module, which pushes and pops
the module's frame around its forward. The
tables point at the fake-quantizers' state tensors; whenever those may have been replaced
(``spec._state_epoch``) the next hooked module call re-binds them, so ``.to()``,
``.half()``, ``load_state_dict`` (also ``assign=True``), deepcopy and pickling keep the
model working. A deepcopy / unpickle drops the C++ object and rebuilds it on first use.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from coreai_opt import _ops
from coreai_opt.quantization._eager import op_registry
from coreai_opt.quantization._eager.recording import RECORDING_THREADS
from coreai_opt.quantization.spec import _state_epoch
from coreai_opt.quantization.spec.fake_quantize import FakeQuantize, FakeQuantizeImplBase

__all__ = ["RUNTIME_ATTR", "EagerRuntime", "SiteRef", "get_runtime"]

RUNTIME_ATTR = "_coreai_opt_eager"

_lib = torch.library.Library("coreai_opt", "IMPL")
_PYTHON_FQS: dict[int, weakref.ref[nn.Module]] = {}
_ids = itertools.count()
_EPOCH = _state_epoch.EPOCH
_RANGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_PUSH, _POP = _ops.eager_frame_ops()
_PUSH_C, _POP_C = _ops.eager_frame_c_calls()
_dispatch_modes = torch._C._len_torch_dispatch_stack
_is_compiling = torch.compiler.is_compiling
_is_exporting = torch.compiler.is_exporting


def _apply_python_fake_quantizer(x: torch.Tensor, fq_id: int) -> torch.Tensor:
    ref = _PYTHON_FQS.get(fq_id)
    fq = None if ref is None else ref()
    if fq is None:
        raise RuntimeError(
            f"coreai_opt eager: fake-quantizer {fq_id} no longer exists (the model's tables "
            f"were not re-bound after its fake-quantizers were replaced)"
        )
    if (
        isinstance(fq, FakeQuantizeImplBase)
        and torch._C._current_graph_task_id() != -1
        and int(fq.observer_enabled[0])
    ):
        # A backward pass (activation-checkpoint recompute) re-applies but never observes.
        fq.observer_enabled[0] = 0
        try:
            return fq(x)
        finally:
            fq.observer_enabled[0] = 1
    return fq(x)


_lib.impl(
    "_eager_apply_python_fake_quantizer", _apply_python_fake_quantizer, "CompositeImplicitAutograd"
)
# torch.jit.trace records any op it sees as one node: a Python slot would become an opaque
# call back into this process. On the Tracer key the module runs with tracing on, so the
# trace holds its ops (a finalized model's quantize / dequantize).
_lib.impl("_eager_apply_python_fake_quantizer", _apply_python_fake_quantizer, "Tracer")


class SiteRef:
    """A placed activation fake-quantizer: where it applies and its submodule path.

    Placement creates these (each ``placement.ActivationSite`` carries one); the runtime
    keeps only them, so what it pickles / deep-copies with the model holds no specs.
    """

    __slots__ = ("base_id", "call_index", "element", "fq_path", "index", "module_index", "output")

    def __init__(
        self,
        module_index: int,
        base_id: int,
        call_index: int,
        output: bool,
        index: int,
        element: int,
        fq_path: str,
    ) -> None:
        """Record one site: frame *module_index*, op *base_id*, *call_index*-th call in the
        frame; input (schema position *index*, list *element*, -1: none) or output
        *index*; *fq_path*: the fake-quantizer's qualified name."""
        self.module_index = module_index
        self.base_id = base_id
        self.call_index = call_index
        self.output = output
        self.index = index
        self.element = element
        self.fq_path = fq_path


def _native_args(fq: FakeQuantizeImplBase) -> tuple[Any, ...] | None:
    """Arguments of ``EagerProgram.add_native_slot`` for *fq*, or None for the Python path."""
    if type(fq) is not FakeQuantize or fq._disabled or fq._pattern is None:
        return None
    if fq._method is None or fq.is_stateless:
        return None
    calc = fq.qparams_calculator
    state = [fq.observer_enabled, fq._observer_off, fq.fake_quant_enabled, *fq.kernel_state()]
    ranges: list[float] = []
    for dtype in _RANGE_DTYPES:
        lo, hi = calc.effective_float_range(dtype)
        ranges += [math.nan if lo is None else float(lo), math.nan if hi is None else float(hi)]
    return (
        state,
        list(fq._pattern),
        *fq.kernel_format(),
        bool(fq._export_mode),
        fq._method,
        float(calc.averaging_constant_value),
        ranges,
    )


# Attributes of a bound method that FramedForward answers for the forward it wraps.
_FORWARDED = frozenset(
    {
        "__code__",
        "__func__",
        "__self__",
        "__name__",
        "__qualname__",
        "__wrapped__",
        "__defaults__",
        "__kwdefaults__",
        "__annotations__",
    }
)


class FramedForward:
    """The ``forward`` of one hooked module: push its frame, run the module's own forward
    (with its module_input / module_output fake-quantizers), pop the frame.

    Set as the instance attribute ``forward``, so ``nn.Module.__call__`` takes its path
    without hooks: about 0.8 µs less per module call than a forward pre-hook and an
    always-called forward hook doing the same (torch's hook loop and two Python calls).
    Hooks of the module (the user's, FSDP's) run outside the frame, as in the recording
    pass. A plain object with references to its module and runtime, so that deepcopy and
    pickling carry it over to the copy. While the recording pass runs (ModelInspector on a
    prepared model) it pushes no frame: the recording's own frame names the ops. Under
    torch.compile or torch.export it raises the error that points to graph mode.
    """

    def __init__(
        self,
        module: nn.Module,
        runtime: EagerRuntime,
        index: int,
        boundary: _BoundaryHooks | None,
        inner: Any = None,
    ) -> None:
        self.module = module
        self.runtime = runtime
        self.index = index
        self.boundary = boundary
        self.inner = inner  # a forward the module had as an instance attribute, or None

    def target(self) -> Any:
        """The forward this one wraps, bound to the module."""
        if self.inner is not None:
            return self.inner
        return type(self.module).forward.__get__(self.module)

    @property
    def __signature__(self) -> inspect.Signature:
        """The wrapped forward's signature (``inspect.signature(module.forward)``)."""
        return inspect.signature(self.target())

    def __getattr__(self, name: str) -> Any:
        # Code that inspects module.forward as a bound method (torch.export reads its
        # __code__) sees the wrapped forward's attributes. Other dunders are not forwarded
        # (copy and pickle probe them on an object whose __dict__ is not yet restored).
        if (name.startswith("__") and name not in _FORWARDED) or "module" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.target(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _is_compiling() or _is_exporting():
            # Compiled or exported, a module (the root or any submodule) would run without
            # its fake-quantizers: the interception is not traced. A Python raise inside
            # code Dynamo traces becomes a graph break (this would then rerun eagerly);
            # the refusal is an op that fails wherever it runs, fake-tensor propagation
            # included, which Dynamo reports as an error.
            _ops.eager_refuse_tracing()
        module = self.module
        if RECORDING_THREADS and threading.get_ident() in RECORDING_THREADS:
            output = self._run(module, args, kwargs)
        else:
            output = self._run_in_frame(module, args, kwargs)
        boundary = self.boundary
        if boundary is not None and boundary.outputs:
            output = boundary.post(module, args, output)
        return output

    def _run_in_frame(self, module: nn.Module, args: Any, kwargs: Any) -> Any:
        runtime = self.runtime
        if runtime.bound_epoch != _EPOCH[0]:
            # Bookkeeping, not computation: under torch.jit.trace the tracer would refuse
            # the calls into the program (a ScriptObject outside the traced module).
            tracing = torch._C._get_tracing_state()
            if tracing is not None:
                torch._C._set_tracing_state(None)
            try:
                runtime.rebind()
            finally:
                if tracing is not None:
                    torch._C._set_tracing_state(tracing)
        handle, index = runtime.handle, self.index
        if _dispatch_modes():
            # Under a TorchDispatchMode every op call goes through the Python fallback,
            # which restores the dispatch-key TLS when the op returns (the scope would be
            # lost): call the program directly, bypassing the dispatcher.
            program = runtime.program
            program.push_frame(index)
            try:
                output = self._run(module, args, kwargs)
            except BaseException:
                with contextlib.suppress(Exception):  # the forward's error is the one to see
                    program.pop_frame(index)
                raise
            program.pop_frame(index)
            return output
        if _PUSH_C(handle, index):
            _PUSH(handle, index)  # failed unchanged: the op raises the error
        try:
            output = self._run(module, args, kwargs)
        except BaseException:
            _POP_C(handle, index)  # the forward's error is the one to see
            raise
        if _POP_C(handle, index):
            _POP(handle, index)
        return output

    def _run(self, module: nn.Module, args: Any, kwargs: Any) -> Any:
        # The module's forward, its module_input fake-quantizers first (inside the frame).
        boundary = self.boundary
        if boundary is not None and boundary.inputs:
            args, kwargs = boundary.pre(module, args, kwargs)
        if self.inner is not None:
            return self.inner(*args, **kwargs)
        return type(module).forward(module, *args, **kwargs)


class _BoundaryHooks:
    """module_input_spec / module_output_spec fake-quantizers of one module applied to its
    boundary tensors (those no intercepted op reads or produces): position i counts the
    tensors of the flattened ``(args, kwargs)`` / output, as the recording pass did."""

    def __init__(self, inputs: Sequence[tuple[int, str]], outputs: Sequence[tuple[int, str]]):
        self.inputs = list(inputs)
        self.outputs = list(outputs)

    @staticmethod
    def _apply(module: nn.Module, value: Any, sites: Sequence[tuple[int, str]]) -> Any:
        leaves, spec = tree_flatten(value)
        positions = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
        for index, fq_name in sites:
            fq = module._modules.get(fq_name)
            # a fake-quantizer, or what finalize put in its place
            if isinstance(fq, nn.Module) and index < len(positions):
                leaves[positions[index]] = fq(leaves[positions[index]])
        return tree_unflatten(leaves, spec)

    def pre(self, module: nn.Module, args: Any, kwargs: Any) -> Any:
        return self._apply(module, (args, kwargs), self.inputs)

    def post(self, module: nn.Module, args: Any, output: Any) -> Any:
        return self._apply(module, output, self.outputs)


class EagerRuntime:
    """Hooks and C++ tables of one eager-prepared model (see the module docstring)."""

    def __init__(
        self, model: nn.Module, sites: Sequence[SiteRef], hooked: Sequence[tuple[int, str]]
    ) -> None:
        """Bind to *model* (the prepared root); *hooked*: (frame index, module path) of the
        modules that get frames (indices as numbered by the recording pass)."""
        self.model = model
        self.sites = list(sites)
        self.hooked = sorted(set(hooked))
        self.boundaries: dict[str, tuple[list[tuple[int, str]], list[tuple[int, str]]]] = {}
        self.program: Any = None
        self.handle = 0
        self.bound_epoch = -1
        self._python_ids: list[int] = []
        self._handles: list[Any] = []

    # -- hooks ---------------------------------------------------------------------------

    def install_hooks(self) -> None:
        """Give every hooked module (the root included) its :class:`FramedForward`, with
        its boundary fake-quantizers and the refusal to be compiled or exported."""
        boundaries = {
            path: _BoundaryHooks(inputs, outputs)
            for path, (inputs, outputs) in self.boundaries.items()
        }
        for index, path in self.hooked:
            module = self.model.get_submodule(path) if path else self.model
            # A forward set on the instance before (the user's, or another prepared
            # model's wrapper for a shared module, whose frame then opens first) is wrapped.
            inner = module.__dict__.get("forward")
            module.__dict__["forward"] = FramedForward(
                module, self, index, boundaries.pop(path, None), inner
            )
        for path, boundary in boundaries.items():  # a boundary outside every hooked module
            module = self.model.get_submodule(path) if path else self.model
            if boundary.inputs:
                self._handles.append(
                    module.register_forward_pre_hook(boundary.pre, with_kwargs=True)
                )
            if boundary.outputs:
                self._handles.append(module.register_forward_hook(boundary.post))

    # -- binding -------------------------------------------------------------------------

    def rebind(self) -> None:
        """(Re)build the C++ tables from the current fake-quantizer modules."""
        if self.program is None:
            # A model unpickled in a fresh process: its op types must be intercepted there
            # too (registration is per process).
            op_registry.ensure_registered()
            self.program = _ops.eager_program()
            self.handle = int(self.program.handle())
        program = self.program
        for fq_id in self._python_ids:
            _PYTHON_FQS.pop(fq_id, None)
        self._python_ids = []
        program.clear_policies()
        program.clear_slots()
        slots: dict[str, int] = {}
        epoch = _EPOCH[0]
        grouped: dict[tuple[int, int, int], list[SiteRef]] = {}
        for site in self.sites:
            if site.fq_path not in slots:
                try:
                    fq = self.model.get_submodule(site.fq_path)
                except AttributeError:
                    continue  # removed
                if isinstance(fq, nn.Identity):
                    continue
                # A fake-quantizer, or what finalize put in its place (a quantize /
                # dequantize pair): anything but the built-in FakeQuantize is called
                # through the Python slot.
                fq_id = next(_ids)
                _PYTHON_FQS[fq_id] = weakref.ref(fq)
                self._python_ids.append(fq_id)
                native = _native_args(fq)
                if native is None:
                    slots[site.fq_path] = program.add_python_slot(fq_id)
                else:
                    slots[site.fq_path] = program.add_native_slot(*native, fq_id)
            grouped.setdefault((site.module_index, site.base_id, site.call_index), []).append(site)
        for (module, base, call), group in grouped.items():
            ins = [s for s in group if not s.output and s.fq_path in slots]
            outs = [s for s in group if s.output and s.fq_path in slots]
            program.set_op_policy(
                module,
                base,
                call,
                [s.index for s in ins],
                [s.element for s in ins],
                [slots[s.fq_path] for s in ins],
                [s.index for s in outs],
                [slots[s.fq_path] for s in outs],
            )
        # Building may itself size state (never here) — record the epoch seen at the start.
        self.bound_epoch = epoch

    def drop_sites(self, fq_path: str) -> None:
        """Forget the sites of a removed fake-quantizer."""
        self.sites = [s for s in self.sites if s.fq_path != fq_path]
        self.bound_epoch = -1

    # -- copying -------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["program"] = None
        state["handle"] = 0
        state["bound_epoch"] = -1
        state["_python_ids"] = []
        state["_handles"] = []
        return state


def get_runtime(model: nn.Module) -> EagerRuntime | None:
    """The eager runtime of a prepared *model*, or None."""
    runtime = model.__dict__.get(RUNTIME_ATTR)
    return runtime if isinstance(runtime, EagerRuntime) else None
