"""The records ``ModelInspector`` builds: ops, the edges between them and the module tree.

An :class:`OpInfo` is one op of the inspected model. Its ``inputs`` name the producing op
and which of its outputs is read (:class:`InputEdge`); its ``outputs`` map each output
index to the ops that read it, so the records form the model's data-flow graph. A
:class:`ModuleInfo` is one module of the model: the ops placed in it (each op lives in the
deepest module of its call stack), its child modules, and the tensors that cross its
boundary (:class:`BoundaryEdge`). :class:`ModelSummary` pairs the root module with the
execution mode it was inspected in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from coreai_opt.quantization.config import ExecutionMode

__all__ = [
    "BoundaryEdge",
    "InputEdge",
    "ModelSummary",
    "ModuleContext",
    "ModuleInfo",
    "OpInfo",
    "SourceFrame",
]


@dataclass(frozen=True)
class SourceFrame:
    """One ``forward`` frame of the Python call stack that created an op.

    Attributes:
        filename: path of the source file, as Python reported it.
        lineno: line number in *filename*.
        function_name: name of the function (``forward`` for the frames kept).
        code_context: the source line, stripped; None when it was not recorded.
    """

    filename: str
    lineno: int
    function_name: str
    code_context: str | None = None


@dataclass(frozen=True)
class ModuleContext:
    """A module on an op's call stack.

    Attributes:
        module_name: qualified name of the module in the model (``""`` for the root).
        module_type: fully qualified name of its class (e.g.
            ``"torch.nn.modules.linear.Linear"``, the form ``module_type_configs`` keys
            take); None when the inspector could not tell.
    """

    module_name: str
    module_type: str | None


@dataclass(frozen=True, eq=True)
class InputEdge:
    """One input of an op: which op produced the tensor and which of its outputs it is.

    Attributes:
        op: the producing op.
        index: the producer's output index (0 unless the producer returns several
            tensors, e.g. ``split``).
    """

    op: OpInfo
    index: int = 0

    def __repr__(self) -> str:
        """Short form naming the producer (its own repr would walk the whole graph)."""
        return f"InputEdge(op={self.op.op_name!r}, index={self.index})"


@dataclass(frozen=True, eq=True)
class BoundaryEdge:
    """Where a tensor crosses the boundary of a module, seen from inside the module.

    For a module input, ``op`` is an op inside the module that reads the tensor and
    ``index`` the position of that input in ``op.inputs``. For a module output, ``op``
    is the op inside the module that produces it and ``index`` its output index.
    """

    op: OpInfo
    index: int = 0

    def __repr__(self) -> str:
        """Short form naming the op."""
        return f"BoundaryEdge(op={self.op.op_name!r}, index={self.index})"


@dataclass(eq=False)
class OpInfo:
    """One op of the inspected model.

    Two ``OpInfo`` are equal when their ``op_name`` is, and the hash is that of the
    name, so ops can be collected in sets and used as dict keys; ``op_name`` therefore
    cannot be changed after construction.

    Attributes:
        op_name: the name a config's ``op_name_config`` matches (graph mode: the FX
            node name, e.g. ``conv2d_1``).
        op_type: the name ``op_type_config`` matches (graph mode: the torch-level
            function, e.g. ``conv2d``, ``linear``, ``add``); None when unknown.
        module_stack: the modules the op was called in, outermost (the root) first.
        source_frames: the ``forward`` frames that led to the op, outermost first.
        inputs: the tensors the op reads, in the order of its tensor arguments (the
            index a config's ``op_input_spec`` uses).
        outputs: output index -> the ops that read that output; indices nobody reads
            are absent.
        is_state: True for a parameter, buffer or constant read by the model (graph
            mode: a ``get_attr`` node).
    """

    op_name: str
    op_type: str | None = None
    module_stack: tuple[ModuleContext, ...] = ()
    source_frames: tuple[SourceFrame, ...] = ()
    inputs: tuple[InputEdge, ...] = ()
    outputs: dict[int, tuple[OpInfo, ...]] = field(default_factory=dict)
    is_state: bool = False
    _position: int = field(default=-1, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        """Refuse to rename an op: equality and hashing depend on ``op_name``."""
        if name == "op_name" and "op_name" in self.__dict__:
            raise AttributeError(
                f"OpInfo.op_name is read-only (it defines equality and hash); "
                f"cannot change {self.op_name!r} to {value!r}"
            )
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        """Equal to another ``OpInfo`` with the same ``op_name``."""
        if not isinstance(other, OpInfo):
            return NotImplemented
        return self.op_name == other.op_name

    def __hash__(self) -> int:
        """Hash of ``op_name``."""
        return hash(self.op_name)

    def __repr__(self) -> str:
        """One line naming the op, its module and its neighbours (not their records)."""
        inputs = [_edge_label(edge.op, edge.index) for edge in self.inputs]
        outputs = {k: [op.op_name for op in v] for k, v in self.outputs.items()}
        return (
            f"OpInfo(op_name={self.op_name!r}, op_type={self.op_type!r}, "
            f"module_name={self.module_name!r}, is_state={self.is_state}, "
            f"inputs={inputs}, outputs={outputs})"
        )

    @property
    def module_name(self) -> str:
        """Qualified name of the module the op is placed in (the innermost of its stack)."""
        return self.module_stack[-1].module_name if self.module_stack else ""

    @property
    def module_type(self) -> str | None:
        """Class name (fully qualified) of the module the op is placed in."""
        return self.module_stack[-1].module_type if self.module_stack else None


@dataclass
class ModuleInfo:
    """One module of the inspected model and the ops placed in it.

    Attributes:
        module_name: qualified name in the model (``""`` for the root).
        module_type: fully qualified class name; None when unknown.
        child_modules: local name -> child module.
        ops: the ops whose innermost module is this one, in execution order.
        input_ops: module input index -> the edges through which that tensor enters
            (one per reading op inside the module; see :class:`BoundaryEdge`). The index
            counts the distinct non-state tensors entering the module, in the order they
            are first read; for the root, input ``i`` is the model's ``i``-th input.
        output_ops: module output index -> the op inside the module that produces the
            tensor, and its output index. Counts the tensors read outside the module (or
            returned by the model) in execution order; for the root, the model's
            ``i``-th returned tensor.
    """

    module_name: str
    module_type: str | None
    child_modules: dict[str, ModuleInfo] = field(default_factory=dict)
    ops: list[OpInfo] = field(default_factory=list)
    input_ops: dict[int, list[BoundaryEdge]] = field(default_factory=dict)
    output_ops: dict[int, BoundaryEdge] = field(default_factory=dict)
    _input_sources: dict[int, InputEdge] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __repr__(self) -> str:
        """One line naming the module, its children and its ops."""
        return (
            f"ModuleInfo(module_name={self.module_name!r}, module_type={self.module_type!r}, "
            f"child_modules={list(self.child_modules)}, ops={[op.op_name for op in self.ops]})"
        )

    def children(self) -> Iterator[ModuleInfo]:
        """The direct child modules."""
        yield from self.child_modules.values()

    def named_children(self) -> Iterator[tuple[str, ModuleInfo]]:
        """``(local name, module)`` for each direct child."""
        yield from self.child_modules.items()

    def modules(self) -> Iterator[ModuleInfo]:
        """This module and all its descendants, parents before children."""
        for _, module in self.named_modules():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, ModuleInfo]]:
        """``(name relative to this module, module)`` for this module (``prefix``, by
        default ``""``) and all its descendants, parents before children."""
        yield prefix, self
        for name, child in self.child_modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def get_submodule(self, target: str) -> ModuleInfo:
        """The descendant at dotted path *target* (relative to this module; ``""`` is
        this module). Raises ``KeyError`` naming the missing part."""
        module = self
        if target == "":
            return module
        walked: list[str] = []
        for part in target.split("."):
            child = module.child_modules.get(part)
            if child is None:
                where = ".".join(walked) or "<this module>"
                raise KeyError(
                    f"get_submodule({target!r}): {where} has no child module {part!r}; "
                    f"its children are {sorted(module.child_modules)}"
                )
            walked.append(part)
            module = child
        return module

    def all_ops(self) -> tuple[OpInfo, ...]:
        """The ops of this module and of all its descendants, in execution order."""
        collected = [op for module in self.modules() for op in module.ops]
        return tuple(sorted(collected, key=lambda op: op._position))


@dataclass(frozen=True)
class ModelSummary:
    """The inspected model as a module tree.

    Attributes:
        model: the root module.
        mode: the execution mode the model was inspected in.
    """

    model: ModuleInfo
    mode: ExecutionMode


def _edge_label(op: OpInfo, index: int) -> str:
    """``name`` for output 0, ``name[index]`` for the other outputs of a multi-output op."""
    return op.op_name if index == 0 else f"{op.op_name}[{index}]"
