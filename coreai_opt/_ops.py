"""Typed Python wrappers over ``torch.ops.coreai_opt.*``.

Each function is a direct call of one C++ dispatcher op (CPU kernel, Meta kernel, autograd
and a CompositeExplicitAutograd reference for other devices); the schemas and their formulas
are documented in ``csrc/ops/*.cpp``. Qparam tensors (scale, zero_point, minval) have the
input's rank and encode the granularity by their shape: each dimension is 1 (shared), the
input's size (per index) or size / block (per block); a 0-d tensor means per-tensor.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

import torch

from coreai_opt._loader import _library_path

_ops = torch.ops.coreai_opt


def fake_quantize_int(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None = None,
    minval: torch.Tensor | None = None,
    *,
    quant_min: int,
    quant_max: int,
) -> torch.Tensor:
    """Integer fake-quantize; zp form unless ``minval`` is given (then the minval form)."""
    return _ops.fake_quantize_int(x, scale, zero_point, minval, quant_min, quant_max)


def fake_quantize_int_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None = None,
    minval: torch.Tensor | None = None,
    *,
    quant_min: int,
    quant_max: int,
) -> torch.Tensor:
    """Straight-through gradient of :func:`fake_quantize_int`: ``grad`` where x lands inside
    [quant_min, quant_max] before the clamp, else 0 (the mask is recomputed from x)."""
    return _ops.fake_quantize_int_backward(grad, x, scale, zero_point, minval, quant_min, quant_max)


def fake_quantize_float(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Fake-quantize onto float8_e4m3fn / float8_e5m2 / float4_e2m1fn_x2 (saturating, RNE)."""
    return _ops.fake_quantize_float(x, scale, dtype)


def fake_quantize_float_backward(
    grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Straight-through gradient of :func:`fake_quantize_float`: ``grad`` where x / scale lies
    inside the format's finite range, else 0."""
    return _ops.fake_quantize_float_backward(grad, x, scale, dtype)


def fake_quantize_lsq(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    *,
    quant_min: int,
    quant_max: int,
    grad_factor: float = 1.0,
) -> torch.Tensor:
    """Fake-quantize with a learnable scale and zero point (gradients reach both)."""
    return _ops.fake_quantize_lsq(x, scale, zero_point, quant_min, quant_max, grad_factor)


def fake_quantize_lsq_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    *,
    quant_min: int,
    quant_max: int,
    grad_factor: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_scale, grad_zero_point) of :func:`fake_quantize_lsq`; the qparam
    gradients are summed over each qparam's elements and multiplied by ``grad_factor``."""
    return _ops.fake_quantize_lsq_backward(
        grad, x, scale, zero_point, quant_min, quant_max, grad_factor
    )


def minmax(x: torch.Tensor, block_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block minimum and maximum of ``x`` (``block_size[d] == x.size(d)`` reduces d)."""
    return _ops.minmax(x, list(block_size))


def update_range(
    x: torch.Tensor,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    block_size: Sequence[int],
    method: str,
    averaging_constant: float = 0.01,
) -> None:
    """Folds this batch's range into running_min / running_max in place.

    ``method`` is ``"static"``, ``"moving_average"`` or ``"global_minmax"``; +inf / -inf in
    the running tensors mean "nothing observed yet".
    """
    _ops.update_range(x, running_min, running_max, list(block_size), method, averaging_constant)


def choose_qparams_int(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    *,
    quant_min: int,
    quant_max: int,
    symmetric: bool,
    float_range: tuple[float | None, float | None] = (None, None),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scale, zero_point, minval) for an integer range from an observed range."""
    return _ops.choose_qparams_int(
        min_val, max_val, quant_min, quant_max, symmetric, float_range[0], float_range[1]
    )


def choose_qparams_float(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    dtype: torch.dtype,
    *,
    e8m0: bool,
    float_range: tuple[float | None, float | None] = (None, None),
) -> torch.Tensor:
    """Scale for a float format: max_abs / max, or a power of two by the OCP MX rule."""
    return _ops.choose_qparams_float(min_val, max_val, dtype, e8m0, float_range[0], float_range[1])


def fused_fake_quantize(
    x: torch.Tensor,
    *,
    observer_on: torch.Tensor,
    fake_quant_on: torch.Tensor,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    minval: torch.Tensor,
    block_size: Sequence[int],
    dtype: torch.dtype,
    quant_min: int,
    quant_max: int,
    symmetric: bool,
    use_minval: bool,
    e8m0: bool,
    method: str,
    averaging_constant: float = 0.01,
    range_min: float | None = None,
    range_max: float | None = None,
) -> torch.Tensor:
    """Observe + choose qparams + fake-quantize in one op (what FakeQuantize.forward calls).

    ``observer_on`` / ``fake_quant_on`` are one-element tensors read by the kernel, so the
    caller never branches on them. When observing, this batch's range is folded into
    ``running_min`` / ``running_max`` by ``method`` and the qparams (``scale``, and for
    integer dtypes ``zero_point`` / ``minval``) are rewritten in place; ``range_min`` and
    ``range_max`` both given fix the range instead. When fake-quantizing, the result is
    fake-quantized with the (updated) qparams (minval form if ``use_minval``), else a copy of
    ``x``. State tensors are float32 (int32 ``zero_point``) of the qparam shape
    ``x.size(d) // block_size[d]``.
    """
    return _ops.fused_fake_quantize(
        x,
        observer_on,
        fake_quant_on,
        running_min,
        running_max,
        scale,
        zero_point,
        minval,
        list(block_size),
        dtype,
        quant_min,
        quant_max,
        symmetric,
        use_minval,
        e8m0,
        method,
        averaging_constant,
        range_min,
        range_max,
    )


def fused_fake_quantize_packed(x: torch.Tensor, args: tuple[object, ...]) -> torch.Tensor:
    """:func:`fused_fake_quantize` with every argument after ``x`` given positionally, in
    schema order (``observer_on`` ... ``range_max``): what a fake-quantizer that built *args*
    once calls while torch.compile / torch.export trace it."""
    return _ops.fused_fake_quantize(x, *args)


def _direct(overload: Any) -> Any:
    """The overload's C++ entry point, which ``OpOverload.__call__`` forwards to: one
    Python frame less per call, for hot paths that torch.compile never traces (Dynamo
    knows the overload object, not this builtin)."""
    return getattr(overload, "_op", overload)


_FUSED_DIRECT = _direct(_ops.fused_fake_quantize.default)


def fused_fake_quantize_direct(x: torch.Tensor, args: tuple[object, ...]) -> torch.Tensor:
    """:func:`fused_fake_quantize_packed` through the op's C++ entry point (never under
    torch.compile)."""
    return _FUSED_DIRECT(x, *args)


def bind_fused_fake_quantize(args: tuple[object, ...]) -> tuple[torch.ScriptObject, int]:
    """Bind :func:`fused_fake_quantize`'s arguments after ``x`` (*args*, in schema order)
    in C++: ``(owner, handle)``, where *handle* is valid for
    :func:`fused_fake_quantize_bound` while *owner* lives. The owner holds the state
    tensors by reference, as *args* does."""
    owner = _ops._bind_fused_fake_quantize(*args)
    return owner, int(owner.handle())


_BOUND_DIRECT = _direct(_ops._fused_fake_quantize_bound.default)


def fused_fake_quantize_bound(x: torch.Tensor, handle: int) -> torch.Tensor:
    """``fused_fake_quantize(x, <the arguments bound under handle>)``: the eager hot path
    of a fake-quantizer, which converts two arguments instead of nineteen (about 2.6 us
    less per call). Not for torch.compile, torch.export or torch.jit.trace, which would
    record the handle as a constant."""
    return _BOUND_DIRECT(x, handle)


def fused_fake_quantize_bound_traced(
    x: torch.Tensor, handle: int, block_size: Sequence[int | torch.SymInt]
) -> torch.Tensor:
    """``fused_fake_quantize(x, <the arguments bound under handle>)`` with ``block_size``
    given per call: what a fake-quantizer records under torch.compile (its trace plan holds
    the handle), so the compiled graph takes ``x`` alone. The state it writes is not
    declared in the schema: only for graphs in which nothing else reads it."""
    return _ops._fused_fake_quantize_bound_traced(x, handle, list(block_size))


def fused_fake_quantize_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    *,
    fake_quant_on: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    minval: torch.Tensor,
    dtype: torch.dtype,
    quant_min: int,
    quant_max: int,
    use_minval: bool,
) -> torch.Tensor:
    """Gradient of :func:`fused_fake_quantize` for ``x``: the straight-through gradient of
    the matching fake-quantize when ``fake_quant_on``, else ``grad`` unchanged."""
    return _ops.fused_fake_quantize_backward(
        grad, x, fake_quant_on, scale, zero_point, minval, dtype, quant_min, quant_max, use_minval
    )


def channel_scale_shift(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None
) -> torch.Tensor:
    """``x * scale[c] + shift[c]`` with channels on dim 1 (the product rounded first);
    differentiable in all three, its backward one pass over grad and x on CPU."""
    return _ops.channel_scale_shift(x, scale, shift)


def channel_scale_shift_backward(
    grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_scale, grad_shift) of :func:`channel_scale_shift`."""
    return _ops.channel_scale_shift_backward(grad, x, scale)


def pack(q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Packs int4/uint4/fp4 (2 a byte) or int2/uint2 (4 a byte) along the last dimension."""
    return _ops.pack(q, dtype)


def unpack(packed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`pack`: int8 / uint8 codes, or float32 values for FP4."""
    return _ops.unpack(packed, dtype)


# -- Core AI export ops (finalize): coreai-torch's quantize / dequantize /
# constexpr_blockwise_shift_scale, same arguments and bits --------------------------------------


def coreai_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    output_dtype: torch.dtype,
    *,
    zero_point: torch.Tensor | None = None,
    minval: torch.Tensor | None = None,
    axis: int = 0,
) -> torch.Tensor:
    """Codes of ``x`` in ``output_dtype`` (``torch.ops.coreai.quantize``'s semantics).

    ``scale`` is 0-d / one element (per tensor) or 1-D with ``x.size(axis)`` entries (per
    channel); ``zero_point`` (an integer dtype) or ``minval`` (``x``'s dtype) has its shape.
    Integer formats (int1..int8, uint1..uint8) give ``clamp(round(x / s) + zp)`` or
    ``clamp(round((x - minval) / s) + qmin)`` in an int8 / uint8 container, computed in
    ``promote_types(x, scale)``; FP8 gives ``cast(clamp(x / s))`` in float32; FP4
    (``torch.float4_e2m1fn_x2``) the same codes packed two a byte into uint8 (even index in
    the low nibble, last dimension halved). Rounding is half to even.
    """
    return _ops.quantize(x, scale, output_dtype, zero_point, minval, axis)


def coreai_dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    *,
    zero_point: torch.Tensor | None = None,
    minval: torch.Tensor | None = None,
    axis: int = 0,
    input_dtype: torch.dtype | None = None,
    output_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Values of codes ``q`` (``torch.ops.coreai.dequantize``'s semantics).

    ``scale`` as for :func:`coreai_quantize`. Integer codes give ``(q - zp) * s`` or
    ``(q - qmin) * s + minval`` (``input_dtype`` names the logical dtype, e.g. torch.int4;
    required with ``minval``), float codes ``q * s``; computed in the scale's dtype, which the
    result has unless ``output_dtype`` is given. E8M0 scales (``torch.float8_e8m0fnu``, float
    formats only) need ``output_dtype``. Packed FP4 comes as uint8 with
    ``input_dtype=torch.float4_e2m1fn_x2`` (or as a float4_e2m1fn_x2 tensor).
    """
    return _ops.dequantize(q, scale, zero_point, minval, axis, input_dtype, output_dtype)


def blockwise_shift_scale(
    q: torch.Tensor,
    scale: torch.Tensor,
    *,
    zero_point: torch.Tensor | None = None,
    minval: torch.Tensor | None = None,
    input_dtype: torch.dtype | None = None,
    output_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """:func:`coreai_dequantize` with a scale of ``q``'s (unpacked) rank whose every dimension
    divides ``q``'s: block = ``q.size(d) // scale.size(d)``
    (``torch.ops.coreai.constexpr_blockwise_shift_scale``'s semantics)."""
    return _ops.blockwise_shift_scale(q, scale, zero_point, minval, input_dtype, output_dtype)


def format_range(dtype: torch.dtype, narrow: bool = False) -> tuple[float, float]:
    """(min, max) of a quantization dtype from the C++ format table."""
    lo, hi = _ops.format_range(dtype, narrow)
    return lo, hi


def kernel_isa() -> str:
    """Name of the CPU kernel table in use ("DEFAULT", "AVX2" or "AVX512")."""
    return torch.ops.coreai_opt.cpu_kernel_isa()


# -- eager-mode interception (csrc/eager) -------------------------------------------------------


def eager_program() -> torch.ScriptObject:
    """A new, empty ``EagerProgram``: the C++ tables of one eager-prepared model."""
    return torch.classes.coreai_opt.EagerProgram()


def eager_register_op(name: str, overload: str, *, base_id: int, pass_through: bool) -> None:
    """Intercept the aten overload ``name.overload`` while an eager scope is open.

    ``base_id`` numbers the op's base name for the per-module call counters;
    ``pass_through`` only switches interception off for the op's insides (container ops).
    Registers the key's fallthrough fallback on first use; raises when another library
    already owns the key. Registering the same overload again is a no-op.
    """
    _ops._eager_register_op(name, overload, base_id, pass_through)


def eager_scope_depth() -> int:
    """This thread's interception scope depth (0: no eager model is running)."""
    return int(_ops._eager_scope_depth())


def eager_frame_depth() -> int:
    """Number of module frames on this thread's stack."""
    return int(_ops._eager_frame_depth())


def eager_key_state() -> tuple[bool, bool]:
    """(included, excluded): the intercept dispatch key's bits in this thread's TLS."""
    return bool(_ops._eager_key_included()), bool(_ops._eager_key_excluded())


def eager_frame_ops() -> tuple[Any, Any]:
    """The ``(push, pop)`` frame ops, each called as ``op(program_handle, module_index)``.

    Returned as overload objects so that a forward hook calls them with no lookup: they
    run on every hooked module call.
    """
    return _direct(_ops._eager_push_frame.default), _direct(_ops._eager_pop_frame.default)


def eager_frame_c_calls() -> tuple[Callable[[int, int], int], Callable[[int, int], int]]:
    """The ``(push, pop)`` frame calls as the op library's C functions, each called as
    ``fn(program_handle, module_index)`` through ctypes with the GIL held.

    A third of the ops' cost (no dispatcher, no argument boxing), for eager mode's
    FramedForward, which runs on every call of a prepared module. Each returns 0, or 1
    when the call failed before changing anything: repeat it through
    :func:`eager_frame_ops` to raise its error.
    """
    library = ctypes.PyDLL(str(_library_path()))
    calls = []
    for name in ("coreai_opt_eager_push_frame", "coreai_opt_eager_pop_frame"):
        fn = getattr(library, name)
        fn.argtypes = (ctypes.c_int64, ctypes.c_int64)
        fn.restype = ctypes.c_int
        calls.append(fn)
    return calls[0], calls[1]


def eager_refuse_tracing() -> None:
    """Raise the error that says an eager-prepared model cannot be compiled or exported
    (an op, so that it also fails inside torch.compile's tracing)."""
    _ops._eager_refuse_tracing()
