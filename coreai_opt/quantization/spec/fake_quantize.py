"""Fake-quantize modules: base class, registry and the built-in implementations.

* ``"default"`` — :class:`FakeQuantize`: observes with its qparam calculator and
  quantizes/dequantizes with a straight-through gradient. With a built-in calculator
  and range calculator its forward is one call of ``torch.ops.coreai_opt.
  fused_fake_quantize`` (no Python branch on tensor values, so it compiles and exports
  as a single node); with a user-registered calculator it calls that calculator and
  then ``fake_quantize_int`` / ``fake_quantize_float``.
* ``"lsq"`` — :class:`LearnableFakeQuantize`: scale and zero point are
  ``nn.Parameter`` s (initialised from the first observation) trained through
  ``torch.ops.coreai_opt.fake_quantize_lsq``.

Every implementation carries the switches ``observer_enabled`` / ``fake_quant_enabled``
(uint8 buffers of one element, 1 = on) and a ``_disabled`` flag (set when the
granularity's block size does not fit the tensor; the module is then an identity).
The module-level functions :func:`enable_observer`, :func:`disable_observer`,
:func:`enable_fake_quant` and :func:`disable_fake_quant` toggle them and work with
``model.apply``. Register custom implementations with
``@FakeQuantizeImplBase.register("key")``.
"""

from __future__ import annotations

import abc
import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

from coreai_opt import _ops
from coreai_opt.config.spec import (
    CompressionSimulatorBase,
    CompressionTargetTensor,
    CompressionType,
)
from coreai_opt.quantization.spec import _state_epoch
from coreai_opt.quantization.spec._dtype_table import format_info
from coreai_opt.quantization.spec._registry import (
    FAKE_QUANTIZE_REGISTRY,
    ClassRegistry,
    RegistryMixin,
)
from coreai_opt.quantization.spec._state_epoch import StateEpochMixin
from coreai_opt.quantization.spec.errors import _BlockSizeMismatchError
from coreai_opt.quantization.spec.granularity import (
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QuantizationGranularity,
    block_size_for,
)
from coreai_opt.quantization.spec.qformulation import QuantizationFormulation
from coreai_opt.quantization.spec.qparams_calculator import (
    QParams,
    QParamsCalculatorBase,
    StatefulQParamsCalculatorBase,
)
from coreai_opt.quantization.spec.qscheme import QuantizationScheme

__all__ = ["FakeQuantizeImplBase"]

logger = logging.getLogger(__name__)

_tracing_state = torch._C._get_tracing_state

_FULL = -1
"""Block-pattern entry meaning "the whole dimension, whatever its size"."""

UNKNOWN_TENSOR_FQN = "<unknown>"
"""``tensor_fqn`` of a fake-quantizer that is not attached to a named parameter."""


class FakeQuantizeImplBase(StateEpochMixin, RegistryMixin, CompressionSimulatorBase):
    """Base of the ``nn.Module`` that quantizes and dequantizes a tensor in forward.

    Built-in keys: ``"default"`` (integer and float formats, straight-through
    gradient) and ``"lsq"`` (learnable scale / zero point). The base registers the
    switch buffers ``fake_quant_enabled`` / ``observer_enabled`` (uint8, shape [1],
    both on) and the ``_disabled`` flag; subclasses call ``super().__init__()``.
    ``tensor_fqn`` names the parameter a weight fake-quantizer is attached to
    (``"<unknown>"`` until a quantizer sets it, and for activations).
    """

    REGISTRY: ClassVar[ClassRegistry] = FAKE_QUANTIZE_REGISTRY
    compression_type: ClassVar[CompressionType] = CompressionType.QUANTIZATION

    def __init__(self) -> None:
        """Register the observer / fake-quant switches (both on)."""
        super().__init__()
        self.register_buffer("fake_quant_enabled", torch.ones(1, dtype=torch.uint8))
        self.register_buffer("observer_enabled", torch.ones(1, dtype=torch.uint8))
        self._disabled = False
        self._tensor_fqn = UNKNOWN_TENSOR_FQN

    @property
    def tensor_fqn(self) -> str:
        """Qualified name of the quantized parameter (``"<unknown>"`` for activations)."""
        return self._tensor_fqn

    @tensor_fqn.setter
    def tensor_fqn(self, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"tensor_fqn must be a str or None, got {type(value).__name__}")
        self._tensor_fqn = value or UNKNOWN_TENSOR_FQN

    @property
    def is_stateless(self) -> bool:
        """True when the qparams are recomputed on every forward (no stored qparams)."""
        return False

    def enable_fake_quant(self, enabled: bool = True) -> FakeQuantizeImplBase:
        """Switch fake quantization on (or off with ``enabled=False``)."""
        self.fake_quant_enabled[0] = 1 if enabled else 0
        return self

    def disable_fake_quant(self) -> FakeQuantizeImplBase:
        """Switch fake quantization off (forward passes the tensor through)."""
        return self.enable_fake_quant(False)

    def enable_observer(self, enabled: bool = True) -> FakeQuantizeImplBase:
        """Switch observation on (or off with ``enabled=False``).

        A stateless fake-quantizer (dynamic qparams) always observes: switching its
        observer off is a no-op.
        """
        self.observer_enabled[0] = 1 if (enabled or self.is_stateless) else 0
        return self

    def disable_observer(self) -> FakeQuantizeImplBase:
        """Switch observation off (the stored qparams are used)."""
        return self.enable_observer(False)

    def is_disabled(self) -> bool:
        """True when the module was disabled (block size mismatch) and is an identity."""
        return bool(self._disabled)

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the fake-quantized *x* (same shape and dtype)."""


def fp4_forward(tensor: torch.Tensor) -> torch.Tensor:
    """*tensor* rounded onto the FP4 (E2M1) grid, in its own dtype.

    Values are clamped to ``[-6, 6]`` and rounded to the nearest E2M1 value (ties to
    even); NaN passes through. This is the FP4 fake-quantize with a scale of 1
    (``torch.ops.coreai_opt.fake_quantize_float``); divide by the scale first and
    multiply after for a scaled tensor.
    """
    one = torch.ones((), dtype=torch.float32, device=tensor.device)
    return _ops.fake_quantize_float(tensor, one, torch.float4_e2m1fn_x2)


def enable_observer(module: torch.nn.Module) -> None:
    """Turn the observer of *module* on if it is a fake-quantizer (for ``model.apply``)."""
    if isinstance(module, FakeQuantizeImplBase):
        module.enable_observer()


def disable_observer(module: torch.nn.Module) -> None:
    """Turn the observer of *module* off if it is a fake-quantizer (for ``model.apply``)."""
    if isinstance(module, FakeQuantizeImplBase):
        module.disable_observer()


def enable_fake_quant(module: torch.nn.Module) -> None:
    """Turn fake quantization of *module* on if it is a fake-quantizer (for ``model.apply``)."""
    if isinstance(module, FakeQuantizeImplBase):
        module.enable_fake_quant()


def disable_fake_quant(module: torch.nn.Module) -> None:
    """Turn fake quantization of *module* off if it is a fake-quantizer (for ``model.apply``)."""
    if isinstance(module, FakeQuantizeImplBase):
        module.disable_fake_quant()


def _block_size_of(shape: Sequence[int], pattern: Sequence[int]) -> list[int]:
    """The block size for *shape* of a block pattern (``_FULL`` takes the dimension's size)."""
    return [s if p == _FULL else p for s, p in zip(shape, pattern, strict=True)]


def _compile_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """*x* as a traced fake-quantizer passes it to the fused op: channels_last when asked for
    a 4-d CPU input (Inductor folds the conversion into the kernel that produces x, and it is
    no copy when x is already channels_last), else unchanged."""
    if channels_last and x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _block_pattern(
    granularity: QuantizationGranularity,
    shape: Sequence[int],
    block: Sequence[int],
    target: CompressionTargetTensor,
) -> tuple[int, ...]:
    """Block size per dimension with ``_FULL`` where the block spans the whole dimension.

    Lets forward recompute the block size for a new batch size without calling into
    pydantic (so it traces cleanly). Unknown granularities keep the first block size.
    """
    rank = len(shape)
    if isinstance(granularity, PerTensorGranularity):
        return (_FULL,) * rank
    if isinstance(granularity, PerChannelGranularity):
        axis = granularity.resolved_axis(rank)
        return tuple(1 if d == axis else _FULL for d in range(rank))
    if isinstance(granularity, PerBlockGranularity):
        return granularity.block_pattern(rank, target)
    return tuple(int(b) for b in block)


class _QuantizerCommon(FakeQuantizeImplBase):
    """Constructor, granularity handling and API shared by the built-in implementations.

    ``qscheme`` and ``quantization_target`` are read from the qparam calculator (as in
    the reference's 0.3.0); the constructor still accepts them for code written for
    0.2.0, and refuses values that contradict the calculator.
    """

    def __init__(
        self,
        dtype: torch.dtype,
        qformulation: QuantizationFormulation | str,
        granularity: QuantizationGranularity,
        target_dtype: torch.dtype,
        quant_min: float,
        quant_max: float,
        qparams_calculator: QParamsCalculatorBase,
        n_bits: int | None = None,
        *,
        qscheme: QuantizationScheme | str | None = None,
        quantization_target: CompressionTargetTensor | str | None = None,
        tensor_fqn: str | None = None,
    ) -> None:
        """Build a fake-quantizer.

        Args:
            dtype: quantization dtype (see ``QuantizationSpec.SUPPORTED_DTYPES``).
            qformulation: ``zp`` or ``minval`` (integer offset form).
            granularity: block layout of the qparams.
            target_dtype: dtype holding one unpacked code.
            quant_min, quant_max: code range.
            qparams_calculator: the calculator module (owns the qparam state, the scheme
                and the quantization target).
            n_bits: bits per code (derived from *dtype* when None).
            qscheme: optional; must equal the calculator's scheme.
            quantization_target: optional; must equal the calculator's target.
            tensor_fqn: name of the quantized parameter (None: ``"<unknown>"``).
        """
        super().__init__()
        info = format_info(dtype)
        if not isinstance(qparams_calculator, QParamsCalculatorBase):
            raise TypeError(
                f"qparams_calculator must be a QParamsCalculatorBase module, got "
                f"{type(qparams_calculator).__name__}"
            )
        if qscheme is not None and QuantizationScheme(qscheme) is not qparams_calculator.qscheme:
            raise ValueError(
                f"qscheme={QuantizationScheme(qscheme).value!r} contradicts the qparams "
                f"calculator's qscheme {qparams_calculator.qscheme.value!r}; the fake-quantizer "
                f"reads it from the calculator (omit the argument)"
            )
        if quantization_target is not None:
            wanted = CompressionTargetTensor(quantization_target)
            if wanted is not qparams_calculator.quantization_target:
                raise ValueError(
                    f"quantization_target={wanted.value!r} contradicts the qparams calculator's "
                    f"quantization_target {qparams_calculator.quantization_target.value!r}; the "
                    f"fake-quantizer reads it from the calculator (omit the argument)"
                )
        self.dtype = dtype
        self.qformulation = QuantizationFormulation(qformulation)
        if info.is_float and self.qformulation is not QuantizationFormulation.ZP:
            raise ValueError(
                f"qformulation={self.qformulation.value!r} is not supported with float dtype "
                f"{dtype}; allowed: 'zp'"
            )
        self.target_dtype = target_dtype
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.n_bits = info.n_bits if n_bits is None else n_bits
        self.is_float = info.is_float
        self.qparams_calculator = qparams_calculator
        self.tensor_fqn = tensor_fqn
        self._granularity = granularity
        if qparams_calculator.granularity != granularity and not qparams_calculator.initialized:
            qparams_calculator.granularity = granularity
        self._export_mode = False
        self._pattern: tuple[int, ...] | None = None

    @property
    def qscheme(self) -> QuantizationScheme:
        """The quantization scheme (read from the qparams calculator)."""
        return self.qparams_calculator.qscheme

    @property
    def quantization_target(self) -> CompressionTargetTensor:
        """Weight, activation or LUT (read from the qparams calculator)."""
        return self.qparams_calculator.quantization_target

    @property
    def is_stateless(self) -> bool:
        """True when the calculator recomputes the qparams on every forward."""
        return bool(self.qparams_calculator.is_stateless)

    @property
    def granularity(self) -> QuantizationGranularity:
        """Block layout; setting it updates the calculators (before the first forward only)."""
        return self._granularity

    @granularity.setter
    def granularity(self, value: QuantizationGranularity) -> None:
        self.qparams_calculator.granularity = value
        self._granularity = value
        self._pattern = None

    def get_block_size(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Block size per dimension for a tensor of *shape* (this quantizer's target)."""
        return block_size_for(self._granularity, shape, self.quantization_target)

    @property
    def use_minval(self) -> bool:
        """True for the minval formulation."""
        return self.qformulation is QuantizationFormulation.MINVAL

    @classmethod
    def with_args(cls, **kwargs: Any) -> Callable[..., FakeQuantizeImplBase]:
        """A constructor with *kwargs* bound (call it with the remaining arguments)."""
        return functools.partial(cls, **kwargs)

    def convert(self, *args: Any, **kwargs: Any) -> None:
        """No-op: the module stays in place through graph conversion passes."""

    def set_export_mode(self, enabled: bool = True) -> None:
        """In export mode forward uses the stored qparams and never observes.

        Raises ``NotImplementedError`` for a stateless (dynamic) calculator, which has
        no stored qparams.
        """
        self.qparams_calculator.set_export_mode(enabled)
        self._export_mode = bool(enabled)

    def calculate_qparams(self) -> QParams:
        """Stored ``(scale, zero_point, minval)`` (None entries for float formats)."""
        return self.qparams_calculator.get_qparams()

    def _first_observation(self, x: torch.Tensor) -> bool:
        """Size the state for *x*; False (and disabled) when the block size does not fit."""
        try:
            block = self.get_block_size(x.shape)
        except _BlockSizeMismatchError as err:
            logger.warning(
                "Disabling %s of tensor %s (quantization target %s): the granularity does "
                "not fit its shape %s: %s",
                type(self).__name__,
                self.tensor_fqn,
                self.quantization_target.value,
                tuple(x.shape),
                err,
            )
            self._disabled = True
            return False
        if self.is_stateless:
            self._pattern = ()
            return True
        qshape = tuple(s // b for s, b in zip(x.shape, block, strict=True))
        self.qparams_calculator.initialize_state(qshape, x.dtype, x.dim())
        self._pattern = _block_pattern(self._granularity, x.shape, block, self.quantization_target)
        self._size_extra_state(qshape)
        return True

    def _size_extra_state(self, qshape: tuple[int, ...]) -> None:
        """Hook for subclasses with state of the qparam shape."""

    def _block_size(self, shape: Sequence[int]) -> list[int]:
        pattern = self._pattern
        assert pattern is not None
        return _block_size_of(shape, pattern)

    def _switch_text(self) -> str:
        obs = "on" if int(self.observer_enabled[0]) else "off"
        fq = "on" if int(self.fake_quant_enabled[0]) else "off"
        return f"observer={obs}, fake_quant={fq}"

    def extra_repr(self) -> str:
        """Format, offset form and switch states."""
        return (
            f"dtype={self.dtype}, qscheme={self.qscheme.value}, "
            f"qformulation={self.qformulation.value}, granularity={self._granularity!r}, "
            f"{self._switch_text()}" + (", disabled" if self._disabled else "")
        )


@FakeQuantizeImplBase.register("default")
class FakeQuantize(_QuantizerCommon):
    """The default fake-quantizer: observe, compute qparams, quantize-dequantize.

    Forward:

    * disabled (block size mismatch on the first forward) → identity;
    * built-in calculator: ``fused_fake_quantize(x, observer_enabled,
      fake_quant_enabled, <calculator state>, ...)`` — the op reads the switches, so
      there is no Python branch on tensor values; the gradient is the clipped
      straight-through estimator and no gradient reaches the qparams;
    * user-registered calculator or range calculator: the calculator module is called
      (under ``no_grad``) when the observer is on, its qparams are stored in its
      buffers and ``fake_quantize_int`` / ``fake_quantize_float`` applies them;
    * stateless calculator (``"dynamic"``): the calculator computes this tensor's
      qparams on every forward (the observer cannot be switched off) and
      ``fake_quantize_int`` / ``fake_quantize_float`` applies them; export mode raises
      ``NotImplementedError``.

    The qparam state (``running_min`` / ``running_max`` / ``scale`` / ``zero_point`` /
    ``minval``) lives in the calculator submodule and is sized on the first forward;
    ``load_state_dict`` resizes it to the stored shapes. For float formats the
    calculator has no ``zero_point`` / ``minval``; the fused op receives unused
    non-persistent placeholders instead. Qparams are float32 whatever the input dtype.

    Under ``torch.compile`` (not ``torch.export``) a fake-quantizer with a trace plan (an
    eager forward builds it, graph mode's prepare re-keys it: ``refresh_trace_plan``) that
    matches the attribute versions of this module and its calculator records
    ``_fused_fake_quantize_bound_traced(x, handle, block_size)``: its switches, state and
    constant arguments are bound in C++ under the plan's handle, so Dynamo guards one tuple
    instead of each attribute and state tensor, and the compiled graph takes x alone.
    Otherwise the attributes and tensors are read and the fused op recorded with them.
    """

    # Set by graph mode's prepare on fake-quantizers at a convolution's input or output
    # (coreai_opt/quantization/_graph/memory_format.py): under torch.compile on CPU, a 4-D
    # input is asked for channels_last, the layout Inductor gives the convolutions.
    _compile_channels_last: bool = False

    # What torch.compile reads instead of the attributes and state (see _set_trace_plan);
    # None until built. A class default, so that one unpickled from an older save (which has
    # no such attribute) still compiles.
    _trace_plan: tuple[object, ...] | None = None

    # The C++ binding whose handle the trace plan holds, as (owner, handle): the handle is
    # valid while the owner lives. A tuple, as _bound_args, so that torch.export does not
    # take the owner for a constant of the module. Never copied (a copy binds its own state).
    _trace_binding: tuple[torch.ScriptObject, int] | None = None

    # The packed arguments bound in C++ (owner, handle): what the eager hot path calls. A
    # class default for the same reason as _trace_plan.
    _bound_args: tuple[torch.ScriptObject, int] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Same arguments as the common constructor (see ``_QuantizerCommon.__init__``)."""
        super().__init__(*args, **kwargs)
        self._method = self.qparams_calculator.fused_method()
        self.register_buffer("_observer_off", torch.zeros(1, dtype=torch.uint8), persistent=False)
        self.register_buffer(
            "_unused_zero_point", torch.empty(0, dtype=torch.int32), persistent=False
        )
        self.register_buffer("_unused_minval", torch.empty(0), persistent=False)
        self._args_key: tuple[object, ...] | None = None
        self._packed_args: tuple[object, ...] = ()
        self._bound_args = None
        self._version_cache: tuple[object, torch.Tensor | None, tuple[int, ...]] | None = None

    def _size_extra_state(self, qshape: tuple[int, ...]) -> None:
        if self.is_float:
            device = self.qparams_calculator.scale.device
            self._unused_zero_point = torch.zeros(qshape, dtype=torch.int32, device=device)
            self._unused_minval = torch.zeros(qshape, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize *x* (see the class docstring)."""
        compiling = torch.compiler.is_compiling()
        if compiling:
            plan = self._usable_trace_plan(x)
            if plan is not None:
                return self._forward_planned(x, plan)
        if self._disabled:
            return x
        if self._pattern is None and not self._first_observation(x):
            return x
        if self._method is None:
            return self._forward_python(x)
        if compiling:
            return self._forward_traceable(x)
        return self._forward_fast(x)

    def _usable_trace_plan(self, x: torch.Tensor) -> tuple[Any, ...] | None:
        # Under torch.compile (not export): the trace plan when it was built for x's dtype
        # and rank and for the current attributes and state tensors. Dynamo then reads one
        # tuple of constants instead of about thirty attributes and seven tensors, each of
        # which it would guard: fewer guards to check before every call of the compiled
        # model. torch.export's graph keeps the state tensors (one fused node per FQ).
        plan = self._trace_plan
        if (
            plan is not None
            and not torch.compiler.is_exporting()
            and len(plan[1]) == x.dim()
            and plan[0] == self._trace_plan_key(x.dtype)
        ):
            return plan
        return None

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        # Eager hot path: the op's arguments are built once per (shape, dtype, state epoch)
        # and a weight that needs no gradient is fake-quantized once per version.
        cache = self._version_cache
        if cache is not None and not (x.requires_grad and torch.is_grad_enabled()):
            key = (
                id(x),
                x.data_ptr(),  # `param.data = new` keeps id and version, not the storage
                x._version,
                self.fake_quant_enabled._version,
                self.observer_enabled._version,
                _state_epoch.EPOCH[0],  # state tensors replaced (load, .to(), ...)
            )
            # The qparams' versions are compared with those the last call left: the op
            # bumps them on every call (mutable arguments), so they cannot be part of the
            # key read before the call, but any later in-place change (a distributed sync,
            # an edit by hand) moves them on.
            if cache[0] == key and cache[2] == self._state_versions():
                return cache[1]
            observing = bool(self.observer_enabled[0]) and not self._export_mode
        else:
            key = None
        args_key = (x.shape, x.dtype, _state_epoch.EPOCH[0])
        if args_key != self._args_key:
            self._packed_args = self._fused_args(x)
            self._bound_args = _ops.bind_fused_fake_quantize(self._packed_args)
            self._args_key = args_key
            self._ensure_trace_plan(x.dtype)
        bound = self._bound_args
        if bound is not None and _tracing_state() is None:
            y = _ops.fused_fake_quantize_bound(x, bound[1])
        else:  # torch.jit.trace records the op with its tensors, not a handle
            y = _ops.fused_fake_quantize_direct(x, self._packed_args)
        if key is not None and not observing:
            # Never cached while observing: the next call would see other qparams.
            versions = self._state_versions()
            if versions is not None:
                self._version_cache = (key, y, versions)
        return y

    def __getstate__(self) -> dict[str, Any]:
        # The C++ binding is per process and per set of tensors: a copy (deepcopy,
        # pickling) binds its own on its first call.
        state = super().__getstate__()
        state["_bound_args"] = None
        state["_args_key"] = None
        state["_trace_binding"] = None  # the copy's plan is rebound in __setstate__
        return state

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        result = super()._apply(fn, recurse)
        # State tensors moved (.to(device), .cuda()) are new tensors, which moved the
        # versions on: bind them, so that a model compiled after the move still records
        # the bound op. (The calculator moved first, as a child.)
        self.refresh_trace_plan()
        return result

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # The plan came with the original's handle: bind this copy's own state tensors (its
        # submodules are complete by now, deepcopy and unpickling build them first).
        plan = self._trace_plan
        if plan is not None:
            self._set_trace_plan(plan[0][0])  # type: ignore[index]

    def _state_versions(self) -> tuple[int, ...] | None:
        # The versions of the state tensors in the packed arguments (running range,
        # scale, zero point, minval: positions 2 to 6); None for inference tensors (state
        # created under torch.inference_mode), which keep no version: nothing is cached.
        try:
            return tuple(t._version for t in self._packed_args[2:7])  # type: ignore[union-attr]
        except RuntimeError:
            return None

    def enable_version_cache(self, enabled: bool = True) -> None:
        """Reuse the result for the same tensor version when no gradient is needed and the
        observer is off (eager weights: inference fake-quantizes each weight once)."""
        self._version_cache = ((), None, ()) if enabled else None

    def kernel_state(self) -> list[torch.Tensor]:
        """running_min, running_max, scale, zero_point, minval as the fused op takes them
        (float formats get placeholders for the integer offsets)."""
        calc = self.qparams_calculator
        zero_point = self._unused_zero_point if self.is_float else calc.zero_point
        minval = self._unused_minval if self.is_float else calc.minval
        return [calc.running_min, calc.running_max, calc.scale, zero_point, minval]

    def kernel_format(self) -> tuple[torch.dtype, int, int, bool, bool, bool]:
        """(dtype, quant_min, quant_max, symmetric, use_minval, e8m0) as the fused op takes
        them (quant_min / quant_max 0 for float formats)."""
        calc = self.qparams_calculator
        return (
            self.dtype,
            0 if self.is_float else int(self.quant_min),
            0 if self.is_float else int(self.quant_max),
            bool(calc.symmetric),
            bool(self.use_minval),
            bool(calc.e8m0),
        )

    def _constant_args(self, x_dtype: torch.dtype) -> tuple[object, ...]:
        # The fused op's arguments after block_size: format, method, averaging constant and
        # the pinned range for an input of x_dtype.
        calc = self.qparams_calculator
        lo, hi = calc.effective_float_range(x_dtype)
        return (*self.kernel_format(), self._method, calc.averaging_constant_value, lo, hi)

    def _op_args(
        self, state: Sequence[torch.Tensor], block_size: list[int], x_dtype: torch.dtype
    ) -> tuple[object, ...]:
        # fused_fake_quantize's arguments after x, in schema order, with these state tensors
        # and block size, for an input of x_dtype.
        observer_on = self._observer_off if self._export_mode else self.observer_enabled
        return (
            observer_on,
            self.fake_quant_enabled,
            *state,
            block_size,
            *self._constant_args(x_dtype),
        )

    def _fused_args(self, x: torch.Tensor) -> tuple[object, ...]:
        calc = self.qparams_calculator
        state = self.kernel_state()
        if self._pattern is not None and len(self._pattern) != x.dim():
            # A per-tensor FQ shared by tensors of several ranks (graph mode calls one FQ on
            # both sides of a rank-reducing mean): one-element views of the x's rank.
            if calc.scale.numel() != 1:
                raise ValueError(
                    f"{type(self).__name__} sized for rank-{len(self._pattern)} tensors got a "
                    f"rank-{x.dim()} tensor; only a per-tensor fake-quantizer can take both"
                )
            ones = [1] * x.dim()
            state = [t.view(ones) for t in state]
            block_size = list(x.shape)
        else:
            block_size = self._block_size(x.shape)
        return self._op_args(state, block_size, x.dtype)

    def _trace_plan_key(self, x_dtype: torch.dtype) -> tuple[object, ...]:
        return (x_dtype, self._attr_version, self.qparams_calculator._attr_version)

    def _ensure_trace_plan(self, x_dtype: torch.dtype) -> None:
        # A plan for inputs of x_dtype, built anew only when missing or stale, so that the
        # handle (and with it the compiled graphs that hold it) outlives eager calls of
        # other shapes and redundant refreshes.
        plan = self._trace_plan
        if plan is None or plan[0] != self._trace_plan_key(x_dtype):
            self._set_trace_plan(x_dtype)

    def _set_trace_plan(self, x_dtype: torch.dtype) -> None:
        # What _forward_planned needs, as one tuple of literals: (key: (x dtype, own
        # _attr_version, calculator's _attr_version), block pattern, channels_last request,
        # handle). The handle names the fused op's other arguments (switches, state
        # tensors, format and method constants), bound in C++ while _trace_binding holds
        # its owner. Dynamo guards the tuple by value and the two versions, which move on
        # every change that could alter those arguments (StateEpochMixin: attributes set,
        # state tensors replaced), so a stale plan is never used: the compiled model
        # recompiles and reads the attributes instead.
        if self._disabled or self._pattern is None or self._method is None or self.is_stateless:
            self._trace_plan, self._trace_binding = None, None
            return
        # block_size is bound empty: the traced op takes it per call, from x's shape.
        args = self._op_args(self.kernel_state(), [], x_dtype)
        self._trace_binding = _ops.bind_fused_fake_quantize(args)
        self._trace_plan = (
            self._trace_plan_key(x_dtype),
            tuple(self._pattern),
            bool(self._compile_channels_last),
            self._trace_binding[1],
        )

    def refresh_trace_plan(self) -> None:
        """Rebuild the trace plan (what torch.compile reads instead of this module's
        attributes and state) from the current attributes, for the input dtype it was built
        for, when they changed since; nothing without a plan. An eager forward builds one;
        graph mode's prepare calls this last, after the attributes it sets. A current plan
        is kept, with its handle, so that compiled models that hold it stay valid."""
        plan = self._trace_plan
        if plan is not None:
            self._ensure_trace_plan(plan[0][0])  # type: ignore[index]

    def _forward_planned(self, x: torch.Tensor, plan: tuple[Any, ...]) -> torch.Tensor:
        _, pattern, channels_last, handle = plan
        x = _compile_layout(x, channels_last)
        return _ops.fused_fake_quantize_bound_traced(x, handle, _block_size_of(x.shape, pattern))

    def _forward_traceable(self, x: torch.Tensor) -> torch.Tensor:
        # What torch.compile / torch.export trace: no caches, no attribute writes.
        # Export keeps the traced layout.
        x = _compile_layout(x, self._compile_channels_last and not torch.compiler.is_exporting())
        return _ops.fused_fake_quantize_packed(x, self._fused_args(x))

    def _forward_python(self, x: torch.Tensor) -> torch.Tensor:
        calc = self.qparams_calculator
        if self.is_stateless:
            if not bool(self.fake_quant_enabled[0]):
                return x
            with torch.no_grad():
                calc(x)  # leaves this tensor's float32 qparams in calc.scale / ...
        elif bool(self.observer_enabled[0]) and not self._export_mode:
            with torch.no_grad():
                qparams = calc(x)
                if not isinstance(calc, StatefulQParamsCalculatorBase):
                    # A calculator that only implements forward: keep what it returned.
                    calc._store_qparams(qparams)
        if not bool(self.fake_quant_enabled[0]):
            return x
        return self._apply_qparams(x, calc.scale, calc.zero_point, calc.minval)

    def _apply_qparams(
        self,
        x: torch.Tensor,
        scale: torch.Tensor,
        zero_point: torch.Tensor | None,
        minval: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.is_float:
            return _ops.fake_quantize_float(x, scale, self.dtype)
        qmin, qmax = int(self.quant_min), int(self.quant_max)
        if self.use_minval:
            return _ops.fake_quantize_int(x, scale, None, minval, quant_min=qmin, quant_max=qmax)
        return _ops.fake_quantize_int(x, scale, zero_point, quant_min=qmin, quant_max=qmax)


_DefaultFakeQuantizeImpl = FakeQuantize
"""The reference's name of the default implementation."""


@FakeQuantizeImplBase.register("lsq")
class LearnableFakeQuantize(_QuantizerCommon):
    """Fake-quantizer with learnable scale and zero point (LSQ), integer ``zp`` form only.

    ``scale`` and ``zero_point`` are float ``nn.Parameter`` s of the qparam shape,
    initialised from the calculator's qparams on the first forward. While the observer
    is on, each forward re-initialises them from the calculator (switch it off, e.g.
    with a ``QATSchedule``, to let training move them); with fake quantization on the
    forward is ``torch.ops.coreai_opt.fake_quantize_lsq`` (gradients reach the input,
    the scale and the zero point). ``grad_factor`` scales the qparam gradients; the
    default ``None`` uses ``1 / sqrt(elements per scale * quant_max)``. This
    implementation reads its switches on the host, so it is meant for eager training.
    """

    def __init__(self, *args: Any, grad_factor: float | None = None, **kwargs: Any) -> None:
        """Common constructor arguments plus ``grad_factor``."""
        super().__init__(*args, **kwargs)
        if self.is_float or self.use_minval:
            raise ValueError(
                f"fake_quantize_cls='lsq' supports integer dtypes with qformulation='zp'; got "
                f"dtype={self.dtype}, qformulation={self.qformulation.value!r}"
            )
        if self.is_stateless:
            raise ValueError(
                f"fake_quantize_cls='lsq' learns its qparams, so it needs a stateful qparams "
                f"calculator; got {type(self.qparams_calculator).__name__} (allowed: 'static', "
                f"'moving_average', 'global_minmax')"
            )
        self.grad_factor = grad_factor
        self.scale = torch.nn.Parameter(torch.empty(0))
        self.zero_point = torch.nn.Parameter(torch.empty(0))
        self._lsq_initialized = False

    def _size_extra_state(self, qshape: tuple[int, ...]) -> None:
        if tuple(self.scale.shape) != qshape:
            device = self.scale.device
            self.scale.data = torch.ones(qshape, device=device)
            self.zero_point.data = torch.zeros(qshape, device=device)

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
        for name in ("scale", "zero_point"):
            key = prefix + name
            param = getattr(self, name)
            if key in state_dict and param.shape != state_dict[key].shape:
                param.data = torch.empty(state_dict[key].shape, device=param.device)
        if (prefix + "scale") in state_dict:
            self._lsq_initialized = state_dict[prefix + "scale"].numel() > 0
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _observe_into_params(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            scale, zp, _ = self.qparams_calculator(x)
            self.scale.copy_(scale)
            self.zero_point.copy_(zp)
        self._lsq_initialized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize *x* with the learnable qparams (see the class docstring)."""
        if self._disabled:
            return x
        if self._pattern is None and not self._first_observation(x):
            return x
        observe = bool(self.observer_enabled[0]) and not self._export_mode
        if observe or not self._lsq_initialized:
            self._observe_into_params(x)
        if not bool(self.fake_quant_enabled[0]):
            return x
        factor = self.grad_factor
        if factor is None:
            per_scale = max(x.numel() // max(self.scale.numel(), 1), 1)
            factor = 1.0 / math.sqrt(per_scale * max(int(self.quant_max), 1))
        return _ops.fake_quantize_lsq(
            x,
            self.scale,
            self.zero_point,
            quant_min=int(self.quant_min),
            quant_max=int(self.quant_max),
            grad_factor=factor,
        )

    def calculate_qparams(self) -> QParams:
        """``(scale, zero_point, None)`` from the parameters (zero point rounded, int32)."""
        zp = torch.round(self.zero_point.detach().clamp(self.quant_min, self.quant_max))
        return self.scale.detach().clone(), zp.to(torch.int32), None
