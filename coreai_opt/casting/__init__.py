"""Cast a ``torch.export.ExportedProgram`` to 16-bit precision before deployment.

* :func:`cast_fp32_to_fp16` — float32 parameters, buffers, constants, user inputs and
  computations become float16; parameters, buffers, constants and number arguments that
  float16 cannot hold (beyond ±65504) stay float32 with a warning naming them.
* :func:`cast_int32_to_int16` — int32 / int64 data becomes int16; index-like integers
  (embedding / gather / scatter / index operands and what they are computed from,
  ``arange`` / ``argmax`` results and what is computed from them) keep their dtype, and so
  do tensors whose values int16 cannot hold.
* :func:`cast_to_16_bit_precision` — both, in that order.

All three modify the program in place and return it; ``ignored_ops`` (an ``OpOverload``,
an ``OpOverloadPacket``, a collection of them, or a ``Callable[[torch.fx.Node], bool]``)
keeps ops at their original dtypes with casts at their boundary.
"""

from __future__ import annotations

from coreai_opt.casting._api import (
    cast_fp32_to_fp16,
    cast_int32_to_int16,
    cast_to_16_bit_precision,
)
from coreai_opt.casting._ignored_ops import IgnoredOps as IgnoredOps  # the argument type

__all__ = ["cast_fp32_to_fp16", "cast_int32_to_int16", "cast_to_16_bit_precision"]
