"""``ModelInspector.format_summary``: the module tree as text, drawn with ``rich``.

Layout::

    Legend:
      ■ module_name (module_type)
      ◆ op_name [op_type]

    (<root type>)
    module inputs: x
    module outputs: relu_1
    ├── ■ block (pkg.Block)
    │   module inputs: x
    │   module outputs: relu
    │   └── ◆ conv2d [conv2d]
    │       op inputs: x, block_conv_weight, block_conv_bias
    │       op outputs: relu
    │       filepath: models/net.py:12
    │       code: return self.conv(x)
    ...

Module and op entries of one module are ordered by their first op in execution order.
The ``filepath`` / ``code`` lines come from the innermost source frame outside torch and
coreai_opt (omitted when every frame is framework code).
"""

from __future__ import annotations

import io
import os
from collections.abc import Collection
from pathlib import Path

import torch
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from coreai_opt.inspection._info import ModuleInfo, OpInfo, SourceFrame, _edge_label

__all__ = ["EMPTY_SUMMARY", "LEGEND_LINES", "render_summary"]

EMPTY_SUMMARY = "(no compressible operations found)"
MODULE_MARK = "■"
OP_MARK = "◆"
LEGEND_LINES = (
    "Legend:",
    f"  {MODULE_MARK} module_name (module_type)",
    f"  {OP_MARK} op_name [op_type]",
)

_MODULE_STYLE = "bold cyan"
_MODULE_TYPE_STYLE = "yellow"
_OP_STYLE = "bold green"
_OP_TYPE_STYLE = "magenta"
_DETAIL_STYLE = "dim"
_WIDTH = 1 << 16  # never wrap: code lines and long names stay on one line

_FRAMEWORK_DIRS = tuple(
    os.path.realpath(d) + os.sep
    for d in (os.path.dirname(torch.__file__), str(Path(__file__).resolve().parents[1]))
)


def render_summary(root: ModuleInfo, colorize: bool | None, hidden: Collection[str]) -> str:
    """Render the tree under *root*; ops named in *hidden* (the boundary ops) are left out.

    *colorize*: True forces ANSI styles, False gives plain text, None uses styles only
    when standard output is a terminal that accepts colour.
    """
    visible = [op for op in root.all_ops() if op.op_name not in hidden]
    if not visible:
        return EMPTY_SUMMARY
    if colorize is None:
        probe = Console()
        colorize = probe.is_terminal and not probe.no_color
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=colorize,
        no_color=not colorize,
        color_system="standard" if colorize else None,
        width=_WIDTH,
        highlight=False,
        emoji=False,
        markup=False,
        legacy_windows=False,
    )
    console.print(_legend())
    console.print()
    console.print(_build_tree(root, set(hidden)))
    return buffer.getvalue().rstrip("\n")


def _legend() -> Text:
    text = Text(LEGEND_LINES[0])
    text.append("\n  ")
    text.append(f"{MODULE_MARK} module_name", style=_MODULE_STYLE)
    text.append(" (module_type)", style=_MODULE_TYPE_STYLE)
    text.append("\n  ")
    text.append(f"{OP_MARK} op_name", style=_OP_STYLE)
    text.append(" [op_type]", style=_OP_TYPE_STYLE)
    return text


def _build_tree(root: ModuleInfo, hidden: set[str]) -> Tree:
    label = Text()
    label.append(f"({root.module_type or '?'})", style="bold")
    _append_boundary(label, root)
    tree = Tree(label)
    _add_entries(tree, root, hidden)
    return tree


def _add_entries(tree: Tree, module: ModuleInfo, hidden: set[str]) -> None:
    """Add the ops and child modules of *module* to *tree*, in execution order."""
    entries: list[tuple[float, OpInfo | tuple[str, ModuleInfo]]] = []
    for op in module.ops:
        if op.op_name not in hidden:
            entries.append((_order_key(op), op))
    for name, child in module.named_children():
        keys = [_order_key(op) for op in child.all_ops() if op.op_name not in hidden]
        if keys:
            entries.append((min(keys), (name, child)))
    entries.sort(key=lambda entry: entry[0])
    for _, entry in entries:
        if isinstance(entry, OpInfo):
            tree.add(_op_label(entry))
        else:
            name, child = entry
            branch = tree.add(_module_label(name, child))
            _add_entries(branch, child, hidden)


def _order_key(op: OpInfo) -> float:
    """Execution position; a state op sorts just before its first reader."""
    readers = [user._position for users in op.outputs.values() for user in users]
    if op.is_state and readers:
        return min(readers) - 0.5
    return float(op._position)


def _module_label(name: str, module: ModuleInfo) -> Text:
    label = Text()
    label.append(f"{MODULE_MARK} {name}", style=_MODULE_STYLE)
    label.append(f" ({module.module_type or '?'})", style=_MODULE_TYPE_STYLE)
    _append_boundary(label, module)
    return label


def _append_boundary(label: Text, module: ModuleInfo) -> None:
    """The dim ``module inputs:`` / ``module outputs:`` lines (when there are any)."""
    inputs = [
        _edge_label(source.op, source.index) for _, source in sorted(module._input_sources.items())
    ]
    outputs = [_edge_label(edge.op, edge.index) for _, edge in sorted(module.output_ops.items())]
    if inputs:
        label.append(f"\nmodule inputs: {', '.join(inputs)}", style=_DETAIL_STYLE)
    if outputs:
        label.append(f"\nmodule outputs: {', '.join(outputs)}", style=_DETAIL_STYLE)


def _op_label(op: OpInfo) -> Text:
    label = Text()
    label.append(f"{OP_MARK} {op.op_name}", style=_OP_STYLE)
    label.append(f" [{op.op_type or '?'}]", style=_OP_TYPE_STYLE)
    details: list[str] = []
    if op.inputs:
        details.append("op inputs: " + ", ".join(_edge_label(e.op, e.index) for e in op.inputs))
    if op.outputs:
        if list(op.outputs) == [0]:
            readers = ", ".join(user.op_name for user in op.outputs[0])
        else:
            readers = "; ".join(
                f"[{index}] " + ", ".join(user.op_name for user in users)
                for index, users in op.outputs.items()
            )
        details.append(f"op outputs: {readers}")
    frame = user_frame(op.source_frames)
    if frame is not None:
        details.append(f"filepath: {display_path(frame.filename)}:{frame.lineno}")
        if frame.code_context:
            details.append(f"code: {frame.code_context}")
    for line in details:
        label.append(f"\n{line}", style=_DETAIL_STYLE)
    return label


def is_framework_file(filename: str) -> bool:
    """True for files of the torch package or of coreai_opt."""
    path = os.path.realpath(filename)
    return any(path.startswith(d) for d in _FRAMEWORK_DIRS)


def user_frame(frames: tuple[SourceFrame, ...]) -> SourceFrame | None:
    """The innermost frame outside the framework, or None."""
    for frame in reversed(frames):
        if not is_framework_file(frame.filename):
            return frame
    return None


def display_path(filename: str) -> str:
    """*filename* relative to the working directory when it lies below it."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return filename
    return relative
