"""``QuantizationComponentFactory``: builds calculators and fake-quantizers from a spec."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, cast

from coreai_opt.config.spec import CompressionComponentFactoryBase, CompressionTargetTensor
from coreai_opt.quantization.spec._registry import (
    FAKE_QUANTIZE_REGISTRY,
    QPARAMS_CALCULATOR_REGISTRY,
    RANGE_CALCULATOR_REGISTRY,
)
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase
from coreai_opt.quantization.spec.qparams_calculator import QParamsCalculatorBase
from coreai_opt.quantization.spec.range_calculator import RangeCalculatorBase
from coreai_opt.quantization.spec.spec import QuantizationSpec

__all__ = ["QuantizationComponentFactory"]

_WEIGHT = CompressionTargetTensor.WEIGHT
_DEFAULT_QPARAMS_BY_TARGET = {
    CompressionTargetTensor.WEIGHT: "static",
    CompressionTargetTensor.LUT: "static",
    CompressionTargetTensor.ACTIVATION: "moving_average",
}


def _fq_cls(spec: QuantizationSpec) -> type:
    return FAKE_QUANTIZE_REGISTRY.resolve(spec.fake_quantize_cls, "fake_quantize_cls")


def _accepted(klass: type, extra: dict[str, Any]) -> dict[str, Any]:
    """The entries of *extra* that *klass*'s constructor can take.

    Names are collected along the constructor chain while each ``__init__`` forwards
    ``**kwargs`` to its base. A user class (outside coreai_opt) whose own constructor
    takes ``**kwargs`` receives every entry.
    """
    names: set[str] = set()
    first = True
    for base in klass.__mro__:
        init = base.__dict__.get("__init__")
        if init is None or base is object:
            continue
        params = list(inspect.signature(init).parameters.values())
        open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        if first and open_kwargs and not base.__module__.startswith("coreai_opt."):
            return dict(extra)
        first = False
        names |= {
            p.name
            for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        if not open_kwargs:
            break
    return {k: v for k, v in extra.items() if k in names}


def _target(
    value: CompressionTargetTensor | str | None, keyword: CompressionTargetTensor | str | None
) -> CompressionTargetTensor:
    """The target given positionally (*value*) or as ``quantization_target=`` (*keyword*)."""
    if value is not None and keyword is not None:
        raise TypeError(
            "give the quantization target once: either positionally or as "
            "quantization_target=, not both"
        )
    given = value if value is not None else keyword
    if given is None:
        raise TypeError(
            f"a quantization target is required; allowed: "
            f"{CompressionTargetTensor.allowed_values()}"
        )
    try:
        return CompressionTargetTensor(given)
    except ValueError:
        raise ValueError(
            f"quantization_target={given!r} is not a compression target; allowed: "
            f"{CompressionTargetTensor.allowed_values()}"
        ) from None


class QuantizationComponentFactory(CompressionComponentFactoryBase):
    """Builds range calculators, qparam calculators and fake-quantizers for a spec.

    ``qparam_calculator_cls="default"`` resolves to ``"static"`` for weights and LUTs
    and to ``"moving_average"`` for activations; ``"dynamic"`` is refused for weights
    and LUTs. The quantization target is the second argument of the ``create_*``
    methods, positional or as ``quantization_target=``. Extra fields of a
    ``QuantizationSpec`` subclass (``spec.get_extra_args()``) are passed to every
    component constructor that names them (or takes ``**kwargs`` all the way down); an
    extra field that no constructor accepts is an error rather than silently dropped.
    """

    @classmethod
    def _check_extra(cls, spec: QuantizationSpec, target: CompressionTargetTensor) -> None:
        extra = spec.get_extra_args()
        if not extra:
            return
        used: set[str] = set()
        for klass in (cls._range_cls(spec), cls._qparams_cls(spec, target), _fq_cls(spec)):
            used |= set(_accepted(klass, extra))
        unused = sorted(set(extra) - used)
        if unused:
            raise ValueError(
                f"{type(spec).__name__} has extra field(s) {unused} that no component "
                f"constructor accepts (range calculator, qparam calculator, fake-quantizer)"
            )

    @classmethod
    def _range_cls(cls, spec: QuantizationSpec) -> type:
        return RANGE_CALCULATOR_REGISTRY.resolve(spec.range_calculator_cls, "range_calculator_cls")

    @classmethod
    def _qparams_cls(cls, spec: QuantizationSpec, target: CompressionTargetTensor) -> type:
        klass = QPARAMS_CALCULATOR_REGISTRY.resolve(
            spec.qparam_calculator_cls, "qparam_calculator_cls"
        )
        key = klass.__dict__.get("__registry_key__")
        if key == "default":
            klass = QPARAMS_CALCULATOR_REGISTRY.resolve(
                _DEFAULT_QPARAMS_BY_TARGET[target], "qparam_calculator_cls"
            )
        elif key == "dynamic" and target is not CompressionTargetTensor.ACTIVATION:
            raise ValueError(
                f"qparam_calculator_cls='dynamic' quantizes activations only; got "
                f"quantization_target={target.value!r} (for weights and LUTs use 'static', "
                f"'moving_average', 'global_minmax' or 'default')"
            )
        return klass

    @classmethod
    def create_range_calculator(
        cls,
        spec: QuantizationSpec,
        quantization_target: CompressionTargetTensor | str = _WEIGHT,
    ) -> RangeCalculatorBase:
        """The range calculator of *spec* (with its granularity) for *quantization_target*."""
        target = _target(quantization_target, None)
        klass = cls._range_cls(spec)
        kwargs = _accepted(klass, {**spec.get_extra_args(), "quantization_target": target})
        calculator = cast(RangeCalculatorBase, klass(granularity=spec.granularity, **kwargs))
        # A range calculator written for 0.2.0 takes no target: set it afterwards.
        calculator.quantization_target = target
        return calculator

    @classmethod
    def create_qparams_calculator(
        cls,
        spec: QuantizationSpec,
        target: CompressionTargetTensor | str | None = None,
        *,
        quantization_target: CompressionTargetTensor | str | None = None,
    ) -> QParamsCalculatorBase:
        """The qparam calculator of *spec* for a target tensor (with a fresh range calculator)."""
        resolved = _target(target, quantization_target)
        klass = cls._qparams_cls(spec, resolved)
        return cast(
            QParamsCalculatorBase,
            klass(
                dtype=spec.dtype,
                qscheme=spec.qscheme,
                granularity=spec.granularity,
                target_dtype=spec.target_dtype,
                quant_min=spec.quant_min,
                quant_max=spec.quant_max,
                range_calculator=cls.create_range_calculator(spec, resolved),
                float_range=tuple(spec.float_range),
                scale_dtype=spec.scale_dtype,
                n_bits=spec.n_bits,
                quantization_target=resolved,
                **_accepted(klass, spec.get_extra_args()),
            ),
        )

    @classmethod
    def create_fake_quantizer(
        cls,
        spec: QuantizationSpec,
        target: CompressionTargetTensor | str | None = None,
        *,
        quantization_target: CompressionTargetTensor | str | None = None,
    ) -> FakeQuantizeImplBase:
        """A fake-quantizer for *spec* applied to a target tensor."""
        return cls.create_fake_quantizer_partial(
            spec, target, quantization_target=quantization_target
        )()

    @classmethod
    def create_fake_quantizer_partial(
        cls,
        spec: QuantizationSpec,
        target: CompressionTargetTensor | str | None = None,
        *,
        quantization_target: CompressionTargetTensor | str | None = None,
    ) -> Callable[[], FakeQuantizeImplBase]:
        """A zero-argument constructor; each call builds a fake-quantizer with fresh calculators."""
        resolved = _target(target, quantization_target)
        cls._check_extra(spec, resolved)
        cls._qparams_cls(spec, resolved)  # refuse a bad target/calculator pair now
        klass = _fq_cls(spec)
        extra = _accepted(klass, spec.get_extra_args())

        def build() -> FakeQuantizeImplBase:
            return cast(
                FakeQuantizeImplBase,
                klass(
                    dtype=spec.dtype,
                    qformulation=spec.qformulation,
                    granularity=spec.granularity,
                    target_dtype=spec.target_dtype,
                    quant_min=spec.quant_min,
                    quant_max=spec.quant_max,
                    qparams_calculator=cls.create_qparams_calculator(spec, resolved),
                    n_bits=spec.n_bits,
                    **extra,
                ),
            )

        return build

    @classmethod
    def construct(
        cls, spec: QuantizationSpec | None, target: CompressionTargetTensor | str
    ) -> FakeQuantizeImplBase | None:
        """:meth:`create_fake_quantizer`, or None for a None spec."""
        return None if spec is None else cls.create_fake_quantizer(spec, target)

    @classmethod
    def construct_partial(
        cls, spec: QuantizationSpec | None, target: CompressionTargetTensor | str
    ) -> Callable[[], FakeQuantizeImplBase] | None:
        """:meth:`create_fake_quantizer_partial`, or None for a None spec."""
        return None if spec is None else cls.create_fake_quantizer_partial(spec, target)
