"""A pure-Python oracle of eager mode's op naming and fake-quantizer placement.

Eager mode (``coreai_opt.quantization._eager``) intercepts ops in C++ through a dispatch
key. This module reproduces, independently and in plain Python, the rules it must follow
(the reference's, behaviour.md §6 as amended by §12), so that tests can compare the two.
It never imports ``coreai_opt.quantization._eager``.

Recording: :func:`record_ops` runs one forward of the model under a
``torch.overrides.TorchFunctionMode`` while forward pre/post hooks on every module keep a
stack of module scopes (the reference's interception, behaviour.md §6).

Naming rules:

* An op is named ``<base>`` for the first call of a function family in one module call
  and ``<base>_<k>`` for the k-th later one; counters are per (module call, base name)
  and restart on every call of the module, so a module called twice names its ops the
  same way both times. The full op name is ``"<module path>.<op>"``, the bare op name at
  the top level (config_guide: ``submodule_a.add``, ``submodule_a.add_1``).
* Only functions of the registry families are counted (:data:`DEFAULT_OP_TYPES`, the
  reference's ten, and :data:`OPTIONAL_OP_TYPES`, which eager mode quantizes only when a
  config names them); ``Tensor.size``, ``view``, ``flatten``, ``__getitem__``, ... are
  ignored. Calls with no quantizable tensor still count (the 0.3.0 rule).
* The base name is the aten operator name the dispatcher shows: ``x + y``,
  ``torch.add``, ``Tensor.add`` → ``add``; ``x += y``, ``Tensor.add_`` → ``add_``;
  ``x * y`` → ``mul``; ``x - y`` → ``sub``; ``x @ y`` / ``torch.matmul`` → ``matmul``;
  ``F.linear`` → ``linear``; ``F.softmax`` / ``Tensor.softmax`` → ``softmax``;
  ``torch.concat`` / ``torch.concatenate`` → ``cat`` (aten::concat decomposes into
  aten::cat); ``F.relu(x, inplace=True)`` / ``nn.ReLU(inplace=True)`` → ``relu_`` (and
  ``silu_``): in-place variants belong to the family of the out-of-place op, as
  ``add_`` / ``mul_`` / ``sub_`` do in the reference registry.

Decided rules for the Python dunders (torch 2.13 already turns most of them into the
named methods before ``__torch_function__`` sees them; the table covers both forms):

* ``__add__`` / ``__radd__`` → ``add``, ``__iadd__`` → ``add_``; likewise ``mul`` /
  ``mul_``; ``__sub__`` → ``sub``, ``__isub__`` → ``sub_``; ``__matmul__`` and
  ``__rmatmul__`` → ``matmul``. The reflected forms swap their operands, so ``input`` is
  always the left operand of the expression.
* ``__rsub__`` (``1 - x``) and ``torch.rsub`` are NOT ``sub``: they reach the dispatcher
  as the separate operator ``aten::rsub``, and the reference's name for them
  (``__rsub__`` / ``rsub``) is not in its registry either. They are ignored: not counted,
  never quantized. ``x - 1`` is ``sub``.

Placement rules (default W8A8 config, :func:`oracle_fq_names`): every op of a
quantized type gets ``<op>_quantize_<argname>`` for each quantizable input and
``<op>_quantize_output_<i>`` for each quantizable output, registered on the module that
ran the op. A quantizable tensor is a float tensor (fp64 / fp32 / fp16 / bf16) with more
than one element that is not a parameter or buffer of the model; parameters and buffers
passed to an op are its states (parametrized, not submodules; only ``weight`` by
default, :func:`oracle_weight_fqs`). Argument names are the normalised keyword names
(``torch.fx.operator_schemas.normalize_function``; Tensor methods through
``torch.ops.aten.<name>``): ``input``, ``other``, ``weight``, ``bias``, ``mat2``; the
elements of a tensor-list argument (``cat``) are ``tensors_0``, ``tensors_1``, ...; the
positional index is used when normalisation fails. Like the reference's prepare pass, a
module whose call already completed once is not recorded again (``dedupe=False`` records
every call).

Known, deliberate differences from the dispatcher (build oracle tests from direct
registry calls): a Python function that handles ``__torch_function__`` as a whole hides
its insides from this oracle (the mode is off while it runs), whereas the dispatch key
sees the aten ops such a function calls. The attention containers differ this way:
``nn.MultiheadAttention`` reaches the mode as one ``F.multi_head_attention_forward`` call
(not a registry op: nothing recorded) while its Python body calls ``F.linear`` etc., which
the dispatch key sees; ``F.scaled_dot_product_attention`` is one opaque call for both (eager
mode passes it through whole). The same holds for other Python composites such as
``F.softmin`` or ``F.normalize``. ``F.max_pool2d(..., return_indices=True)`` reaches the
mode as ``F.max_pool2d_with_indices`` (and the dispatcher as
``aten::max_pool2d_with_indices``): not a registry function, not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.operator_schemas import normalize_function
from torch.overrides import TorchFunctionMode, resolve_name

__all__ = [
    "DEFAULT_OP_TYPES",
    "FLOAT_DTYPES",
    "FUNC_TABLE",
    "OPTIONAL_OP_TYPES",
    "FuncInfo",
    "OracleOp",
    "classify",
    "is_quantizable",
    "normalize_arguments",
    "oracle_fq_names",
    "oracle_weight_fqs",
    "record_ops",
]

FLOAT_DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16})
"""Dtypes of tensors that can be fake-quantized."""

DEFAULT_OP_TYPES = frozenset(
    {
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "linear",
        "embedding",
        "max_pool2d",
        "adaptive_avg_pool2d",
        "add",
        "matmul",
        "mul",
        "sub",
    }
)
"""The reference's supported-ops registry (quantized by ``"*"`` specs)."""

OPTIONAL_OP_TYPES = frozenset(
    {"bmm", "cat", "softmax", "layer_norm", "relu", "gelu", "silu", "avg_pool2d", "mean"}
)
"""Further op types: counted for naming, quantized only when a config names them."""


@dataclass(frozen=True)
class FuncInfo:
    """How one Python-level function maps onto an op family.

    Attributes:
        base: the op's base name (the aten operator name), e.g. ``"add_"``.
        op_type: the registry key, e.g. ``"add"``.
        aten: name of the ``torch.ops.aten`` packet used to normalise the arguments of a
            Tensor method or dunder (None: normalise the function itself).
        swap: a reflected dunder (``__radd__``): its two operands are swapped first.
        inplace_base: base name when called with ``inplace=True`` (``F.relu``).
    """

    base: str
    op_type: str
    aten: str | None = None
    swap: bool = False
    inplace_base: str | None = None


def _build_table() -> dict[Callable[..., Any], FuncInfo]:
    """Function object → family, for every Python entry point of the families."""
    table: dict[Callable[..., Any], FuncInfo] = {}
    tensor = torch.Tensor

    def put(func: Any, info: FuncInfo) -> None:
        if func is not None:
            table[func] = info

    # One function per family: F.<op> (F.conv2d is torch.conv2d).
    for op in (
        *(f"conv{d}d" for d in (1, 2, 3)),
        *(f"conv_transpose{d}d" for d in (1, 2, 3)),
        "linear",
        "embedding",
        "max_pool2d",
        "adaptive_avg_pool2d",
        "layer_norm",
        "avg_pool2d",
        "gelu",
    ):
        put(getattr(F, op), FuncInfo(op, op))
    put(torch.layer_norm, FuncInfo("layer_norm", "layer_norm"))
    put(F.silu, FuncInfo("silu", "silu", inplace_base="silu_"))
    # Binary families: torch function, method, in-place method and dunders.
    for op in ("add", "mul", "sub"):
        put(getattr(torch, op), FuncInfo(op, op))
        put(getattr(tensor, op), FuncInfo(op, op, aten=op))
        put(getattr(tensor, op + "_"), FuncInfo(op + "_", op, aten=op + "_"))
        put(getattr(tensor, f"__{op}__", None), FuncInfo(op, op, aten=op))
        put(getattr(tensor, f"__i{op}__", None), FuncInfo(op + "_", op, aten=op + "_"))
    put(getattr(tensor, "__radd__", None), FuncInfo("add", "add", aten="add", swap=True))
    put(getattr(tensor, "__rmul__", None), FuncInfo("mul", "mul", aten="mul", swap=True))
    put(torch.matmul, FuncInfo("matmul", "matmul"))
    put(tensor.matmul, FuncInfo("matmul", "matmul", aten="matmul"))
    put(getattr(tensor, "__matmul__", None), FuncInfo("matmul", "matmul", aten="matmul"))
    put(
        getattr(tensor, "__rmatmul__", None),
        FuncInfo("matmul", "matmul", aten="matmul", swap=True),
    )
    # Optional families.
    put(torch.bmm, FuncInfo("bmm", "bmm"))
    put(tensor.bmm, FuncInfo("bmm", "bmm", aten="bmm"))
    for cat in (torch.cat, getattr(torch, "concat", None), getattr(torch, "concatenate", None)):
        put(cat, FuncInfo("cat", "cat", aten="cat"))
    put(torch.softmax, FuncInfo("softmax", "softmax"))
    put(F.softmax, FuncInfo("softmax", "softmax"))
    put(tensor.softmax, FuncInfo("softmax", "softmax", aten="softmax"))
    put(torch.relu, FuncInfo("relu", "relu"))
    put(tensor.relu, FuncInfo("relu", "relu", aten="relu"))
    put(F.relu, FuncInfo("relu", "relu", inplace_base="relu_"))
    put(torch.relu_, FuncInfo("relu_", "relu"))
    put(F.relu_, FuncInfo("relu_", "relu"))
    put(tensor.relu_, FuncInfo("relu_", "relu", aten="relu_"))
    put(torch.mean, FuncInfo("mean", "mean"))
    put(tensor.mean, FuncInfo("mean", "mean", aten="mean"))
    return table


FUNC_TABLE: dict[Callable[..., Any], FuncInfo] = _build_table()
"""Every Python function the oracle counts, with its family (see the module docstring)."""


def _arg_type(value: Any) -> Any:
    """The type ``normalize_function`` matches against a schema (``List[int]`` for strides)."""
    if isinstance(value, torch.Tensor):
        return torch.Tensor
    if isinstance(value, (list, tuple)) and value:
        if all(isinstance(v, torch.Tensor) for v in value):
            return list[torch.Tensor]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list[int]
    return type(value)


def normalize_arguments(
    func: Callable[..., Any],
    info: FuncInfo | None,
    args: Sequence[Any],
    kwargs: dict[str, Any],
) -> list[tuple[str, Any]]:
    """The call's arguments as (normalised keyword name, value), in schema order.

    Uses ``torch.fx.operator_schemas.normalize_function`` with the argument types (to
    pick among overloads); Tensor methods and dunders are normalised through their
    ``torch.ops.aten`` packet. When that fails, positional arguments are named by their
    index (``"0"``, ``"1"``, ...) and keyword arguments keep their names.
    """
    args = tuple(args)
    if info is not None and info.swap and len(args) >= 2:
        args = (args[1], args[0], *args[2:])
    target: Any = func
    if info is not None and info.aten is not None:
        target = getattr(torch.ops.aten, info.aten)
    typed = {
        "arg_types": tuple(_arg_type(a) for a in args),
        "kwarg_types": {k: _arg_type(v) for k, v in kwargs.items()},
    }
    # The types pick among overloads (add.Tensor / add.Scalar, conv padding as a list
    # or a string); an untyped match is the second try.
    for types in (typed, {}):
        try:
            normalized = normalize_function(
                target, args, kwargs, normalize_to_only_use_kwargs=True, **types
            )
        except Exception:
            continue
        if normalized is not None:
            return list(normalized.kwargs.items())
    return [(str(i), a) for i, a in enumerate(args)] + list(kwargs.items())


def classify(
    func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
) -> tuple[str, str] | None:
    """``(base name, op type)`` of a call, or None if its function is in no family."""
    info = FUNC_TABLE.get(func)
    if info is None:
        return None
    if info.inplace_base is not None:
        inplace = kwargs.get("inplace", args[1] if len(args) > 1 else False)
        if inplace:
            return info.inplace_base, info.op_type
    return info.base, info.op_type


def is_quantizable(value: Any) -> bool:
    """A float tensor (fp64 / fp32 / fp16 / bf16) with more than one element."""
    return isinstance(value, torch.Tensor) and value.dtype in FLOAT_DTYPES and value.numel() > 1


@dataclass(frozen=True)
class OracleOp:
    """One recorded op call.

    Attributes:
        op_name: ``"<module path>.<op>"`` (the bare op at the top level), e.g.
            ``"submodule_a.add_1"``.
        module_path: qualified name of the module that ran the op (``""``: the model).
        op_type: registry key (``"linear"``, ``"add"``, ``"softmax"``, ...); None only
            for functions outside every family (``record_ops(include_unregistered=True)``).
        func: the base name (``"add"``, ``"add_"``, ``"conv2d"``).
        quantizable_inputs: normalised names of the quantizable non-state inputs.
        states: local attribute names (``"weight"``, ``"bias"``) of the quantizable model
            parameters / buffers passed in.
        state_fqns: their qualified names in the model (``"fc.weight"``).
        state_args: the normalised argument names they were passed as.
        n_float_outputs: number of quantizable outputs.
        quantizable_outputs: their indices in the (tuple) output.
    """

    op_name: str
    module_path: str
    op_type: str | None
    func: str
    quantizable_inputs: tuple[str, ...]
    states: tuple[str, ...]
    state_fqns: tuple[str, ...] = ()
    state_args: tuple[str, ...] = ()
    n_float_outputs: int = 0
    quantizable_outputs: tuple[int, ...] = ()

    @property
    def local_name(self) -> str:
        """The op name inside its module (``"add_1"``)."""
        return self.op_name[len(self.module_path) + 1 :] if self.module_path else self.op_name


@dataclass
class _Frame:
    """One running module call."""

    path: str
    module_id: int
    counts: dict[str, int] = field(default_factory=dict)

    def next_name(self, base: str) -> str:
        k = self.counts.get(base, 0)
        self.counts[base] = k + 1
        return base if k == 0 else f"{base}_{k}"


class _Recorder(TorchFunctionMode):
    """The TorchFunctionMode that records one forward (see :func:`record_ops`)."""

    def __init__(self, model: nn.Module, dedupe: bool, include_unregistered: bool) -> None:
        super().__init__()
        self.paths = {id(m): path for path, m in model.named_modules()}
        self.state_owners: dict[int, list[tuple[str, str, int]]] = {}
        for path, module in model.named_modules(remove_duplicate=False):
            tensors = [
                *module.named_parameters(recurse=False),
                *module.named_buffers(recurse=False),
            ]
            for local, tensor in tensors:
                if tensor is None:
                    continue
                fqn = f"{path}.{local}" if path else local
                self.state_owners.setdefault(id(tensor), []).append((fqn, local, id(module)))
        self.dedupe = dedupe
        self.include_unregistered = include_unregistered
        self.stack: list[_Frame] = [_Frame("", id(model))]
        self.completed: set[int] = set()
        self.ops: list[OracleOp] = []

    def pre_hook(self, module: nn.Module, args: Any) -> None:
        self.stack.append(_Frame(self.paths.get(id(module), ""), id(module)))

    def post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if len(self.stack) > 1 and self.stack[-1].module_id == id(module):
            self.stack.pop()
        self.completed.add(id(module))

    def _state(self, tensor: torch.Tensor, module_id: int) -> tuple[str, str]:
        owners = self.state_owners[id(tensor)]
        own = [o for o in owners if o[2] == module_id]
        fqn, local, _ = (own or owners)[0]
        return local, fqn

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        family: tuple[str, str | None] | None = classify(func, args, kwargs)
        if family is None and self.include_unregistered:
            qualified = resolve_name(func) or getattr(func, "__name__", "?")
            family = (qualified.rsplit(".", 1)[-1], None)
        if family is None:
            return func(*args, **kwargs)
        base, op_type = family
        frame = self.stack[-1]
        name = frame.next_name(base)
        record = not (self.dedupe and frame.module_id in self.completed)
        named = normalize_arguments(func, FUNC_TABLE.get(func), args, kwargs) if record else []
        out = func(*args, **kwargs)
        if not record:
            return out
        inputs: list[str] = []
        states: list[tuple[str, str, str]] = []
        for argname, value in named:
            values = (
                [(f"{argname}_{i}", v) for i, v in enumerate(value)]
                if isinstance(value, (list, tuple))
                else [(argname, value)]
            )
            for key, tensor in values:
                if not is_quantizable(tensor):
                    continue
                if id(tensor) in self.state_owners:
                    states.append((*self._state(tensor, frame.module_id), key))
                else:
                    inputs.append(key)
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        out_idx = tuple(i for i, o in enumerate(outputs) if is_quantizable(o))
        self.ops.append(
            OracleOp(
                op_name=f"{frame.path}.{name}" if frame.path else name,
                module_path=frame.path,
                op_type=op_type,
                func=base,
                quantizable_inputs=tuple(inputs),
                states=tuple(s[0] for s in states),
                state_fqns=tuple(s[1] for s in states),
                state_args=tuple(s[2] for s in states),
                n_float_outputs=len(out_idx),
                quantizable_outputs=out_idx,
            )
        )
        return out


def record_ops(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    dedupe: bool = True,
    include_unregistered: bool = False,
) -> list[OracleOp]:
    """The ops one forward of *model* on *example_inputs* runs, in execution order.

    Runs the model once under ``torch.no_grad()`` (train/eval mode as it is; batch-norm
    running statistics of a training model are updated as by any forward).

    Args:
        model: the float model.
        example_inputs: positional inputs of one forward.
        dedupe: skip the ops of a module whose call already completed once (the
            reference's prepare pass); False records every call.
        include_unregistered: also record every other overridable function (op_type
            None, named by the last segment of ``torch.overrides.resolve_name``); their
            counters are separate, so the family ops keep their names.
    """
    recorder = _Recorder(model, dedupe, include_unregistered)
    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(recorder.pre_hook))
        handles.append(module.register_forward_hook(recorder.post_hook, always_call=True))
    try:
        with torch.no_grad(), recorder:
            model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return recorder.ops


def _quantized_types(extra_op_types: Iterable[str] | None) -> frozenset[str]:
    extra = frozenset(extra_op_types or ())
    unknown = extra - OPTIONAL_OP_TYPES - DEFAULT_OP_TYPES
    if unknown:
        raise ValueError(f"unknown op types {sorted(unknown)}; known: {sorted(OPTIONAL_OP_TYPES)}")
    return DEFAULT_OP_TYPES | extra


def oracle_fq_names(
    ops: Iterable[OracleOp], extra_op_types: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """Activation fake-quantizer submodules the default W8A8 config registers.

    Module path → names, in execution order: ``<op>_quantize_<argname>`` for each
    quantizable input and ``<op>_quantize_output_<i>`` for each quantizable output of
    every op of a default registry type, and of the optional types in
    *extra_op_types*. Modules without any are absent; repeated op names are listed once.
    """
    types = _quantized_types(extra_op_types)
    result: dict[str, list[str]] = {}
    for op in ops:
        if op.op_type not in types:
            continue
        names = [f"{op.local_name}_quantize_{arg}" for arg in op.quantizable_inputs]
        names += [f"{op.local_name}_quantize_output_{i}" for i in op.quantizable_outputs]
        listed = result.setdefault(op.module_path, [])
        listed.extend(n for n in names if n not in listed)
    return {path: names for path, names in result.items() if names}


def oracle_weight_fqs(
    ops: Iterable[OracleOp],
    extra_op_types: Iterable[str] | None = None,
    state_names: Iterable[str] = ("weight",),
) -> list[str]:
    """Qualified names of the parameters that get a weight fake-quantizer (sorted).

    A state is quantized when an op of a quantized type reads it under one of
    *state_names* (the default W8A8 ``op_state_spec`` is ``{"weight": ...}``).
    """
    types = _quantized_types(extra_op_types)
    wanted = set(state_names)
    return sorted(
        {
            fqn
            for op in ops
            if op.op_type in types
            for local, fqn in zip(op.states, op.state_fqns, strict=True)
            if local in wanted
        }
    )
