"""Ready-made configs: ``ModuleQuantizerConfig.presets.*`` and ``QuantizerConfig.presets.*``.

Reference presets (weight-only, symmetric, ``qparam_calculator_cls="default"`` →
static qparams for weights):

* ``w8(*, axis=None)``: int8 weights, per-channel.
* ``w4(*, axis=None)``: int4 weights, per-channel.
* ``w4_per_block(*, block_size=32, axis=None)``: int4 weights, per-block.

Additions beyond the reference:

* ``w8a8(*, axis=None)``: int8 per-channel weights and int8 per-tensor activations
  (moving-average qparams) on every op input and output.
* ``w4a8(*, axis=None)``: int4 per-channel weights, int8 activations as in ``w8a8``.
* ``fp8(*, axis=None)``: float8_e4m3fn weights per-channel (float32 scales) and
  float8_e4m3fn per-tensor activations (moving-average qparams) on inputs and outputs.
* ``mxfp4(*, block_size=32, axis=None)``: weight-only float4_e2m1fn_x2, per-block
  (OCP MX block of 32) with float8_e8m0fnu (power-of-two) scales.

``axis=None`` is resolved per module type at prepare (Conv/Linear/Embedding weights:
per-channel on the output channel, per-block on the input channel; transposed convs
swapped). ``QuantizerConfig.presets.*`` take the same keyword arguments plus
``execution_mode`` and put the module config in ``global_config``.
"""

from __future__ import annotations

from typing import Any

import torch

from coreai_opt.config._keys import ALL_TENSORS
from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QuantizationScheme,
    QuantizationSpec,
)

__all__: list[str] = []


def _weight(dtype: torch.dtype, granularity: Any, **extra: Any) -> QuantizationSpec:
    return QuantizationSpec(
        dtype=dtype, qscheme=QuantizationScheme.SYMMETRIC, granularity=granularity, **extra
    )


def _activation(dtype: torch.dtype) -> QuantizationSpec:
    return QuantizationSpec(
        dtype=dtype,
        qscheme=QuantizationScheme.SYMMETRIC,
        granularity=PerTensorGranularity(),
        qparam_calculator_cls="moving_average",
    )


class _ModuleQuantizerConfigPresets:
    """Preset constructors returning ``ModuleQuantizerConfig`` objects."""

    def __init__(self, owner_cls: type) -> None:
        self._owner = owner_cls

    def _weight_only(self, weight: QuantizationSpec) -> Any:
        return self._owner(
            op_input_spec=None, op_output_spec=None, op_state_spec={"weight": weight}
        )

    def _weights_and_activations(self, weight: QuantizationSpec, act: QuantizationSpec) -> Any:
        return self._owner(
            op_input_spec={ALL_TENSORS: act},
            op_output_spec={ALL_TENSORS: act},
            op_state_spec={"weight": weight},
        )

    def w8(self, *, axis: int | None = None) -> Any:
        """Weight-only int8, symmetric, per-channel (axis None: per module type)."""
        return self._weight_only(_weight(torch.int8, PerChannelGranularity(axis=axis)))

    def w4(self, *, axis: int | None = None) -> Any:
        """Weight-only int4, symmetric, per-channel (axis None: per module type)."""
        return self._weight_only(_weight(torch.int4, PerChannelGranularity(axis=axis)))

    def w4_per_block(self, *, block_size: int = 32, axis: int | None = None) -> Any:
        """Weight-only int4, symmetric, per-block of *block_size* (axis None: per module type)."""
        granularity = PerBlockGranularity(axis=axis, block_size=block_size)
        return self._weight_only(_weight(torch.int4, granularity))

    def w8a8(self, *, axis: int | None = None) -> Any:
        """int8 per-channel weights + int8 per-tensor activations (inputs and outputs)."""
        weight = _weight(torch.int8, PerChannelGranularity(axis=axis))
        return self._weights_and_activations(weight, _activation(torch.int8))

    def w4a8(self, *, axis: int | None = None) -> Any:
        """int4 per-channel weights + int8 per-tensor activations (inputs and outputs)."""
        weight = _weight(torch.int4, PerChannelGranularity(axis=axis))
        return self._weights_and_activations(weight, _activation(torch.int8))

    def fp8(self, *, axis: int | None = None) -> Any:
        """float8_e4m3fn per-channel weights + float8_e4m3fn per-tensor activations."""
        weight = _weight(torch.float8_e4m3fn, PerChannelGranularity(axis=axis))
        return self._weights_and_activations(weight, _activation(torch.float8_e4m3fn))

    def mxfp4(self, *, block_size: int = 32, axis: int | None = None) -> Any:
        """Weight-only MXFP4: float4_e2m1fn_x2 per-block (32) with E8M0 scales."""
        granularity = PerBlockGranularity(axis=axis, block_size=block_size)
        weight = _weight(torch.float4_e2m1fn_x2, granularity, scale_dtype=torch.float8_e8m0fnu)
        return self._weight_only(weight)


class _QuantizerConfigPresets:
    """Preset constructors returning ``QuantizerConfig`` objects (module preset as global)."""

    def __init__(self, owner_cls: type) -> None:
        self._owner = owner_cls

    @property
    def _modules(self) -> _ModuleQuantizerConfigPresets:
        module_cls = self._owner._module_config_cls
        return module_cls.presets

    def _wrap(self, module_config: Any, execution_mode: Any) -> Any:
        return self._owner(global_config=module_config, execution_mode=execution_mode)

    def w8(self, *, axis: int | None = None, execution_mode: Any = "graph") -> Any:
        """Weight-only int8 per-channel for every supported op."""
        return self._wrap(self._modules.w8(axis=axis), execution_mode)

    def w4(self, *, axis: int | None = None, execution_mode: Any = "graph") -> Any:
        """Weight-only int4 per-channel for every supported op."""
        return self._wrap(self._modules.w4(axis=axis), execution_mode)

    def w4_per_block(
        self, *, block_size: int = 32, axis: int | None = None, execution_mode: Any = "graph"
    ) -> Any:
        """Weight-only int4 per-block for every supported op."""
        return self._wrap(
            self._modules.w4_per_block(block_size=block_size, axis=axis), execution_mode
        )

    def w8a8(self, *, axis: int | None = None, execution_mode: Any = "graph") -> Any:
        """int8 weights (per-channel) and int8 activations (per-tensor)."""
        return self._wrap(self._modules.w8a8(axis=axis), execution_mode)

    def w4a8(self, *, axis: int | None = None, execution_mode: Any = "graph") -> Any:
        """int4 weights (per-channel) and int8 activations (per-tensor)."""
        return self._wrap(self._modules.w4a8(axis=axis), execution_mode)

    def fp8(self, *, axis: int | None = None, execution_mode: Any = "graph") -> Any:
        """float8_e4m3fn weights (per-channel) and activations (per-tensor)."""
        return self._wrap(self._modules.fp8(axis=axis), execution_mode)

    def mxfp4(
        self, *, block_size: int = 32, axis: int | None = None, execution_mode: Any = "graph"
    ) -> Any:
        """Weight-only MXFP4 (float4_e2m1fn_x2, blocks of 32, E8M0 scales)."""
        return self._wrap(self._modules.mxfp4(block_size=block_size, axis=axis), execution_mode)
