"""The public casting passes."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from torch.export import ExportedProgram

from coreai_opt.casting._float_plan import plan_float16
from coreai_opt.casting._ignored_ops import IgnoredOps, IgnoredOpsMatcher, resolve_ignored_ops
from coreai_opt.casting._int_plan import plan_int16
from coreai_opt.casting._node_facts import node_mode
from coreai_opt.casting._rewrite import CastPlan, apply_plan

_Planner = Callable[[ExportedProgram, IgnoredOpsMatcher, str], tuple[CastPlan, list[str]]]

# stacklevel that points a warning at the caller of the public function:
# warnings.warn in _run_pass <- _cast <- public function <- caller.
_STACKLEVEL = 4


def _check_program(ep: object, function: str) -> None:
    """Refuse anything but an ExportedProgram, naming the argument and the type given."""
    if not isinstance(ep, ExportedProgram):
        raise TypeError(
            f"{function}: ep must be a torch.export.ExportedProgram (from torch.export.export "
            f"or torch.export.load), got {type(ep).__module__}.{type(ep).__qualname__}"
        )


def _run_pass(ep: ExportedProgram, planner: _Planner, matcher: IgnoredOpsMatcher) -> None:
    """Plan one pass, warn about what stays wide, apply it."""
    plan, findings = planner(ep, matcher, matcher.function)
    target = str(plan.target_dtype).removeprefix("torch.")
    if findings:
        warnings.warn(
            f"{matcher.function}: kept at the original dtype because {target} cannot hold "
            f"their values: {'; '.join(findings)}",
            UserWarning,
            stacklevel=_STACKLEVEL,
        )
    apply_plan(ep, plan)
    if plan.unsupported:
        warnings.warn(
            f"{matcher.function}: these ops do not accept {target} and keep their original "
            f"dtypes, with casts around them: {', '.join(plan.unsupported)}",
            UserWarning,
            stacklevel=_STACKLEVEL,
        )


def _cast(
    ep: ExportedProgram, ignored_ops: IgnoredOps, function: str, planners: list[_Planner]
) -> ExportedProgram:
    """Check the arguments (before anything changes), run the passes, validate."""
    _check_program(ep, function)
    matcher = resolve_ignored_ops(ignored_ops, function)
    program_ops = {
        str(n.target)
        for n in ep.graph.nodes
        if n.op == "call_function" and node_mode(n) != "follow"
    }
    for planner in planners:
        _run_pass(ep, planner, matcher)
    matcher.warn_unmatched(program_ops)
    ep.validate()
    return ep


def cast_fp32_to_fp16(ep: ExportedProgram, ignored_ops: IgnoredOps = None) -> ExportedProgram:
    """Run ``ep`` in float16: convert its float32 parameters, buffers, constants, user inputs
    and computations, in place.

    ``ep`` is modified in place (deployment code calls ``cast_fp32_to_fp16(ep)`` and then
    converts ``ep``) and returned for chaining; the module it was exported from keeps its
    float32 parameters. To keep the float32 program too, cast ``copy.deepcopy(ep)``.

    What changes:

    * float32 parameters, buffers and constants become float16 tensors in ``ep.state_dict``
      / ``ep.constants``; float32 user inputs become float16 (the caller passes float16,
      and ``ep.example_inputs`` follow), so outputs computed in float16 are float16;
    * every computing node runs in float16: float32 dtype arguments
      (``full(..., dtype=torch.float32)``, ``_to_copy(x, dtype=torch.float32)``) become
      float16, and float32 factories without a dtype get ``dtype=torch.float16``;
    * ops matched by ``ignored_ops`` compute in float32, with casts to float32 in front of
      them and casts back to float16 where a float16 op reads their results; their weights
      stay float32 when nothing else uses them;
    * a parameter / buffer / constant with a finite value float16 cannot hold (one that
      rounds to inf: ``|x| >= 65520``; float16's largest value is 65504), and a node with
      such a number argument (``masked_fill(x, m, -1e9)``), stays float32 together with
      the op computing on it; one ``UserWarning`` names them. Activations are not known
      before run time and are not checked;
    * an op that refuses float16 operands keeps float32 with casts around it (warned);
    * in-place ops of a training-IR program never get the tensor they write into cast
      (a cast copies): a buffer written in place keeps float32. After
      ``run_decompositions`` such writes are outputs, and buffers convert.

    Integer, bool and other float dtypes are untouched. Calling it twice changes nothing the
    second time.

    Args:
        ep: the program, from ``torch.export.export`` (training IR or after
            ``run_decompositions``) or ``torch.export.load``.
        ignored_ops: ops to keep in float32: an ``OpOverload``
            (``torch.ops.aten.softmax.int``), an ``OpOverloadPacket``
            (``torch.ops.aten.softmax``, every overload), a collection of them, or a
            predicate ``Callable[[torch.fx.Node], bool]`` asked about every computing
            ``call_function`` node (e.g. ``lambda n: "head" in n.name``). A listed op
            that no node uses triggers a ``UserWarning`` listing the ops the program has
            (decompositions rename ops: ``aten.layer_norm`` becomes
            ``aten.native_layer_norm``).

    Returns:
        ``ep`` itself, modified.

    Raises:
        TypeError: ``ep`` is not an ``ExportedProgram``, or ``ignored_ops`` (or one of its
            entries, or the predicate's result) has an unsupported type.
    """
    return _cast(ep, ignored_ops, "cast_fp32_to_fp16", [plan_float16])


def cast_int32_to_int16(ep: ExportedProgram, ignored_ops: IgnoredOps = None) -> ExportedProgram:
    """Narrow ``ep``'s int32 / int64 data to int16, in place; index-like integers are untouched.

    An integer tensor is *data*, and becomes int16, when it is only computed with and
    consumed by integer data ops (arithmetic, comparisons, ``where`` / ``masked_fill``,
    casts, movement, ``cat``, factories, ``sum`` / ``amax`` / ``amin``). It keeps its dtype
    when it is *index-like*: an operand of any other op (embedding / index / gather /
    scatter / ``one_hot`` indices, ``item()``, custom ops) or anything it is computed from,
    a result of any other op (``arange``, ``argmax``, ``topk``, ``nonzero``) or anything
    computed from it. Also kept: parameters / buffers / constants with values outside
    [-32768, 32767] and data ops with such a number argument (one ``UserWarning`` names
    them), buffers the program writes to, ops matched by ``ignored_ops`` (with casts back to
    their original dtypes in front of them) and placeholders nothing consumes. Narrowed
    integer user inputs are int16 from then on.

    ``ep`` is modified in place and returned, like :func:`cast_fp32_to_fp16`.

    Args:
        ep: the program, from ``torch.export.export`` or ``torch.export.load``.
        ignored_ops: ops that keep their integer dtypes, in the forms
            :func:`cast_fp32_to_fp16` accepts.

    Returns:
        ``ep`` itself, modified.

    Raises:
        TypeError: ``ep`` is not an ``ExportedProgram``, or ``ignored_ops`` has an
            unsupported type.
    """
    return _cast(ep, ignored_ops, "cast_int32_to_int16", [plan_int16])


def cast_to_16_bit_precision(
    ep: ExportedProgram, ignored_ops: IgnoredOps = None
) -> ExportedProgram:
    """Run both passes on ``ep``, in place: :func:`cast_fp32_to_fp16`, then
    :func:`cast_int32_to_int16`, with the same ``ignored_ops``.

    This is the step recommended before converting to Core AI::

        exported_program = torch.export.export(model, example_inputs)
        cast_to_16_bit_precision(exported_program)

    Args:
        ep: the program, from ``torch.export.export`` or ``torch.export.load``.
        ignored_ops: ops kept at their original float and integer dtypes, in the forms
            :func:`cast_fp32_to_fp16` accepts.

    Returns:
        ``ep`` itself, modified.

    Raises:
        TypeError: ``ep`` is not an ``ExportedProgram``, or ``ignored_ops`` has an
            unsupported type.
    """
    return _cast(ep, ignored_ops, "cast_to_16_bit_precision", [plan_float16, plan_int16])
