"""``torch.export`` of the model to quantize, with errors that say what to try."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch
from torch import fx, nn

__all__ = ["export_model", "export_program"]


def export_program(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    dynamic_shapes: Any = None,
    export_with_no_grad: bool = True,
) -> fx.GraphModule:
    """``torch.export.export(model, ..., strict=False)`` (under ``no_grad`` when asked),
    unlifted into a ``GraphModule`` without input guard checks. Export errors propagate as
    torch raised them; :func:`export_model` and ``ModelInspector`` add their own hints."""
    grad = torch.no_grad() if export_with_no_grad else contextlib.nullcontext()
    with grad:
        program = torch.export.export(
            model, example_inputs, dynamic_shapes=dynamic_shapes, strict=False
        )
    if "check_guards" in inspect.signature(program.module).parameters:
        return program.module(check_guards=False)
    return program.module()


def export_model(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    dynamic_shapes: Any = None,
    export_with_no_grad: bool = True,
) -> fx.GraphModule:
    """*model* exported (non-strict, training IR) and unlifted into a ``GraphModule``.

    Raises:
        RuntimeError: the export failed; the cause is attached and the message lists
            what commonly helps.
    """
    try:
        gm = export_program(model, example_inputs, dynamic_shapes, export_with_no_grad)
    except Exception as err:
        raise RuntimeError(
            f"Failed to trace the model with torch.export.export(): {type(err).__name__}: "
            f"{err}\nThings to try: prepare(..., export_with_no_grad={not export_with_no_grad}); "
            f"dynamic_shapes=... if the input shapes vary (or None if the given spec is "
            f"wrong); or QuantizerConfig(execution_mode='eager'), which needs no export"
        ) from err
    _drop_unpicklable_hooks(gm, example_inputs)
    # Unpickling re-traces the generated code with the recorded tracer class (deepcopy
    # passes the graph's on): export's own tracer cannot be built without arguments, and
    # the plain FX tracer folds computations that read only buffers into constants (the
    # conv-bn QAT term, finalize's compressed weights), so use one that keeps buffers.
    gm._tracer_cls = BufferKeepingTracer
    gm.graph._tracer_cls = BufferKeepingTracer
    gm._tracer_extras = {}
    return gm


class BufferKeepingTracer(fx.Tracer):
    """The FX tracer with buffer reads kept as ``get_attr`` nodes (not folded into
    ``_tensor_constant`` values): what re-traces a prepared model when it is unpickled."""

    proxy_buffer_attributes = True


def _drop_unpicklable_hooks(gm: fx.GraphModule, example_inputs: tuple[Any, ...]) -> None:
    """Remove the hooks the unlifted module gets for inputs that are nn.Modules when there
    are none: they do nothing then, and as local lambdas they make the model unpicklable."""
    leaves = torch.utils._pytree.tree_leaves(example_inputs)
    if any(isinstance(leaf, nn.Module) for leaf in leaves):
        return
    for hooks in (gm._forward_pre_hooks, gm._forward_hooks):
        for key, hook in list(hooks.items()):
            if "<lambda>" in getattr(hook, "__qualname__", ""):
                del hooks[key]
                gm._forward_hooks_always_called.pop(key, None)
    # The input-constraint check of the unlifted module is a forward pre-hook that
    # GraphModule's deepcopy and unpickling drop: a copy would accept inputs its original
    # refuses. Drop it here so that a prepared model and its copies behave the same (the
    # kernels check shapes and dtypes themselves).
    for key, hook in list(gm._forward_pre_hooks.items()):
        if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":
            del gm._forward_pre_hooks[key]
