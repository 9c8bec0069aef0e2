"""Qparam calculators: base classes, registry and the built-in calculators.

A qparam calculator observes a tensor through its range calculator and returns
``(scale, zero_point, minval)`` (``zero_point`` / ``minval`` are None for float
formats). Two families:

* stateful (:class:`StatefulQParamsCalculatorBase`): the qparams live in buffers,
  sized on the first forward and reused in export mode or with the observer off.

  - ``"static"`` (:class:`StaticQParamsCalculator`): qparams of the current tensor only.
  - ``"moving_average"`` (:class:`MovingAverageQParamsCalculator`): exponential moving
    average of the range, ``r <- c * batch + (1 - c) * r`` (the first batch sets ``r``).
  - ``"global_minmax"`` (:class:`GlobalMinMaxQParamsCalculator`): running min of the
    minima and max of the maxima.

* stateless (:class:`StatelessQParamsCalculatorBase`): recomputed on every forward,
  nothing stored, so the qparam shape may change between calls.

  - ``"dynamic"`` (:class:`DynamicQParamsCalculator`): dynamic activation quantization.

``"default"`` is a marker resolved by the component factory (static for weights and
LUTs, moving average for activations); constructing it directly is an error.

Stateful state (buffers, float32 except ``zero_point`` int32, shape = the qparam shape
of the input): ``running_min`` / ``running_max`` (start at +inf / -inf: "nothing
observed"), ``scale``, ``zero_point``, ``minval``. The numbers come from the C++ ops
``minmax`` / ``update_range`` / ``choose_qparams_int`` / ``choose_qparams_float``; when
the input requires grad (and grad mode is on) the same formulas run as differentiable
torch ops so that the returned qparams carry autograd history. Returned qparams have the
input's dtype; stored buffers stay float32.

``float_range``: a pinned bound replaces the observed one; pinned bounds are clamped so
that ``min <= 0 <= max``, and with one bound pinned it is first rounded to the input's
dtype (as the observed bound is).

Register custom calculators with ``@QParamsCalculatorBase.register("key")``; they are
built with the keyword arguments of :meth:`QParamsCalculatorBase.__init__`.
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from coreai_opt import _ops
from coreai_opt.config.spec.factory import CompressionTargetTensor
from coreai_opt.quantization.spec._dtype_table import format_info, is_kernel_format, quant_range
from coreai_opt.quantization.spec._registry import (
    QPARAMS_CALCULATOR_REGISTRY,
    ClassRegistry,
    RegistryMixin,
)
from coreai_opt.quantization.spec._state_epoch import StateEpochMixin
from coreai_opt.quantization.spec.granularity import (
    PerChannelGranularity,
    QuantizationGranularity,
    block_size_for,
)
from coreai_opt.quantization.spec.qscheme import QuantizationScheme
from coreai_opt.quantization.spec.range_calculator import (
    MinMaxRangeCalculator,
    RangeCalculatorBase,
)

if TYPE_CHECKING:
    from coreai_opt.quantization.spec.spec import QuantizationSpec

__all__ = [
    "DynamicQParamsCalculator",
    "GlobalMinMaxQParamsCalculator",
    "MovingAverageQParamsCalculator",
    "QParamsCalculatorBase",
    "RunningRangeMixin",
    "StatefulQParamsCalculatorBase",
    "StatelessQParamsCalculatorBase",
    "StaticQParamsCalculator",
]

_E8M0 = torch.float8_e8m0fnu
_EPS = float(torch.finfo(torch.float32).eps)
QParams = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]
FloatRange = tuple[float | None, float | None]

# Buffers resized to the qparam shape on the first forward (and on load_state_dict).
_STATE_BUFFERS = ("running_min", "running_max", "scale", "zero_point", "minval")

# Significand bits (implicit bit included), smallest normal exponent and largest finite
# value of the reduced-precision input dtypes a pinned float_range bound is rounded to.
_ROUNDING: dict[torch.dtype, tuple[int, int, float]] = {
    torch.bfloat16: (8, -126, float(torch.finfo(torch.bfloat16).max)),
    torch.float16: (11, -14, float(torch.finfo(torch.float16).max)),
    torch.float32: (24, -126, float(torch.finfo(torch.float32).max)),
}


def _f32(value: float) -> float:
    """*value* rounded to float32 (as the C++ kernels see it)."""
    return _round_to(value, torch.float32)


def _round_to(value: float, dtype: torch.dtype) -> float:
    """*value* rounded to nearest-even in *dtype* (plain Python; float64 and others unchanged)."""
    spec = _ROUNDING.get(dtype)
    if spec is None or value == 0.0 or not math.isfinite(value):
        return value
    bits, min_exp, max_value = spec
    # frexp: value = m * 2**e with 0.5 <= |m| < 1; below the normal range the quantum stays
    # at the subnormal step.
    exp = max(math.frexp(value)[1], min_exp + 1)
    rounded = math.ldexp(round(math.ldexp(value, bits - exp)), exp - bits)
    return math.copysign(math.inf, value) if abs(rounded) > max_value else rounded


def _check_float_range(value: Sequence[float | None]) -> FloatRange:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"float_range must be [min, max] (numbers or None), got {value!r}")
    out: list[float | None] = []
    for name, entry in zip(("min", "max"), value, strict=True):
        if entry is None:
            out.append(None)
            continue
        if isinstance(entry, bool) or not isinstance(entry, (int, float)):
            raise ValueError(
                f"float_range {name} entry {entry!r} has type {type(entry).__name__}; allowed: "
                f"int, float or None"
            )
        if not math.isfinite(float(entry)):
            raise ValueError(f"float_range {name} entry {entry!r} must be finite")
        out.append(float(entry))
    lo, hi = out
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"float_range {list(value)!r}: min must be < max")
    return lo, hi


class QParamsCalculatorBase(StateEpochMixin, RegistryMixin, torch.nn.Module, abc.ABC):
    """Base of the ``nn.Module`` that turns observed ranges into scale/zero-point/minval.

    Holds the format (dtype, scheme, code range, scale dtype), the granularity, the
    range calculator and ``float_range``, and computes qparams from a range
    (:meth:`compute_qparams`). Unless the class is stateless (``is_stateless``) it also
    owns the qparam state described in :class:`StatefulQParamsCalculatorBase`, so a
    subclass that only implements :meth:`forward` gets buffers that a fake-quantizer
    fills with its results. The built-ins derive from
    :class:`StatefulQParamsCalculatorBase` (qparams kept in buffers) or
    :class:`StatelessQParamsCalculatorBase` (recomputed every forward).
    """

    REGISTRY: ClassVar[ClassRegistry] = QPARAMS_CALCULATOR_REGISTRY
    is_stateless: ClassVar[bool] = False
    """True for calculators that keep no qparam state (recomputed on every forward)."""

    def __init__(
        self,
        dtype: torch.dtype,
        qscheme: QuantizationScheme | str,
        granularity: QuantizationGranularity,
        target_dtype: torch.dtype | None = None,
        quant_min: float | None = None,
        quant_max: float | None = None,
        range_calculator: RangeCalculatorBase | None = None,
        float_range: Sequence[float | None] = (None, None),
        scale_dtype: torch.dtype | None = None,
        n_bits: int | None = None,
        quantization_target: CompressionTargetTensor | str = CompressionTargetTensor.WEIGHT,
    ) -> None:
        """Build a calculator for one quantized tensor.

        Args:
            dtype: quantization dtype (int2..int8, uint2..uint8, float8_e4m3fn,
                float8_e5m2, float4_e2m1fn_x2).
            qscheme: symmetric / asymmetric / symmetric_with_clipping.
            granularity: block layout of the qparams.
            target_dtype: dtype holding one code (informational).
            quant_min, quant_max: code range (default: the dtype's range under
                *qscheme*).
            range_calculator: computes per-block ``(min, max)``; default
                :class:`MinMaxRangeCalculator` with *granularity*.
            float_range: pinned ``[min, max]`` ends replacing the observed ones (clamped
                to ``min <= 0 <= max``); with both set a stateful calculator's qparams
                are frozen after the first forward.
            scale_dtype: None (float32 scales) or ``torch.float8_e8m0fnu`` (power-of-two
                scales; float formats only).
            n_bits: bits per code (informational; derived from *dtype* when None).
            quantization_target: ``weight``, ``activation`` or ``lut``; selects how an
                integer ``PerBlockGranularity`` lays out its blocks.
        """
        super().__init__()
        info = format_info(dtype)
        if not isinstance(granularity, QuantizationGranularity):
            raise TypeError(
                f"granularity must be a QuantizationGranularity, got "
                f"{type(granularity).__name__}: {granularity!r}"[:300]
            )
        self.dtype = dtype
        self.qscheme = QuantizationScheme(qscheme)
        self.is_float = info.is_float
        lo_default, hi_default = _default_quant_range(dtype, self.qscheme)
        self.quant_min = lo_default if quant_min is None else quant_min
        self.quant_max = hi_default if quant_max is None else quant_max
        if not self.quant_min < self.quant_max:
            raise ValueError(
                f"quant_min={self.quant_min} must be < quant_max={self.quant_max} for {dtype}"
            )
        self.target_dtype = target_dtype
        self.n_bits = info.n_bits if n_bits is None else n_bits
        if scale_dtype is not None and scale_dtype != _E8M0:
            raise ValueError(
                f"scale_dtype={scale_dtype} is not supported; allowed: None or torch.float8_e8m0fnu"
            )
        if scale_dtype == _E8M0 and not self.is_float:
            raise ValueError(
                f"scale_dtype=float8_e8m0fnu needs a float dtype, got {dtype}; allowed "
                f"scale_dtype for integer dtypes: None"
            )
        self.scale_dtype = scale_dtype
        self.float_range = _check_float_range(float_range)
        self.quantization_target = CompressionTargetTensor.parse(quantization_target)
        if range_calculator is None:
            range_calculator = MinMaxRangeCalculator(granularity, self.quantization_target)
        if not isinstance(range_calculator, RangeCalculatorBase):
            raise TypeError(
                f"range_calculator must be a RangeCalculatorBase module, got "
                f"{type(range_calculator).__name__}"
            )
        self.range_calculator = range_calculator
        self._granularity = granularity
        self.range_calculator.granularity = granularity
        self.range_calculator.quantization_target = self.quantization_target
        self._initialized = False
        self._export_mode = False
        self._compute_dtype_for_export: torch.dtype | None = None
        self._input_rank: int | None = None
        if not self.is_stateless:
            # Empty until the first observation (or load_state_dict) gives them their shape.
            self.register_buffer("running_min", torch.empty(0))
            self.register_buffer("running_max", torch.empty(0))
            self.register_buffer("scale", torch.empty(0))
            if self.is_float:
                self.register_buffer("zero_point", None)
                self.register_buffer("minval", None)
            else:
                self.register_buffer("zero_point", torch.empty(0, dtype=torch.int32))
                self.register_buffer("minval", torch.empty(0))

    # -- spec rules -----------------------------------------------------------------------

    @classmethod
    def validate_spec(cls, spec: QuantizationSpec) -> None:
        """Refuse spec fields this calculator cannot work with (``ValueError``).

        ``QuantizationSpec`` calls it for its ``qparam_calculator_cls``; the base
        accepts everything.
        """

    # -- properties ---------------------------------------------------------------------

    @property
    def granularity(self) -> QuantizationGranularity:
        """Block layout of the qparams (settable only before the first forward)."""
        return self._granularity

    @granularity.setter
    def granularity(self, value: QuantizationGranularity) -> None:
        if self._initialized:
            raise RuntimeError(
                f"{type(self).__name__}.granularity cannot change after the calculator has "
                f"observed data (its qparams already have shape {tuple(self.scale.shape)}); "
                f"set the granularity before the first forward pass"
            )
        if not isinstance(value, QuantizationGranularity):
            raise TypeError(
                f"granularity must be a QuantizationGranularity, got {type(value).__name__}"
            )
        self._granularity = value
        self.range_calculator.granularity = value

    @property
    def symmetric(self) -> bool:
        """True for the symmetric and symmetric-with-clipping schemes."""
        return self.qscheme is not QuantizationScheme.ASYMMETRIC

    @property
    def e8m0(self) -> bool:
        """True when scales are powers of two (``scale_dtype=float8_e8m0fnu``)."""
        return self.scale_dtype == _E8M0

    @property
    def fixed_range(self) -> bool:
        """True when both ``float_range`` ends are set (qparams never change)."""
        return self.float_range[0] is not None and self.float_range[1] is not None

    @property
    def initialized(self) -> bool:
        """True once the state has been sized (first forward or load_state_dict)."""
        return self._initialized

    @property
    def _resolved_axis(self) -> int | None:
        """Non-negative per-channel axis (None for other granularities or before data)."""
        gran = self._granularity
        if not isinstance(gran, PerChannelGranularity) or gran.axis is None:
            return None
        if self._input_rank is None:
            return gran.axis if gran.axis >= 0 else None
        return gran.resolved_axis(self._input_rank)

    @property
    def averaging_constant_value(self) -> float:
        """Averaging constant passed to the range fold (0.01 unless overridden)."""
        return float(getattr(self, "averaging_constant", 0.01))

    def block_size(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Block size for an input of *shape* (raises on a block size that does not fit)."""
        return block_size_for(self._granularity, shape, self.quantization_target)

    def qparams_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Qparam shape for an input of *shape* (raises on a block size that does not fit)."""
        block = self.block_size(shape)
        return tuple(s // b for s, b in zip(shape, block, strict=True))

    def effective_float_range(self, dtype: torch.dtype) -> FloatRange:
        """``float_range`` as used for an input of *dtype*.

        Pinned bounds are clamped so that ``min <= 0 <= max``. With exactly one bound
        pinned, that bound is rounded to *dtype* (the observed one already is).
        """
        lo, hi = self.float_range
        if lo is None and hi is None:
            return lo, hi
        if lo is not None:
            lo = min(lo, 0.0)
        if hi is not None:
            hi = max(hi, 0.0)
        if (lo is None) != (hi is None):
            lo = None if lo is None else _round_to(lo, dtype)
            hi = None if hi is None else _round_to(hi, dtype)
        return lo, hi

    # -- qparams ------------------------------------------------------------------------

    def _qparams_op(self, lo: torch.Tensor, hi: torch.Tensor, float_range: FloatRange) -> QParams:
        lo_fix, hi_fix = float_range
        if self.is_float:
            scale = _ops.choose_qparams_float(
                lo, hi, self.dtype, e8m0=self.e8m0, float_range=(lo_fix, hi_fix)
            )
            return scale, None, None
        scale, zp, minval = _ops.choose_qparams_int(
            lo,
            hi,
            quant_min=int(self.quant_min),
            quant_max=int(self.quant_max),
            symmetric=self.symmetric,
            float_range=(lo_fix, hi_fix),
        )
        return scale, zp, minval

    def _qparams_torch(
        self, lo: torch.Tensor, hi: torch.Tensor, float_range: FloatRange
    ) -> QParams:
        """The qparam formulas with differentiable torch ops (float32 in and out)."""
        lo_fix, hi_fix = float_range
        lo = torch.full_like(lo, lo_fix) if lo_fix is not None else torch.clamp(lo, max=0.0)
        hi = torch.full_like(hi, hi_fix) if hi_fix is not None else torch.clamp(hi, min=0.0)
        max_abs = torch.maximum(-lo, hi)
        if self.is_float:
            if self.e8m0:
                scale = _ops.choose_qparams_float(lo.detach(), hi.detach(), self.dtype, e8m0=True)
                return scale, None, None
            return torch.clamp(max_abs / format_info(self.dtype).max_abs, min=_EPS), None, None
        qmin, qmax = int(self.quant_min), int(self.quant_max)
        if self.symmetric:
            scale = torch.clamp(max_abs / _f32((qmax - qmin) / 2.0), min=_EPS)
            zp_value = int(_f32(qmax + qmin + 1) / 2.0)
            zp = torch.full(scale.shape, zp_value, dtype=torch.int32, device=scale.device)
            return scale, zp, -max_abs
        scale = torch.clamp((hi - lo) / float(qmax - qmin), min=_EPS)
        with torch.no_grad():
            zp_f = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
            zp = torch.where(torch.isnan(zp_f), torch.full_like(zp_f, qmin), zp_f)
        return scale, zp.to(torch.int32), lo

    def _qparams_f32(self, lo: torch.Tensor, hi: torch.Tensor, dtype: torch.dtype) -> QParams:
        """Float32 qparams of the range ``[lo, hi]`` seen on an input of *dtype*."""
        float_range = self.effective_float_range(dtype)
        differentiable = (lo.requires_grad or hi.requires_grad) and torch.is_grad_enabled()
        if differentiable:
            return self._qparams_torch(lo.float(), hi.float(), float_range)
        return self._qparams_op(lo.detach().float(), hi.detach().float(), float_range)

    @staticmethod
    def _as_input_dtype(qparams: QParams, dtype: torch.dtype) -> QParams:
        scale, zp, minval = qparams
        return scale.to(dtype), zp, None if minval is None else minval.to(dtype)

    def compute_qparams(
        self, tensor: torch.Tensor, min_val: torch.Tensor, max_val: torch.Tensor
    ) -> QParams:
        """``(scale, zero_point, minval)`` for the range ``[min_val, max_val]`` of *tensor*.

        Pure formula (``float_range`` applied, nothing stored); scale and minval come back
        in *tensor*'s dtype, zero_point as int32 (None entries for float formats).
        """
        return self._as_input_dtype(self._qparams_f32(min_val, max_val, tensor.dtype), tensor.dtype)

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> QParams:
        """Observe *x* and return ``(scale, zero_point, minval)``."""

    def fused_method(self) -> str | None:
        """The ``update_range`` method of this calculator when the fused op can run it.

        Only the built-in calculators (exact classes) with the built-in min/max range
        calculator and a dtype the kernels implement qualify; anything else returns None
        (a Python path is used).
        """
        if (
            type(self) not in _FUSABLE
            or type(self.range_calculator) is not MinMaxRangeCalculator
            or not is_kernel_format(self.dtype)
        ):
            return None
        return _FUSABLE[type(self)]

    # -- state --------------------------------------------------------------------------

    def initialize_state(self, qshape: Sequence[int], dtype: torch.dtype, rank: int) -> None:
        """Size the state buffers for qparams of *qshape* (first observation only)."""
        if self.is_stateless:
            raise TypeError(f"{type(self).__name__} is stateless and has no state to size")
        qshape = tuple(int(d) for d in qshape)
        if self._initialized:
            if tuple(self.scale.shape) != qshape:
                raise ValueError(
                    f"{type(self).__name__}: input gives qparams of shape {qshape} but the "
                    f"state has shape {tuple(self.scale.shape)} (fixed by the first "
                    f"observation); the quantized tensor's layout must not change (use "
                    f"qparam_calculator_cls='dynamic' for activations whose shape varies)"
                )
            return
        device = self.scale.device
        self.running_min = torch.full(qshape, math.inf, device=device)
        self.running_max = torch.full(qshape, -math.inf, device=device)
        self.scale = torch.ones(qshape, device=device)
        if not self.is_float:
            self.zero_point = torch.zeros(qshape, dtype=torch.int32, device=device)
            self.minval = torch.zeros(qshape, device=device)
        self._initialized = True
        self._compute_dtype_for_export = dtype
        self._input_rank = rank

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        if self.is_stateless:
            super()._load_from_state_dict(
                state_dict,
                prefix,
                local_metadata,
                strict,
                missing_keys,
                unexpected_keys,
                error_msgs,
            )
            return
        for name in _STATE_BUFFERS:
            key = prefix + name
            own = getattr(self, name)
            if key in state_dict and own is not None and own.shape != state_dict[key].shape:
                new = torch.empty(state_dict[key].shape, dtype=own.dtype, device=own.device)
                setattr(self, name, new)
        if (prefix + "scale") in state_dict:
            self._initialized = self.scale.numel() > 0
            if self._initialized:
                self._input_rank = self.scale.dim()
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def set_export_mode(self, enabled: bool = True) -> None:
        """In export mode forward returns the stored qparams without observing."""
        self._export_mode = bool(enabled)

    def get_qparams(self) -> QParams:
        """Stored ``(scale, zero_point, minval)`` (float32 / int32; None for float formats).

        Warns (``UserWarning``) when nothing has been observed yet: the values are then
        placeholders.
        """
        if not self._initialized:
            warnings.warn(
                f"{type(self).__name__}.get_qparams() called before any forward: the "
                f"qparams are placeholders, run data through the calculator first",
                UserWarning,
                stacklevel=2,
            )
        return self.scale, self.zero_point, self.minval

    def _stored(self, dtype: torch.dtype) -> QParams:
        zp = None if self.zero_point is None else self.zero_point.clone()
        minval = None if self.minval is None else self.minval.to(dtype, copy=True)
        return self.scale.to(dtype, copy=True), zp, minval

    # -- the range fold -----------------------------------------------------------------

    def update_running_range(
        self, min_val: torch.Tensor, max_val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold a batch range into ``running_min`` / ``running_max``.

        Returns the new range as float32 tensors (differentiable when the inputs are);
        the buffers receive detached copies. The base keeps the batch range.
        """
        lo, hi = min_val.float(), max_val.float()
        self._store_running(lo, hi)
        return lo, hi

    def _store_running(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        with torch.no_grad():
            self.running_min.copy_(lo)
            self.running_max.copy_(hi)

    def _store_qparams(self, qparams: QParams) -> None:
        scale, zp, minval = qparams
        with torch.no_grad():
            self.scale.copy_(scale)
            if zp is not None and self.zero_point is not None:
                self.zero_point.copy_(zp)
            if minval is not None and self.minval is not None:
                self.minval.copy_(minval)

    def _observe(self, x: torch.Tensor) -> QParams:
        """Observe *x*, update the state and return qparams in *x*'s dtype."""
        if self._export_mode or (self.fixed_range and self._initialized):
            return self._stored(x.dtype)
        block = self.block_size(x.shape)
        qshape = tuple(s // b for s, b in zip(x.shape, block, strict=True))
        self.initialize_state(qshape, x.dtype, x.dim())
        differentiable = x.requires_grad and torch.is_grad_enabled()
        method = self.fused_method()
        if self.fixed_range:
            lo, hi = self.running_min, self.running_max
        elif method is not None and not differentiable:
            _ops.update_range(
                x, self.running_min, self.running_max, block, method, self.averaging_constant_value
            )
            lo, hi = self.running_min, self.running_max
        else:
            batch_lo, batch_hi = self.range_calculator(x)
            lo, hi = self.update_running_range(batch_lo, batch_hi)
        if not differentiable:
            lo, hi = lo.detach(), hi.detach()
        qparams = self._qparams_f32(lo, hi, x.dtype)
        self._store_qparams(qparams)
        return self._as_input_dtype(qparams, x.dtype)

    def extra_repr(self) -> str:
        """The current qparams and the export-mode flag."""
        return (
            f"scale={self.scale}, zero_point={self.zero_point}, minval={self.minval}, "
            f"export_mode={self._export_mode}"
        )


def _default_quant_range(dtype: torch.dtype, qscheme: QuantizationScheme) -> tuple[Any, Any]:
    narrow = qscheme is QuantizationScheme.SYMMETRIC_WITH_CLIPPING
    lo, hi = quant_range(dtype, narrow)
    if format_info(dtype).is_float:
        return lo, hi
    return int(lo), int(hi)


class StatefulQParamsCalculatorBase(QParamsCalculatorBase):
    """Base of calculators that keep their qparams in buffers across forwards.

    Buffers ``running_min`` / ``running_max`` / ``scale`` / ``zero_point`` /
    ``minval`` are empty until the first forward (or ``load_state_dict``) gives them the
    qparam shape, which must not change afterwards (use a stateless calculator for
    variable shapes). Export mode and a fully pinned ``float_range`` return the stored
    qparams without observing. Subclasses only choose how the range accumulates
    (:meth:`update_running_range`, or :class:`RunningRangeMixin`).
    """

    def forward(self, x: torch.Tensor) -> QParams:
        """Observe *x*, update the stored qparams and return them in *x*'s dtype."""
        return self._observe(x)

    def update_qparams_from_running_range(self) -> None:
        """Recompute the stored qparams from ``running_min`` / ``running_max``.

        For state changed from outside a forward (e.g. ranges reduced across ranks by
        :mod:`coreai_opt.quantization.distributed`). Uses the ``choose_qparams_int`` /
        ``choose_qparams_float`` ops and ``float_range`` as a forward does (for the dtype of
        the first observed input); elements whose range is still unobserved (+inf / -inf)
        keep their stored qparams unless both ``float_range`` ends are pinned. No-op before
        the state is sized.
        """
        if not self._initialized:
            return
        dtype = self._compute_dtype_for_export or torch.float32
        with torch.no_grad():
            lo, hi = self.running_min.float(), self.running_max.float()
            scale, zp, minval = self._qparams_op(lo, hi, self.effective_float_range(dtype))
            if self.fixed_range:
                self._store_qparams((scale, zp, minval))
                return
            keep = torch.isposinf(lo) | torch.isneginf(hi)
            self.scale.copy_(torch.where(keep, self.scale, scale))
            if zp is not None and self.zero_point is not None:
                self.zero_point.copy_(torch.where(keep, self.zero_point, zp))
            if minval is not None and self.minval is not None:
                self.minval.copy_(torch.where(keep, self.minval, minval))


class RunningRangeMixin:
    """Marks a calculator whose range accumulates over batches.

    Subclasses implement :meth:`_fold` (float32 batch range and running range in,
    new running range out, with the ``update_range`` op's semantics);
    :meth:`update_running_range` stores it. The repr adds the running range.
    """

    running_min: torch.Tensor
    running_max: torch.Tensor

    def update_running_range(
        self, min_val: torch.Tensor, max_val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold a batch range into the running range; returns the new range (float32)."""
        lo, hi = self._fold(
            min_val.float(), max_val.float(), self.running_min.clone(), self.running_max.clone()
        )
        with torch.no_grad():
            self.running_min.copy_(lo)
            self.running_max.copy_(hi)
        return lo, hi

    def _fold(
        self, lo: torch.Tensor, hi: torch.Tensor, run_lo: torch.Tensor, run_hi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} must implement _fold()")

    def extra_repr(self) -> str:
        """The base summary plus a line with the running range."""
        base = super().extra_repr()  # type: ignore[misc]
        return f"{base}\nrunning_min={self.running_min}, running_max={self.running_max}"


@QParamsCalculatorBase.register("static")
class StaticQParamsCalculator(StatefulQParamsCalculatorBase):
    """Qparams from the current tensor only (the usual choice for weights)."""


@QParamsCalculatorBase.register("moving_average")
class MovingAverageQParamsCalculator(RunningRangeMixin, StatefulQParamsCalculatorBase):
    """Exponential moving average of the observed range (the usual choice for activations).

    ``averaging_constant`` (default 0.01, in (0, 1]) weights the new batch:
    ``r <- c * batch + (1 - c) * r``; the first batch sets ``r``.
    """

    def __init__(self, *args: Any, averaging_constant: float = 1e-2, **kwargs: Any) -> None:
        """Same arguments as :class:`QParamsCalculatorBase`, plus ``averaging_constant``."""
        super().__init__(*args, **kwargs)
        if isinstance(averaging_constant, bool) or not 0.0 < float(averaging_constant) <= 1.0:
            raise ValueError(
                f"averaging_constant={averaging_constant!r} must be a number in (0, 1]"
            )
        self.averaging_constant = float(averaging_constant)

    def _fold(
        self, lo: torch.Tensor, hi: torch.Tensor, run_lo: torch.Tensor, run_hi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = _f32(self.averaging_constant)
        keep = _f32(1.0 - c)
        new_lo = torch.where(torch.isposinf(run_lo), lo, c * lo + keep * run_lo)
        new_hi = torch.where(torch.isneginf(run_hi), hi, c * hi + keep * run_hi)
        return new_lo, new_hi


@QParamsCalculatorBase.register("global_minmax")
class GlobalMinMaxQParamsCalculator(RunningRangeMixin, StatefulQParamsCalculatorBase):
    """Running minimum of the minima and maximum of the maxima over all batches."""

    def _fold(
        self, lo: torch.Tensor, hi: torch.Tensor, run_lo: torch.Tensor, run_hi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new_lo = torch.where((lo < run_lo) | torch.isnan(lo), lo, run_lo)
        new_hi = torch.where((hi > run_hi) | torch.isnan(hi), hi, run_hi)
        return new_lo, new_hi


class StatelessQParamsCalculatorBase(QParamsCalculatorBase):
    """Base of calculators that recompute the qparams on every forward and store nothing.

    No buffers: the qparam shape may change from one call to the next (e.g. per-token
    scales of a variable-length sequence). ``scale`` / ``zero_point`` / ``minval`` are
    plain attributes holding the last forward's values for inspection (not in
    ``state_dict``). ``float_range`` must be ``[None, None]``; export mode and
    :meth:`get_qparams` raise ``NotImplementedError`` (there are no stored qparams).
    A fake-quantizer keeps the observer of a stateless calculator on.
    """

    # Per-call results kept for inspection: a stateless calculator is never bound by the
    # eager tables (its fake-quantizer runs in Python), so setting them on every forward
    # must not invalidate every model's tables and caches.
    _epoch_unwatched: ClassVar[frozenset[str]] = frozenset(
        {"scale", "zero_point", "minval", "_compute_dtype_for_export", "_input_rank"}
    )

    is_stateless: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Same arguments as :class:`QParamsCalculatorBase` (``float_range`` unpinned)."""
        super().__init__(*args, **kwargs)
        if self.float_range != (None, None):
            raise ValueError(
                f"{type(self).__name__} recomputes qparams from every tensor, so float_range "
                f"must be [None, None]; got {list(self.float_range)}"
            )
        self.scale: torch.Tensor | None = None
        self.zero_point: torch.Tensor | None = None
        self.minval: torch.Tensor | None = None

    @classmethod
    def validate_spec(cls, spec: QuantizationSpec) -> None:
        """Refuse a pinned ``float_range`` (stateless qparams follow every tensor)."""
        super().validate_spec(spec)
        if list(spec.float_range) != [None, None]:
            key = QPARAMS_CALCULATOR_REGISTRY.key_of(cls)
            raise ValueError(
                f"qparam_calculator_cls={key!r} recomputes qparams from every tensor, so "
                f"float_range must be [None, None]; got {list(spec.float_range)}"
            )

    def set_export_mode(self, enabled: bool = True) -> None:
        """Export mode needs stored qparams, which a stateless calculator has none of.

        ``set_export_mode(False)`` is a no-op; ``True`` raises ``NotImplementedError``.
        """
        if enabled:
            raise NotImplementedError(
                f"{type(self).__name__} keeps no qparams (they are recomputed on every "
                f"forward), so it has no export mode; use a stateful calculator such as "
                f"'static' or 'moving_average' for exportable qparams"
            )

    def get_qparams(self) -> QParams:
        """Not available: a stateless calculator stores no qparams (``NotImplementedError``)."""
        raise NotImplementedError(
            f"{type(self).__name__} stores no qparams; call it on a tensor to get that "
            f"tensor's qparams (the last ones are in .scale / .zero_point / .minval)"
        )

    def forward(self, x: torch.Tensor) -> QParams:
        """Qparams of *x* alone, in *x*'s dtype (nothing is stored)."""
        lo, hi = self.range_calculator(x)
        qparams = self._qparams_f32(lo, hi, x.dtype)
        self.scale, self.zero_point, self.minval = (
            None if t is None else t.detach() for t in qparams
        )
        self._compute_dtype_for_export = x.dtype
        self._input_rank = x.dim()
        return self._as_input_dtype(qparams, x.dtype)


@QParamsCalculatorBase.register("dynamic")
class DynamicQParamsCalculator(StatelessQParamsCalculatorBase):
    """Dynamic quantization: the qparams of each tensor are computed from that tensor.

    For activations only (the component factory refuses weights and LUTs); refuses
    ``symmetric_with_clipping`` and a pinned ``float_range``. Computes with the
    ``minmax`` and ``choose_qparams_int`` / ``choose_qparams_float`` ops; nothing is
    stored, so the qparam shape may change between calls.
    """

    def __init__(
        self,
        *args: Any,
        quantization_target: CompressionTargetTensor | str = CompressionTargetTensor.ACTIVATION,
        **kwargs: Any,
    ) -> None:
        """Same arguments as :class:`QParamsCalculatorBase`; the target defaults to activation."""
        super().__init__(*args, quantization_target=quantization_target, **kwargs)
        if self.quantization_target is not CompressionTargetTensor.ACTIVATION:
            raise ValueError(
                f"qparam_calculator_cls='dynamic' quantizes activations only; got "
                f"quantization_target={self.quantization_target.value!r} (allowed: "
                f"'activation')"
            )
        if self.qscheme is QuantizationScheme.SYMMETRIC_WITH_CLIPPING:
            raise ValueError(_DYNAMIC_QSCHEME_ERROR.format(self.qscheme.value))

    @classmethod
    def validate_spec(cls, spec: QuantizationSpec) -> None:
        """Refuse ``symmetric_with_clipping`` and a pinned ``float_range``."""
        super().validate_spec(spec)
        if spec.qscheme is QuantizationScheme.SYMMETRIC_WITH_CLIPPING:
            raise ValueError(_DYNAMIC_QSCHEME_ERROR.format(spec.qscheme.value))


_DYNAMIC_QSCHEME_ERROR = (
    "qscheme={!r} is not supported with qparam_calculator_cls='dynamic'; allowed: "
    "'symmetric', 'asymmetric'"
)


@QParamsCalculatorBase.register("default")
class _DefaultQParamsCalculatorMarker(QParamsCalculatorBase):
    """Registry entry for ``"default"``: the factory replaces it per target tensor."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Refuse construction: ``"default"`` must be resolved by the factory first."""
        raise RuntimeError(
            "qparam_calculator_cls='default' must be resolved before construction "
            "(QuantizationComponentFactory picks 'static' for weights/LUTs and "
            "'moving_average' for activations); allowed concrete keys: "
            f"{[k for k in QParamsCalculatorBase.available_keys() if k != 'default']}"
        )

    def forward(self, x: torch.Tensor) -> QParams:
        """Never reached (construction fails)."""
        raise RuntimeError("the 'default' qparam calculator marker cannot run")


_DefaultQParamsCalculator = _DefaultQParamsCalculatorMarker
"""The reference's name of the ``"default"`` marker class."""

_FUSABLE: dict[type, str] = {
    StaticQParamsCalculator: "static",
    MovingAverageQParamsCalculator: "moving_average",
    GlobalMinMaxQParamsCalculator: "global_minmax",
}
"""Built-in calculators the fused op runs, with their ``update_range`` method."""
