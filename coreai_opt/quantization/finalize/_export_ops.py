"""Which op library a Core AI finalize emits.

coreai-torch's ``torch.ops.coreai.{quantize, dequantize, constexpr_blockwise_shift_scale}``
when coreai-torch is importable (its converter knows those ops), else this package's
mirrors ``torch.ops.coreai_opt.{quantize, dequantize, blockwise_shift_scale}``, which take
the same arguments and give the same bits. Both are emitted with the same node names, so
a finalized graph looks the same whichever library provides the ops.
"""

from __future__ import annotations

import functools
import importlib
import logging
import warnings
from dataclasses import dataclass

import torch

__all__ = ["ExportOps", "coreai_torch_available", "fp4_storage", "select_export_ops"]

logger = logging.getLogger(__name__)

# coreai-torch 0.4.3 warns on import for torch "2.13.0+cpu" (the local version label
# compares above its 2.13.0 limit); the ops work, so only that warning is silenced.
_VERSION_WARNING = r"coreai-torch has only been validated"


@dataclass(frozen=True)
class ExportOps:
    """The three Core AI ops as ``torch.ops`` packets (FX ``call_function`` targets)."""

    library: str
    """``"coreai"`` (coreai-torch) or ``"coreai_opt"`` (this package's mirrors)."""
    quantize: torch._ops.OpOverloadPacket
    dequantize: torch._ops.OpOverloadPacket
    blockwise_shift_scale: torch._ops.OpOverloadPacket

    @property
    def uses_coreai_torch(self) -> bool:
        """True when the ops are coreai-torch's."""
        return self.library == "coreai"


@functools.lru_cache(maxsize=1)
def coreai_torch_available() -> bool:
    """True when coreai-torch imports and has registered ``torch.ops.coreai.*``.

    Imported once (it registers its ops with ``torch.library`` on import). An installed
    coreai-torch that fails to import is logged and treated as absent.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_VERSION_WARNING, category=UserWarning)
            importlib.import_module("coreai_torch._compression.custom_layers")
    except ImportError:
        return False
    except Exception as err:  # a broken install must not break finalize with our own ops
        logger.warning(
            "coreai-torch is installed but failed to import (%s); finalize "
            "emits torch.ops.coreai_opt.* instead",
            err,
        )
        return False
    ns = torch.ops.coreai
    return all(
        hasattr(ns, name) for name in ("quantize", "dequantize", "constexpr_blockwise_shift_scale")
    )


def select_export_ops() -> ExportOps:
    """coreai-torch's ops when :func:`coreai_torch_available`, else ``torch.ops.coreai_opt``.

    Raises:
        RuntimeError: neither is available (this build of the op library predates the
            Core AI mirror ops and coreai-torch is not installed).
    """
    if coreai_torch_available():
        ns = torch.ops.coreai
        return ExportOps("coreai", ns.quantize, ns.dequantize, ns.constexpr_blockwise_shift_scale)
    ns = torch.ops.coreai_opt
    try:
        return ExportOps("coreai_opt", ns.quantize, ns.dequantize, ns.blockwise_shift_scale)
    except AttributeError:
        raise RuntimeError(
            "Core AI finalize needs torch.ops.coreai_opt.{quantize, dequantize, "
            "blockwise_shift_scale}, which this build of coreai_opt/_C does not have; rebuild "
            "the op library (make build) or install the 'coreai' extra (coreai-torch)"
        ) from None


def fp4_storage(packed: torch.Tensor, ops: ExportOps) -> torch.Tensor:
    """How FP4 codes packed two a byte in uint8 are stored for *ops*.

    coreai-torch's converter expects its ``Float4Tensor`` wrapper (logical FP4 shape, the
    packed bytes inside; its op unwraps them); this package's ops take the same bytes as a
    ``torch.float4_e2m1fn_x2`` tensor (a view, one element per byte). Either way the node's
    arguments are the reference's (``input_dtype`` None).
    """
    if not ops.uses_coreai_torch:
        return packed.view(torch.float4_e2m1fn_x2)
    from coreai_torch._compression._floatx import Float4Tensor

    return Float4Tensor(packed)
