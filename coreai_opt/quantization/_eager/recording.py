"""Prepare's recording pass: one forward through the C++ interceptor in recording mode.

Every intercepted call reaches Python once (through the ``_eager_record_call`` op, whose
kernel is :func:`_record_call`) with its module frame, op base name, call index, tensor
arguments and outputs. Python forward hooks on every module record which tensors cross
each module call's boundary. The result (:class:`Recording`) is what placement, the
inspector and ``get_compressible_op_names`` read; the interceptor itself is the same one
that runs the prepared model, so names always agree.
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from coreai_opt import _ops
from coreai_opt.quantization._eager import op_registry
from coreai_opt.quantization._lifecycle import restore_training_flags

__all__ = ["ModuleCall", "OpArg", "OpCall", "Recording", "module_index", "record"]

_lib = torch.library.Library("coreai_opt", "IMPL")
_ACTIVE: list[_Recorder] = []
# Threads running the recording pass, with their nesting depth. A prepared model's
# FramedForward (runtime.py) pushes no frame on them: the recording's own frames name the
# ops, as they did when the model's frames were hooks that the recording frame followed.
RECORDING_THREADS: dict[int, int] = {}


@dataclass
class ModuleCall:
    """One call of a module during the recording pass."""

    path: str
    module_type: type
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor] = field(default_factory=list)
    parent: ModuleCall | None = None
    ops: list[OpCall] = field(default_factory=list)


@dataclass
class OpArg:
    """A tensor argument of an op call: schema index, list element (-1: none), name."""

    index: int
    element: int
    name: str
    tensor: torch.Tensor


@dataclass
class OpCall:
    """One intercepted op call."""

    module_path: str
    module_index: int
    base_name: str
    base_id: int
    call_index: int
    overload: op_registry.EagerOpOverload
    inputs: list[OpArg]
    outputs: list[torch.Tensor | None]
    module_call: ModuleCall
    order: int
    stack: traceback.StackSummary | None = None  # Python stack, with record(capture_stack=True)

    @property
    def local_name(self) -> str:
        """``<base>`` for the first call in its module call, ``<base>_<k>`` after."""
        return self.base_name if self.call_index == 0 else f"{self.base_name}_{self.call_index}"

    @property
    def op_name(self) -> str:
        """``<module path>.<local name>`` (the bare local name at the top level)."""
        return f"{self.module_path}.{self.local_name}" if self.module_path else self.local_name

    @property
    def op_type(self) -> str:
        """The registry key of the op."""
        return self.overload.op_type


@dataclass
class Recording:
    """Everything the recording pass saw."""

    ops: list[OpCall]
    module_calls: list[ModuleCall]
    root_call: ModuleCall | None
    paths: list[str]


def module_index(model: nn.Module) -> tuple[list[str], dict[int, int]]:
    """Canonical module paths (index = frame id) and ``id(module) → index``."""
    paths: list[str] = []
    index: dict[int, int] = {}
    for path, module in model.named_modules():
        index[id(module)] = len(paths)
        paths.append(path)
    return paths, index


class _Recorder:
    def __init__(self, model: nn.Module, capture_stack: bool = False) -> None:
        self.capture_stack = capture_stack
        self.paths, self.index = module_index(model)
        self.stack: list[ModuleCall] = []
        self.ops: list[OpCall] = []
        self.module_calls: list[ModuleCall] = []
        self.root_call: ModuleCall | None = None
        self.names = op_registry.base_names()
        self.overloads = op_registry.op_overloads()

    def call(
        self,
        module: int,
        base_id: int,
        call_index: int,
        inputs: list[torch.Tensor | None],
        indices: list[int],
        elements: list[int],
        outputs: list[torch.Tensor | None],
        overload: op_registry.EagerOpOverload,
    ) -> None:
        schema_args = overload.arg_names
        args = [
            OpArg(i, e, schema_args[i], t)
            for t, i, e in zip(inputs, indices, elements, strict=True)
            if t is not None
        ]
        owner = self.stack[-1] if self.stack else ModuleCall("", nn.Module, [])
        op = OpCall(
            self.paths[module],
            module,
            self.names[base_id],
            base_id,
            call_index,
            overload,
            args,
            list(outputs),
            owner,
            len(self.ops),
            traceback.extract_stack() if self.capture_stack else None,
        )
        self.ops.append(op)
        owner.ops.append(op)


def _record_call(
    name: str,
    overload_name: str,
    module: int,
    base_id: int,
    call_index: int,
    inputs: list[torch.Tensor | None],
    indices: list[int],
    elements: list[int],
    outputs: list[torch.Tensor | None],
) -> None:
    if not _ACTIVE:
        return
    recorder = _ACTIVE[-1]
    overload = recorder.overloads[(name, overload_name)]
    recorder.call(module, base_id, call_index, inputs, indices, elements, outputs, overload)


_lib.impl("_eager_record_call", _record_call, "CompositeImplicitAutograd")


def _flat_tensors(value: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(value)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


@contextlib.contextmanager
def _recording_hooks(model: nn.Module, recorder: _Recorder, program: Any) -> Iterator[None]:
    handles = []
    for _, module in model.named_modules():  # each module once, shared ones included
        idx = recorder.index[id(module)]

        def pre(mod: nn.Module, args: Any, kwargs: Any, idx: int = idx) -> None:
            parent = recorder.stack[-1] if recorder.stack else None
            call = ModuleCall(
                recorder.paths[idx], type(mod), _flat_tensors((args, kwargs)), parent=parent
            )
            recorder.module_calls.append(call)
            if parent is None and recorder.root_call is None:
                recorder.root_call = call
            recorder.stack.append(call)
            program.push_frame(idx)

        def post(mod: nn.Module, args: Any, kwargs: Any, output: Any, idx: int = idx) -> None:
            program.pop_frame(idx)
            call = recorder.stack.pop()
            call.outputs = _flat_tensors(output)

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        # The pre-hook comes after the module's own hooks and the post-hook (prepended)
        # before them, so their ops are named outside the module's frame, as the prepared
        # model's FramedForward names them at run time.
        handles.append(
            module.register_forward_hook(post, with_kwargs=True, always_call=True, prepend=True)
        )
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def record(
    model: nn.Module, example_inputs: tuple[Any, ...], capture_stack: bool = False, **kwargs: Any
) -> Recording:
    """Run *model* once on *example_inputs* (eval, no_grad) and record every intercepted call.

    With *capture_stack* (off by default: it costs a stack walk per op) each ``OpCall``
    keeps the Python stack of its call in ``stack`` (for the inspector's source lines).
    The model's train/eval flags are restored afterwards.
    """
    op_registry.ensure_registered()
    recorder = _Recorder(model, capture_stack)
    program = _ops.eager_program()
    program.set_recording(True)
    _ACTIVE.append(recorder)
    thread = threading.get_ident()
    RECORDING_THREADS[thread] = RECORDING_THREADS.get(thread, 0) + 1
    try:
        with restore_training_flags(model):
            model.eval()
            with torch.no_grad(), _recording_hooks(model, recorder, program):
                model(*example_inputs, **kwargs)
    finally:
        _ACTIVE.pop()
        if RECORDING_THREADS[thread] == 1:
            del RECORDING_THREADS[thread]
        else:
            RECORDING_THREADS[thread] -= 1
    return Recording(recorder.ops, recorder.module_calls, recorder.root_call, recorder.paths)
