"""``QuantizationComponentFactory``: builds calculators and fake-quantizers from a spec."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, cast

from coreai_opt.config.spec import CompressionComponentFactoryBase, CompressionTargetTensor
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase
from coreai_opt.quantization.spec.qparams_calculator import QParamsCalculatorBase
from coreai_opt.quantization.spec.range_calculator import RangeCalculatorBase
from coreai_opt.quantization.spec.spec import QuantizationSpec

__all__ = ["QuantizationComponentFactory"]

_DEFAULT_QPARAMS_BY_TARGET = {
    CompressionTargetTensor.WEIGHT: "static",
    CompressionTargetTensor.LUT: "static",
    CompressionTargetTensor.ACTIVATION: "moving_average",
}


def _lookup(root: type, value: type | str, field: str) -> type:
    if isinstance(value, type):
        return value
    registry = root.REGISTRY  # type: ignore[attr-defined]
    if value not in registry:
        raise ValueError(
            f"{field}={value!r}: no class is registered under this key in "
            f"{root.__name__}; available keys: {list(registry)}"
        )
    return cast(type, registry[value])


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


def _target(value: CompressionTargetTensor | str) -> CompressionTargetTensor:
    try:
        return CompressionTargetTensor(value)
    except ValueError:
        raise ValueError(
            f"target={value!r} is not a compression target; allowed: "
            f"{[t.value for t in CompressionTargetTensor]}"
        ) from None


class QuantizationComponentFactory(CompressionComponentFactoryBase):
    """Builds range calculators, qparam calculators and fake-quantizers for a spec.

    ``qparam_calculator_cls="default"`` resolves to ``"static"`` for weights and LUTs
    and to ``"moving_average"`` for activations. Extra fields of a
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
        for klass in (
            cls._range_cls(spec),
            cls._qparams_cls(spec, target),
            _lookup(FakeQuantizeImplBase, spec.fake_quantize_cls, "fake_quantize_cls"),
        ):
            used |= set(_accepted(klass, extra))
        unused = sorted(set(extra) - used)
        if unused:
            raise ValueError(
                f"{type(spec).__name__} has extra field(s) {unused} that no component "
                f"constructor accepts (range calculator, qparam calculator, fake-quantizer)"
            )

    @classmethod
    def _range_cls(cls, spec: QuantizationSpec) -> type:
        return _lookup(RangeCalculatorBase, spec.range_calculator_cls, "range_calculator_cls")

    @classmethod
    def _qparams_cls(cls, spec: QuantizationSpec, target: CompressionTargetTensor) -> type:
        value = spec.qparam_calculator_cls
        if value == "default":
            value = _DEFAULT_QPARAMS_BY_TARGET[target]
        return _lookup(QParamsCalculatorBase, value, "qparam_calculator_cls")

    @classmethod
    def create_range_calculator(cls, spec: QuantizationSpec) -> RangeCalculatorBase:
        """The range calculator of *spec* (with its granularity)."""
        klass = cls._range_cls(spec)
        return cast(
            RangeCalculatorBase,
            klass(granularity=spec.granularity, **_accepted(klass, spec.get_extra_args())),
        )

    @classmethod
    def create_qparams_calculator(
        cls, spec: QuantizationSpec, target: CompressionTargetTensor | str
    ) -> QParamsCalculatorBase:
        """The qparam calculator of *spec* for a *target* tensor (with a fresh range calculator)."""
        target = _target(target)
        klass = cls._qparams_cls(spec, target)
        return cast(
            QParamsCalculatorBase,
            klass(
                dtype=spec.dtype,
                qscheme=spec.qscheme,
                granularity=spec.granularity,
                target_dtype=spec.target_dtype,
                quant_min=spec.quant_min,
                quant_max=spec.quant_max,
                range_calculator=cls.create_range_calculator(spec),
                float_range=tuple(spec.float_range),
                scale_dtype=spec.scale_dtype,
                n_bits=spec.n_bits,
                **_accepted(klass, spec.get_extra_args()),
            ),
        )

    @classmethod
    def create_fake_quantizer(
        cls, spec: QuantizationSpec, target: CompressionTargetTensor | str
    ) -> FakeQuantizeImplBase:
        """A fake-quantizer for *spec* applied to a *target* tensor."""
        return cls.create_fake_quantizer_partial(spec, target)()

    @classmethod
    def create_fake_quantizer_partial(
        cls, spec: QuantizationSpec, target: CompressionTargetTensor | str
    ) -> Callable[[], FakeQuantizeImplBase]:
        """A zero-argument constructor; each call builds a fake-quantizer with fresh calculators."""
        target = _target(target)
        cls._check_extra(spec, target)
        klass = _lookup(FakeQuantizeImplBase, spec.fake_quantize_cls, "fake_quantize_cls")
        extra = _accepted(klass, spec.get_extra_args())

        def build() -> FakeQuantizeImplBase:
            return cast(
                FakeQuantizeImplBase,
                klass(
                    dtype=spec.dtype,
                    qscheme=spec.qscheme,
                    qformulation=spec.qformulation,
                    granularity=spec.granularity,
                    target_dtype=spec.target_dtype,
                    quant_min=spec.quant_min,
                    quant_max=spec.quant_max,
                    qparams_calculator=cls.create_qparams_calculator(spec, target),
                    quantization_target=target,
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
