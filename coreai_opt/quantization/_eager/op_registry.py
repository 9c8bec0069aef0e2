"""Which aten overloads eager mode intercepts, and under which op type and base name.

The default registry holds the reference's ten op types (quantized under ``"*"``); the
optional types (bmm, cat, softmax, layer_norm, relu, gelu, silu, avg_pool2d, mean) are
intercepted and counted too but quantized only when a config names them in
``op_type_config`` / ``op_name_config``. Container ops whose C++ bodies call aten ops
themselves (scaled_dot_product_attention, ``_native_multi_head_attention``,
``_transformer_encoder_layer_fwd``, lstm / gru / rnn, einsum) get pass-through kernels, so
their insides are not seen as separate ops.

Op names are ``<base name>`` for the first call in a module call and ``<base name>_<k>``
for later ones; the base name is the aten operator name (``add``, ``add_``, ``linear``,
``conv_transpose2d``), so ``x + y``, ``torch.add`` and ``Tensor.add`` are all ``add``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from coreai_opt import _ops

__all__ = [
    "EagerOpOverload",
    "base_id",
    "ensure_registered",
    "op_overloads",
    "optional_op_types",
    "register_eager_op_type",
    "registered_op_types",
]


@dataclass(frozen=True)
class EagerOpOverload:
    """One intercepted aten overload.

    Attributes:
        name: qualified operator name (``"aten::add"``).
        overload: overload name (``"Tensor"``; ``""`` for the default overload).
        op_type: the registry key configs use (``"add"``).
        base_name: the op-name stem (``"add"``, ``"add_"``).
        activation_args: schema argument names that may carry activations (None: all).
        optional: quantized only when a config names the op type or the op.
    """

    name: str
    overload: str
    op_type: str
    base_name: str
    activation_args: tuple[str, ...] | None = None
    optional: bool = False

    @functools.cached_property
    def arg_names(self) -> tuple[str, ...]:
        """The overload's schema argument names, in order (looked up once)."""
        ns, name = self.name.split("::")
        packet = getattr(getattr(torch.ops, ns), name)
        overload = getattr(packet, self.overload or "default")
        return tuple(a.name for a in overload._schema.arguments)


def _o(name: str, overload: str, op_type: str, base: str | None = None, optional: bool = False):
    return EagerOpOverload(f"aten::{name}", overload, op_type, base or name, None, optional)


_BUILTIN: list[EagerOpOverload] = [
    _o("conv1d", "", "conv1d"),
    _o("conv1d", "padding", "conv1d"),
    _o("conv2d", "", "conv2d"),
    _o("conv2d", "padding", "conv2d"),
    _o("conv3d", "", "conv3d"),
    _o("conv3d", "padding", "conv3d"),
    _o("conv_transpose1d", "", "conv_transpose1d"),
    _o("conv_transpose2d", "input", "conv_transpose2d"),
    _o("conv_transpose3d", "input", "conv_transpose3d"),
    _o("linear", "", "linear"),
    _o("embedding", "", "embedding"),
    # Not max_pool2d_with_indices: F.max_pool2d(return_indices=True) reaches the
    # reference's registry as another function, so it is neither counted nor quantized.
    _o("max_pool2d", "", "max_pool2d"),
    _o("adaptive_avg_pool2d", "", "adaptive_avg_pool2d"),
    _o("add", "Tensor", "add"),
    _o("add", "Scalar", "add"),
    _o("add_", "Tensor", "add"),
    _o("add_", "Scalar", "add"),
    _o("matmul", "", "matmul"),
    _o("mul", "Tensor", "mul"),
    _o("mul", "Scalar", "mul"),
    _o("mul_", "Tensor", "mul"),
    _o("mul_", "Scalar", "mul"),
    _o("sub", "Tensor", "sub"),
    _o("sub", "Scalar", "sub"),
    _o("sub_", "Tensor", "sub"),
    _o("sub_", "Scalar", "sub"),
    # Optional types: counted always, quantized only when a config names them.
    _o("bmm", "", "bmm", optional=True),
    _o("cat", "", "cat", optional=True),
    _o("softmax", "int", "softmax", optional=True),
    _o("layer_norm", "", "layer_norm", optional=True),
    _o("relu", "", "relu", optional=True),
    _o("relu_", "", "relu", optional=True),
    _o("gelu", "", "gelu", optional=True),
    _o("silu", "", "silu", optional=True),
    _o("silu_", "", "silu", optional=True),
    _o("avg_pool2d", "", "avg_pool2d", optional=True),
    _o("mean", "dim", "mean", optional=True),
    _o("mean", "", "mean", optional=True),
]

# Containers: their insides stay unintercepted (see the module docstring).
_PASS_THROUGH: list[tuple[str, str]] = [
    ("aten::scaled_dot_product_attention", ""),
    ("aten::_native_multi_head_attention", ""),
    # nn.TransformerEncoderLayer's inference fast path (one op for the whole layer).
    ("aten::_transformer_encoder_layer_fwd", ""),
    ("aten::lstm", "input"),
    ("aten::lstm", "data"),
    ("aten::gru", "input"),
    ("aten::gru", "data"),
    ("aten::rnn_tanh", "input"),
    ("aten::rnn_relu", "input"),
    ("aten::einsum", ""),
]

_lock = threading.Lock()
_overloads: dict[tuple[str, str], EagerOpOverload] = {(o.name, o.overload): o for o in _BUILTIN}
_base_ids: dict[str, int] = {}
_registered: set[tuple[str, str]] = set()


def base_id(base_name: str) -> int:
    """The number of an op base name in the C++ frame counters (assigned on first use)."""
    with _lock:
        return _base_ids.setdefault(base_name, len(_base_ids))


def base_names() -> dict[int, str]:
    """Base id → base name for every id assigned so far."""
    with _lock:
        return {v: k for k, v in _base_ids.items()}


def op_overloads() -> dict[tuple[str, str], EagerOpOverload]:
    """Every intercepted overload by ``(name, overload)``."""
    with _lock:
        return dict(_overloads)


def registered_op_types() -> set[str]:
    """All op types eager mode knows (default, optional and user-registered)."""
    return {o.op_type for o in op_overloads().values()}


def optional_op_types() -> set[str]:
    """Op types quantized only when a config names them."""
    return {o.op_type for o in op_overloads().values() if o.optional}


def ensure_registered() -> None:
    """Register every known overload with the C++ interceptor (each one once)."""
    for key, entry in op_overloads().items():
        if key in _registered:
            continue
        _ops.eager_register_op(
            entry.name, entry.overload, base_id=base_id(entry.base_name), pass_through=False
        )
        _registered.add(key)
    for name, overload in _PASS_THROUGH:
        if (name, overload) in _registered:
            continue
        _ops.eager_register_op(name, overload, base_id=0, pass_through=True)
        _registered.add((name, overload))


def register_eager_op_type(
    op_type: str,
    overload: torch._ops.OpOverload,
    activation_args: Sequence[str | int] | None = None,
    *,
    optional: bool = False,
) -> EagerOpOverload:
    """Intercept one more aten (or custom) overload in eager mode.

    Args:
        op_type: the key configs use for it (``op_type_config[op_type]``); may be an
            existing type (another overload of it) or a new one.
        overload: the operator overload, e.g. ``torch.ops.aten.hardswish.default``.
        activation_args: names (or positions) of the schema arguments that carry
            activations; other tensor arguments are never fake-quantized as inputs
            (module parameters passed to the op are states either way). None: all.
        optional: when True the type is quantized only if a config names it.

    Returns the registry entry. Raises ``TypeError`` for a non-``OpOverload`` and
    ``ValueError`` for an unknown argument name or position, or an overload that is
    already registered under another op type.
    """
    if not isinstance(overload, torch._ops.OpOverload):
        raise TypeError(
            f"overload must be a torch._ops.OpOverload such as torch.ops.aten.hardswish.default, "
            f"got {type(overload).__name__}"
        )
    if not isinstance(op_type, str) or not op_type:
        raise ValueError(f"op_type must be a non-empty str, got {op_type!r}")
    schema = overload._schema
    arg_names = [a.name for a in schema.arguments]
    names: tuple[str, ...] | None = None
    if activation_args is not None:
        resolved = []
        for arg in activation_args:
            if isinstance(arg, int) and not isinstance(arg, bool):
                if not 0 <= arg < len(arg_names):
                    raise ValueError(
                        f"activation_args position {arg} is out of range for {schema.name}."
                        f"{schema.overload_name} (arguments: {arg_names})"
                    )
                resolved.append(arg_names[arg])
            elif isinstance(arg, str) and arg in arg_names:
                resolved.append(arg)
            else:
                raise ValueError(
                    f"activation_args entry {arg!r} is not an argument of {schema.name}; "
                    f"allowed: {arg_names} or their positions"
                )
        names = tuple(resolved)
    entry = EagerOpOverload(
        schema.name,
        schema.overload_name,
        op_type,
        schema.name.split("::")[-1],
        names,
        optional,
    )
    key = (entry.name, entry.overload)
    with _lock:
        existing = _overloads.get(key)
        if existing is not None and existing != entry:
            raise ValueError(
                f"{entry.name}.{entry.overload or 'default'} is already intercepted as op type "
                f"{existing.op_type!r}"
            )
        _overloads[key] = entry
    return entry
