"""Eager mode's intercepted op types: register an aten (or custom) overload the built-in
registry lacks (the built-ins are the reference's ten op types plus the optional ones).

Example: quantize the input and output of every hardswish (op type ``"hardswish"``,
addressable in ``op_type_config`` like the built-in types)::

    from coreai_opt.quantization.eager_ops import register_eager_op_type
    register_eager_op_type("hardswish", torch.ops.aten.hardswish.default, ["self"])

Register before ``Quantizer.prepare``; a registration affects models prepared later.
"""

from coreai_opt.quantization._eager.op_registry import (
    EagerOpOverload,
    op_overloads,
    optional_op_types,
    register_eager_op_type,
    registered_op_types,
)

__all__ = [
    "EagerOpOverload",
    "op_overloads",
    "optional_op_types",
    "register_eager_op_type",
    "registered_op_types",
]
