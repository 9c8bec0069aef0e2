"""Refusals that finalize raises before it changes the model.

- :func:`check_has_fake_quantizers`: a model without fake-quantizers has nothing to
  convert (``ValueError``).
- :func:`refuse_dynamic`: fake-quantizers whose qparams are recomputed on every forward
  (dynamic quantization) have no stored qparams to bake in: Core AI and Core ML refuse them
  with ``NotImplementedError`` naming them, unless (Core AI) an activation export handler
  covers their granularity; ``_TORCH`` keeps them.
- :func:`check_coreml_weight` / :func:`check_coreml_activation`: the Core ML gates. Weights
  int8 / uint8 / int4 / uint4 and activations int8 / uint8 (else
  ``CoreMLExportError.from_dtype``), activations per-tensor (else
  ``CoreMLExportError.from_config``), and the ZP formulation (else ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from coreai_opt._export_backend import CoreMLExportError, ExportBackend
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase
from coreai_opt.quantization.spec.granularity import PerTensorGranularity
from coreai_opt.quantization.spec.qformulation import QuantizationFormulation

__all__ = [
    "COREML_ACTIVATION_DTYPES",
    "COREML_WEIGHT_DTYPES",
    "check_coreml_activation",
    "check_coreml_weight",
    "check_has_fake_quantizers",
    "refuse_dynamic",
]

COREML_WEIGHT_DTYPES: tuple[torch.dtype, ...] = (torch.int8, torch.uint8, torch.int4, torch.uint4)
"""Weight dtypes the Core ML backend stores (n-bit integer codes with scales)."""
COREML_ACTIVATION_DTYPES: tuple[torch.dtype, ...] = (torch.int8, torch.uint8)
"""Activation dtypes the Core ML backend expresses (``torch.quantize_per_tensor``)."""


def check_has_fake_quantizers(names: object, backend: ExportBackend) -> None:
    """``ValueError`` when *names* (the model's fake-quantizers) is empty."""
    if not names:
        raise ValueError(
            f"finalize(backend={backend.value!r}): the model contains no fake-quantize nodes "
            f"to convert (prepare a model whose config quantizes something, or finalize with "
            f"backend=ExportBackend._TORCH)"
        )


def refuse_dynamic(
    fqs: Mapping[str, FakeQuantizeImplBase],
    backend: ExportBackend,
    covered: Callable[[FakeQuantizeImplBase], bool] = lambda fq: False,
) -> None:
    """Refuse the stateless (dynamic) fake-quantizers of *fqs* that *covered* does not take.

    Raises:
        NotImplementedError: naming every such fake-quantizer.
    """
    names = sorted(
        name for name, fq in fqs.items() if getattr(fq, "is_stateless", False) and not covered(fq)
    )
    if names:
        hint = (
            " or register an activation export handler for their granularity"
            if backend is ExportBackend.CoreAI
            else ""
        )
        raise NotImplementedError(
            f"finalize(backend={backend.value!r}) cannot export fake-quantizers whose qparams "
            f"are recomputed on every forward (dynamic quantization): {names}. They have no "
            f"stored qparams to bake into the model; finalize with "
            f"backend=ExportBackend._TORCH for torch-only inference{hint}"
        )


def _check_zp(fq: FakeQuantizeImplBase, context: str) -> None:
    formulation = QuantizationFormulation(fq.qformulation)
    if formulation is not QuantizationFormulation.ZP:
        raise ValueError(
            f"CoreML export does not support qformulation={formulation.value!r} ({context}); "
            f"allowed: 'zp'. Set qformulation='zp' in the QuantizationSpec, or finalize with "
            f"backend=ExportBackend.CoreAI"
        )


def check_coreml_weight(fq: FakeQuantizeImplBase, name: str) -> None:
    """The Core ML gates for the weight fake-quantizer *name*.

    Raises:
        CoreMLExportError: its dtype is not in :data:`COREML_WEIGHT_DTYPES`.
        ValueError: its qformulation is not ZP.
    """
    context = f"weight quantizer {name!r}"
    if fq.dtype not in COREML_WEIGHT_DTYPES:
        raise CoreMLExportError.from_dtype(
            fq.dtype, f"{context} (allowed weight dtypes: {list(COREML_WEIGHT_DTYPES)})"
        )
    _check_zp(fq, context)


def check_coreml_activation(fq: FakeQuantizeImplBase, name: str) -> None:
    """The Core ML gates for the activation fake-quantizer *name*.

    Raises:
        CoreMLExportError: its dtype is not in :data:`COREML_ACTIVATION_DTYPES`, or its
            granularity is not per-tensor.
        ValueError: its qformulation is not ZP.
    """
    context = f"activation quantizer {name!r}"
    if fq.dtype not in COREML_ACTIVATION_DTYPES:
        raise CoreMLExportError.from_dtype(
            fq.dtype, f"{context} (allowed activation dtypes: {list(COREML_ACTIVATION_DTYPES)})"
        )
    if type(fq.granularity) is not PerTensorGranularity:
        raise CoreMLExportError.from_config(
            repr(fq.granularity), f"{context} (Core ML activations must be PerTensorGranularity)"
        )
    _check_zp(fq, context)
