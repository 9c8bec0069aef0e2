"""``ModelInspector``: find the module names, module types, op names and op types of a
model, the names a ``QuantizerConfig`` uses to target parts of it.

Graph mode exports the model with ``torch.export.export(..., strict=False)`` (as
``Quantizer.prepare`` does) and reads every node of the graph; see
:mod:`coreai_opt.inspection._graph_parse` for how nodes become ops. Eager mode runs the
model once through the eager interceptor (as ``Quantizer.prepare`` does) and lists the
intercepted ops under the names eager configs match; see
:mod:`coreai_opt.inspection._eager_parse`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Collection
from typing import Any

from torch import fx, nn

from coreai_opt.inspection._eager_parse import parse_eager_model
from coreai_opt.inspection._graph_parse import parse_graph_module, qualified_type_name
from coreai_opt.inspection._info import ModelSummary, OpInfo
from coreai_opt.inspection._render import render_summary
from coreai_opt.quantization._graph.export import export_program
from coreai_opt.quantization._lifecycle import is_prepared
from coreai_opt.quantization.config import ExecutionMode
from coreai_opt.quantization.config.quantization_config import parse_execution_mode

__all__ = ["ModelInspector"]


class ModelInspector:
    """The ops and modules of a model, under the names quantization configs use.

    Args:
        model: the model to inspect (an ``nn.Module``; a ``torch.fx.GraphModule`` from
            ``torch.export`` may be given with ``example_inputs=None`` and is then read
            as it is).
        example_inputs: positional inputs for ``torch.export`` or for the eager forward
            (a tuple; a list is accepted). None only for a ``GraphModule`` in graph mode.
        execution_mode: ``ExecutionMode.GRAPH`` / ``"graph"`` (the names of
            ``torch.export`` graph nodes, what graph-mode configs match) or
            ``ExecutionMode.EAGER`` / ``"eager"`` (one forward, eval and ``no_grad``;
            op names ``<module>.<op>[_k]`` and registry op types, what eager-mode
            configs match; synthetic ``input_<i>`` / ``output_<i>`` boundary ops).
        compressor: a ``Quantizer`` class (or subclass); when given, only the ops its
            ``get_compressible_op_names(model, execution_mode)`` returns are kept
            (eager mode passes *example_inputs* too).
        dynamic_shapes: passed to ``torch.export.export`` unchanged (graph mode only;
            eager mode warns and ignores it).
        export_with_no_grad: export under ``torch.no_grad()`` (default True; graph mode
            only, eager mode warns about any other value).

    Raises:
        TypeError: *model* is not an ``nn.Module``.
        InvalidExecutionModeError: (a ``ValueError``) *execution_mode* is not an
            ``ExecutionMode`` value.
        ValueError: *example_inputs* is None for anything but a ``GraphModule`` in
            graph mode, or *compressor* is not a ``Quantizer`` subclass.
        TypeError: a ``torch.fx.GraphModule`` in eager mode.

    Example::

        model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
        inspector = ModelInspector(model, (torch.randn(1, 10),), execution_mode="graph")
        print(inspector.format_summary())
        inspector.get_matched_ops_for_op_type("linear")  # (linear, linear_1)

        eager = ModelInspector(model, (torch.randn(1, 10),), execution_mode="eager")
        eager.get_matched_ops_for_op_type("linear")  # (0.linear, 2.linear)
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: tuple[Any, ...] | list[Any] | None,
        execution_mode: ExecutionMode | str,
        compressor: type | None = None,
        dynamic_shapes: Any = None,
        export_with_no_grad: bool = True,
    ) -> None:
        """Check the arguments, then capture and parse the model (see the class doc)."""
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module, got {type(model).__module__}."
                f"{type(model).__qualname__}"
            )
        mode = parse_execution_mode(execution_mode)
        is_graph_module = isinstance(model, fx.GraphModule)
        if example_inputs is None and not (is_graph_module and mode is ExecutionMode.GRAPH):
            raise ValueError(
                "example_inputs=None is only allowed for a torch.fx.GraphModule in "
                f"execution_mode='graph'; got a {type(model).__name__} in execution_mode="
                f"{mode.value!r}. Pass a tuple of example inputs."
            )
        if example_inputs is not None:
            example_inputs = _as_tuple(example_inputs)
        _check_compressor(compressor)

        self._model = model
        self._mode = mode
        self._compressor = compressor
        self._graph_module: fx.GraphModule | None = None

        if mode is ExecutionMode.EAGER:
            if is_graph_module:
                raise TypeError(
                    "execution_mode='eager' inspects a plain nn.Module; got a "
                    "torch.fx.GraphModule. Pass the original model, or use "
                    "execution_mode='graph'."
                )
            for name, value, default in (
                ("dynamic_shapes", dynamic_shapes, None),
                ("export_with_no_grad", export_with_no_grad, True),
            ):
                if value is not default:
                    warnings.warn(
                        f"{name}={value!r} only applies to execution_mode='graph'; it is "
                        "ignored in execution_mode='eager'",
                        UserWarning,
                        stacklevel=2,
                    )
            assert example_inputs is not None
            self._inspect_eager(model, example_inputs, compressor)
            return

        if example_inputs is None:
            assert isinstance(model, fx.GraphModule)
            if dynamic_shapes is not None:
                warnings.warn(
                    "dynamic_shapes is ignored when example_inputs is None (the "
                    "GraphModule is inspected as given, without exporting it)",
                    UserWarning,
                    stacklevel=2,
                )
            graph_module = model
            root_type: str | None = None
            source_model: nn.Module | None = None
        else:
            graph_module = export_graph_module(
                model, example_inputs, dynamic_shapes, export_with_no_grad
            )
            root_type = qualified_type_name(type(model))
            source_model = model
        self._graph_module = graph_module

        keep = None
        if compressor is not None:
            names = compressor.get_compressible_op_names(graph_module, ExecutionMode.GRAPH)  # type: ignore[attr-defined]
            allowed = _as_name_set(names, compressor)
            keep = lambda op: op.op_name in allowed  # noqa: E731
        parsed = parse_graph_module(
            graph_module, root_type=root_type, source_model=source_model, keep=keep
        )
        self._ops = tuple(parsed.kept)
        self._root = parsed.root
        self._hidden = frozenset(
            op.op_name for op in parsed.ops if op.op_type in ("placeholder", "output")
        )

    def _inspect_eager(
        self, model: nn.Module, example_inputs: tuple[Any, ...], compressor: type | None
    ) -> None:
        """Eager mode: one recording forward (a second one for the compressor's names)."""
        keep = None
        if compressor is not None:
            names = compressor.get_compressible_op_names(  # type: ignore[attr-defined]
                model, ExecutionMode.EAGER, example_inputs
            )
            allowed = _as_name_set(names, compressor)
            keep = lambda op: op.op_name in allowed  # noqa: E731
        try:
            parsed = parse_eager_model(model, example_inputs, keep=keep)
        except Exception as err:
            if is_prepared(model) and hasattr(err, "add_note"):
                err.add_note(
                    "ModelInspector(execution_mode='eager') runs the model through the eager "
                    "recording pass; the model given is already prepared. Inspect the float "
                    "model (before Quantizer.prepare) instead."
                )
            raise
        self._ops = tuple(parsed.kept)
        self._root = parsed.root
        self._hidden = parsed.boundary_names

    # -- accessors -----------------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The model given to the constructor."""
        return self._model

    @property
    def execution_mode(self) -> ExecutionMode:
        """The execution mode the model was inspected in."""
        return self._mode

    @property
    def graph_module(self) -> fx.GraphModule | None:
        """The graph that was inspected (the exported model, or the one given); None in
        eager mode."""
        return self._graph_module

    @property
    def ops(self) -> tuple[OpInfo, ...]:
        """Every op kept (all ops, or the compressible ones), in execution order."""
        return self._ops

    @property
    def summary(self) -> ModelSummary:
        """The module tree with the kept ops, and the execution mode."""
        return ModelSummary(model=self._root, mode=self._mode)

    # -- queries -------------------------------------------------------------------------

    def get_matched_ops_for_op_type(self, op_type: str) -> tuple[OpInfo, ...]:
        """The ops whose ``op_type`` equals *op_type* (exact, case-sensitive)."""
        if not isinstance(op_type, str):
            raise TypeError(f"op_type must be a str, got {type(op_type).__name__}")
        return tuple(op for op in self._ops if op.op_type == op_type)

    def get_matched_ops_for_op_name(self, op_name: str) -> tuple[OpInfo, ...]:
        """The ops whose ``op_name`` fully matches the regular expression *op_name*."""
        pattern = _compile("op_name", op_name)
        return tuple(op for op in self._ops if pattern.fullmatch(op.op_name))

    def get_matched_ops_for_module_name(self, module_name: str) -> tuple[OpInfo, ...]:
        """The ops called inside a module (at any depth of their module stack) whose
        qualified name fully matches the regular expression *module_name*."""
        pattern = _compile("module_name", module_name)
        return tuple(
            op
            for op in self._ops
            if any(pattern.fullmatch(ctx.module_name) for ctx in op.module_stack)
        )

    def get_matched_ops_for_module_type(self, module_type: type | str) -> tuple[OpInfo, ...]:
        """The ops called inside a module of class *module_type* (at any depth).

        *module_type* is a class or its fully qualified name (e.g.
        ``"torch.nn.modules.linear.Linear"``); the match is exact (no subclasses).
        """
        if isinstance(module_type, type):
            wanted = qualified_type_name(module_type)
        elif isinstance(module_type, str):
            wanted = module_type
        else:
            raise TypeError(
                "module_type must be a class or its fully qualified name (str), got "
                f"{module_type!r}"
            )
        return tuple(
            op for op in self._ops if any(ctx.module_type == wanted for ctx in op.module_stack)
        )

    # -- display -------------------------------------------------------------------------

    def format_summary(self, colorize: bool | None = None) -> str:
        """The module tree as text (see :mod:`coreai_opt.inspection._render`).

        Args:
            colorize: True forces ANSI colours, False gives plain text, None (default)
                colours only when standard output is a colour terminal.

        Returns ``"(no compressible operations found)"`` when no op is kept.
        """
        if colorize is not None and not isinstance(colorize, bool):
            raise TypeError(f"colorize must be True, False or None, got {colorize!r}")
        return render_summary(self._root, colorize, self._hidden)

    def __repr__(self) -> str:
        """Model class, mode and number of ops."""
        return (
            f"ModelInspector(model={type(self._model).__name__}, "
            f"execution_mode={self._mode.value!r}, ops={len(self._ops)})"
        )


# -- helpers --------------------------------------------------------------------------------


def export_graph_module(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    dynamic_shapes: Any,
    export_with_no_grad: bool,
) -> fx.GraphModule:
    """Graph mode's export (``_graph.export.export_program``); an export failure is
    re-raised as it is, with notes listing what may help."""
    try:
        return export_program(model, example_inputs, dynamic_shapes, export_with_no_grad)
    except Exception as err:
        hints = [
            "ModelInspector could not export the model with torch.export.export(strict=False).",
            f"Try export_with_no_grad={not export_with_no_grad}"
            + (
                ", or pass dynamic_shapes"
                if dynamic_shapes is None
                else ", or check dynamic_shapes"
            )
            + ", or inspect in execution_mode='eager'.",
        ]
        if hasattr(err, "add_note"):
            for hint in hints:
                err.add_note(hint)
        raise


def _as_tuple(example_inputs: object) -> tuple[Any, ...]:
    if isinstance(example_inputs, tuple):
        return example_inputs
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    raise TypeError(
        "example_inputs must be a tuple of positional inputs (e.g. (tensor,)), got "
        f"{type(example_inputs).__name__}"
    )


def _check_compressor(compressor: object) -> None:
    if compressor is None:
        return
    from coreai_opt.quantization.quantizer import Quantizer

    if not (isinstance(compressor, type) and issubclass(compressor, Quantizer)):
        got = (
            f"the instance {type(compressor).__name__}(...)"
            if isinstance(compressor, Quantizer)
            else repr(compressor)
        )
        raise ValueError(
            "compressor must be None or the Quantizer class or a subclass of it (the "
            f"class, not an instance); got {got}"
        )


def _as_name_set(names: object, compressor: type) -> frozenset[str]:
    if isinstance(names, str) or not isinstance(names, Collection):
        raise TypeError(
            f"{compressor.__name__}.get_compressible_op_names must return a collection of "
            f"op names, got {type(names).__name__}"
        )
    return frozenset(str(name) for name in names)


def _compile(argument: str, pattern: str) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise TypeError(f"{argument} must be a regular expression (str), got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(
            f"{argument}={pattern!r} is not a valid regular expression: {err}"
        ) from err
