"""``QuantizationSpec``: how one tensor is quantized (pure, frozen data).

This module imports no ``nn.Module`` implementation. The component fields name their
classes through the registries of :mod:`._registry`; a built-in key (``"default"``,
``"static"``, ``"minmax"``, ...) loads the module that registers it the first time a
spec uses it, and the field then holds the registered class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import (
    Field,
    SerializationInfo,
    ValidationInfo,
    computed_field,
    field_serializer,
    field_validator,
    model_validator,
)

from coreai_opt.config.spec.base import CompressionSpec, CompressionType
from coreai_opt.quantization.spec._dtype_table import format_info, quant_range
from coreai_opt.quantization.spec._registry import (
    FAKE_QUANTIZE_REGISTRY,
    QPARAMS_CALCULATOR_REGISTRY,
    RANGE_CALCULATOR_REGISTRY,
    ClassRegistry,
)
from coreai_opt.quantization.spec.granularity import (
    PerChannelGranularity,
    PerTensorGranularity,
    QuantizationGranularity,
)
from coreai_opt.quantization.spec.qformulation import QuantizationFormulation
from coreai_opt.quantization.spec.qscheme import QuantizationScheme

__all__ = [
    "QuantizationSpec",
    "default_activation_quantization_spec",
    "default_weight_quantization_spec",
]

_DTYPE_ALIASES: dict[str, str] = {
    "float4_e2m1fn": "float4_e2m1fn_x2",
    "float8_e4m3": "float8_e4m3fn",
    "float8_e8m0": "float8_e8m0fnu",
}
_E8M0 = torch.float8_e8m0fnu
_DERIVED_FIELDS = ("n_bits", "target_dtype", "quant_min", "quant_max", "_quant_range")
_COMPONENT_REGISTRIES: dict[str, ClassRegistry] = {
    "fake_quantize_cls": FAKE_QUANTIZE_REGISTRY,
    "qparam_calculator_cls": QPARAMS_CALCULATOR_REGISTRY,
    "range_calculator_cls": RANGE_CALCULATOR_REGISTRY,
}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(value: object, field: str) -> torch.dtype:
    """Resolve a dtype given as ``torch.dtype`` or as its name (aliases allowed).

    Names are looked up among torch's dtype attributes only; nothing is imported or
    evaluated. Unknown names raise ``ValueError``.
    """
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        name = value.strip().removeprefix("torch.")
        name = _DTYPE_ALIASES.get(name, name)
        candidate = getattr(torch, name, None) if name.isidentifier() else None
        if isinstance(candidate, torch.dtype):
            return candidate
        raise ValueError(f"{field}: unsupported dtype {value!r} (not a torch dtype name)")
    raise ValueError(
        f"{field} must be a torch.dtype or a dtype name (str), got {type(value).__name__}: "
        f"{value!r}"[:300]
    )


class QuantizationSpec(CompressionSpec):
    """How one tensor is quantized: format, scheme, granularity and components.

    Fields (all optional):

    * ``dtype`` (default ``torch.int8``): one of ``SUPPORTED_DTYPES`` — int8, int4,
      int2, uint8, uint4, uint2, float8_e4m3fn, float8_e5m2, float4_e2m1fn_x2. Names
      are accepted (``"int4"``), plus the aliases ``float4_e2m1fn``, ``float8_e4m3``.
    * ``qscheme`` (``symmetric``): ``symmetric`` / ``asymmetric`` /
      ``symmetric_with_clipping``; float dtypes need ``symmetric``.
    * ``qformulation`` (``zp``): ``zp`` or ``minval``; float dtypes need ``zp``.
    * ``granularity`` (per-tensor): a granularity object or ``{"type": key, ...}``.
    * ``fake_quantize_cls`` (``"default"``), ``qparam_calculator_cls``
      (``"default"``: static for weights, moving average for activations; also
      ``"static"``, ``"moving_average"``, ``"global_minmax"``, ``"dynamic"``),
      ``range_calculator_cls`` (``"minmax"``): registry keys or registered classes; the
      field holds the registered class (a key is looked up when the spec is built).
      ``"dynamic"`` refuses ``symmetric_with_clipping`` and a pinned ``float_range``.
    * ``float_range`` (``[None, None]``): fixed ``[min, max]`` replacing the observed
      range at either end; ``min <= 0 <= max`` and ``min < max`` when both are set.
    * ``scale_dtype`` (None): None or ``float8_e8m0fnu`` (power-of-two MX scales);
      integer dtypes need None, float4 defaults to ``float8_e8m0fnu``.

    Derived (read-only, in ``model_dump()``): ``n_bits``, ``target_dtype``,
    ``quant_min``, ``quant_max``. Unknown keyword arguments are an error naming them
    (the reference silently dropped them); the derived keys of a ``model_dump()`` are
    accepted and must match, so ``QuantizationSpec(**spec.model_dump())`` round-trips.
    Subclasses may add fields; :meth:`get_extra_args` returns them.
    """

    SUPPORTED_DTYPES: ClassVar[set[torch.dtype]] = {
        torch.int8,
        torch.int4,
        torch.int2,
        torch.uint8,
        torch.uint4,
        torch.uint2,
        torch.float8_e4m3fn,
        torch.float8_e5m2,
        torch.float4_e2m1fn_x2,
    }

    dtype: torch.dtype = torch.int8
    qscheme: QuantizationScheme = QuantizationScheme.SYMMETRIC
    qformulation: QuantizationFormulation = QuantizationFormulation.ZP
    granularity: QuantizationGranularity = Field(default_factory=PerTensorGranularity)
    fake_quantize_cls: type = Field(default="default", validate_default=True)
    qparam_calculator_cls: type = Field(default="default", validate_default=True)
    range_calculator_cls: type = Field(default="minmax", validate_default=True)
    float_range: list[float | None] = Field(default_factory=lambda: [None, None])
    scale_dtype: torch.dtype | None = None

    @classmethod
    def get_compression_type(cls) -> CompressionType:
        """Quantization."""
        return CompressionType.QUANTIZATION

    # -- unknown and derived keys ---------------------------------------------------

    @model_validator(mode="wrap")
    @classmethod
    def _unknown_and_derived_keys(cls, data: Any, handler: Any) -> Any:
        derived: dict[str, Any] = {}
        if isinstance(data, Mapping):
            data = dict(data)
            for key in _DERIVED_FIELDS:
                if key in data:
                    derived[key] = data.pop(key)
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                raise ValueError(
                    f"QuantizationSpec got unknown field(s) {unknown}; allowed fields: "
                    f"{list(cls.model_fields)} (derived, read-only: {list(_DERIVED_FIELDS[:4])})"
                )
        spec = handler(data)
        for key, given in derived.items():
            spec._check_derived(key, given)
        return spec

    def _check_derived(self, key: str, given: Any) -> None:
        if key == "_quant_range":
            expected: Any = (self.quant_min, self.quant_max)
            ok = isinstance(given, (list, tuple)) and len(given) == 2
            ok = ok and all(_num_equal(g, e) for g, e in zip(given, expected, strict=False))
        elif key == "target_dtype":
            expected = self.target_dtype
            try:
                ok = dtype_from_name(given, key) == expected
            except ValueError:
                ok = False
        else:
            expected = getattr(self, key)
            ok = _num_equal(given, expected)
        if not ok:
            raise ValueError(
                f"QuantizationSpec: derived field {key}={given!r} does not match the value "
                f"implied by the other fields ({expected!r}); drop it or make it consistent"
            )

    # -- field validators -------------------------------------------------------------

    @field_validator("dtype", mode="before")
    @classmethod
    def _validate_dtype(cls, value: Any) -> torch.dtype:
        dtype = dtype_from_name(value, "dtype")
        if dtype not in cls.SUPPORTED_DTYPES:
            allowed = sorted(_dtype_name(d) for d in cls.SUPPORTED_DTYPES)
            raise ValueError(f"dtype: unsupported dtype {dtype}; allowed dtypes: {allowed}")
        return dtype

    @field_validator("scale_dtype", mode="before")
    @classmethod
    def _validate_scale_dtype(cls, value: Any) -> torch.dtype | None:
        if value is None:
            return None
        dtype = dtype_from_name(value, "scale_dtype")
        if dtype != _E8M0:
            raise ValueError(
                f"scale_dtype: unsupported value {dtype}; allowed: None (float32 scales) or "
                f"float8_e8m0fnu"
            )
        return dtype

    @field_validator("granularity", mode="before")
    @classmethod
    def _validate_granularity(cls, value: Any) -> Any:
        if isinstance(value, QuantizationGranularity):
            return value
        if isinstance(value, Mapping):
            return QuantizationGranularity.from_dict(value)
        allowed = QuantizationGranularity.available_keys()
        if isinstance(value, str):
            raise ValueError(
                f"granularity: got the string {value!r}; write a dict such as "
                f"{{'type': {value!r}}} or pass a granularity object (types: {allowed})"
            )
        raise ValueError(
            f"granularity must be a QuantizationGranularity or a {{'type': ...}} dict, got "
            f"{type(value).__name__}: {value!r}; allowed types: {allowed}"[:400]
        )

    @field_serializer("granularity")
    def _dump_granularity(self, value: QuantizationGranularity, info: SerializationInfo) -> Any:
        # Dump with the concrete class's fields (and its "type" key), not the base's.
        return value.model_dump(mode=info.mode)

    @field_validator(*_COMPONENT_REGISTRIES, mode="before")
    @classmethod
    def _resolve_component(cls, value: Any, info: ValidationInfo) -> type:
        field = info.field_name
        assert field is not None
        return _COMPONENT_REGISTRIES[field].resolve(value, field)

    @field_serializer("dtype", "scale_dtype", "target_dtype")
    def _dump_dtype(self, value: torch.dtype | None, info: SerializationInfo) -> Any:
        # Python mode keeps torch dtypes; JSON mode writes their names ("int8").
        if info.mode == "json" and value is not None:
            return _dtype_name(value)
        return value

    @field_serializer(*_COMPONENT_REGISTRIES)
    def _dump_component(self, value: type, info: SerializationInfo) -> Any:
        # Python mode keeps the class (as the reference); JSON mode writes its key.
        if info.mode == "json":
            return value.__dict__.get("__registry_key__", value.__qualname__)
        return value

    @field_validator("float_range", mode="before")
    @classmethod
    def _validate_float_range(cls, value: Any) -> list[float | None]:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(
                f"float_range must be a list of two entries [min, max] (each a number or "
                f"None), got {value!r}"[:300]
            )
        out: list[float | None] = []
        for name, entry in zip(("min", "max"), value, strict=False):
            if entry is None:
                out.append(None)
                continue
            if isinstance(entry, bool) or not isinstance(entry, (int, float)):
                raise ValueError(
                    f"float_range {name} entry {entry!r} has type {type(entry).__name__}; "
                    f"allowed: int, float or None"
                )
            as_float = float(entry)
            if not math.isfinite(as_float):
                raise ValueError(f"float_range {name} entry {entry!r} must be finite")
            out.append(as_float)
        lo, hi = out
        if lo is not None and lo > 0:
            raise ValueError(f"float_range min={lo} must be <= 0 (the range must include 0)")
        if hi is not None and hi < 0:
            raise ValueError(f"float_range max={hi} must be >= 0 (the range must include 0)")
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"float_range {value!r}: min must be < max")
        return out

    @model_validator(mode="after")
    def _cross_field_rules(self) -> QuantizationSpec:
        info = format_info(self.dtype)
        name = _dtype_name(self.dtype)
        if info.is_float:
            if self.qscheme is not QuantizationScheme.SYMMETRIC:
                raise ValueError(
                    f"qscheme={self.qscheme.value!r} is not supported with float dtype {name}; "
                    f"allowed: 'symmetric'"
                )
            if self.qformulation is not QuantizationFormulation.ZP:
                raise ValueError(
                    f"qformulation={self.qformulation.value!r} is not supported with float "
                    f"dtype {name}; allowed: 'zp'"
                )
            if name == "float4_e2m1fn_x2" and self.scale_dtype is None:
                object.__setattr__(self, "scale_dtype", _E8M0)
        elif self.scale_dtype is not None:
            raise ValueError(
                f"scale_dtype={_dtype_name(self.scale_dtype)} is not supported with integer "
                f"dtype {name}; allowed: None"
            )
        # Rules a calculator sets on the spec (e.g. "dynamic": no pinned float_range).
        check = getattr(self.qparam_calculator_cls, "validate_spec", None)
        if callable(check):
            check(self)
        return self

    # -- derived values ---------------------------------------------------------------

    @computed_field(repr=False)  # type: ignore[prop-decorator]
    @property
    def n_bits(self) -> int:
        """Bits per quantized value."""
        return self.get_n_bits_from_dtype(self.dtype)

    @computed_field(repr=False)  # type: ignore[prop-decorator]
    @property
    def target_dtype(self) -> torch.dtype:
        """dtype holding one unpacked code (int8/uint8 for ints, e4m3 for float4)."""
        return self.get_target_dtype(self.dtype)

    @computed_field(repr=False)  # type: ignore[prop-decorator]
    @property
    def quant_min(self) -> int | float:
        """Smallest code (int for integer dtypes, float for float dtypes)."""
        return self.get_quant_range(self.dtype, self.qscheme)[0]

    @computed_field(repr=False)  # type: ignore[prop-decorator]
    @property
    def quant_max(self) -> int | float:
        """Largest code (int for integer dtypes, float for float dtypes)."""
        return self.get_quant_range(self.dtype, self.qscheme)[1]

    @property
    def is_float(self) -> bool:
        """True for the float8/float4 formats."""
        return format_info(self.dtype).is_float

    @classmethod
    def get_n_bits_from_dtype(cls, dtype: torch.dtype | str) -> int:
        """Bits per value of a quantization *dtype* (a dtype or its name, aliases allowed).

        Integer dtypes give their width (``int1`` → 1, ``uint4`` → 4, ``int16`` → 16),
        float8 formats 8 and float4 4.
        """
        return format_info(dtype_from_name(dtype, "dtype")).n_bits

    @classmethod
    def get_target_dtype(cls, dtype: torch.dtype | str) -> torch.dtype:
        """Storage dtype of one unpacked code of *dtype*.

        Integers up to 8 bits → int8 / uint8, wider integers → themselves, float4 →
        float8_e4m3fn, float8 formats → themselves.
        """
        return getattr(torch, format_info(dtype_from_name(dtype, "dtype")).storage)

    @classmethod
    def get_quant_range(
        cls, dtype: torch.dtype | str, qscheme: QuantizationScheme | str
    ) -> tuple[int, int] | tuple[float, float]:
        """``(quant_min, quant_max)`` for *dtype* under *qscheme*."""
        resolved = dtype_from_name(dtype, "dtype")
        narrow = QuantizationScheme(qscheme) is QuantizationScheme.SYMMETRIC_WITH_CLIPPING
        lo, hi = quant_range(resolved, narrow)
        if format_info(resolved).is_float:
            return lo, hi
        return int(lo), int(hi)

    def get_extra_args(self) -> dict[str, Any]:
        """Fields a subclass adds beyond QuantizationSpec's (forwarded to components)."""
        return {
            name: getattr(self, name)
            for name in type(self).model_fields
            if name not in QuantizationSpec.model_fields
        }

    def __hash__(self) -> int:
        """Hash of the core fields (consistent with equality)."""
        return hash(
            (
                type(self),
                self.dtype,
                self.qscheme,
                self.qformulation,
                self.granularity,
                self.fake_quantize_cls,
                self.qparam_calculator_cls,
                self.range_calculator_cls,
                tuple(self.float_range),
                self.scale_dtype,
            )
        )


def _num_equal(given: Any, expected: Any) -> bool:
    if isinstance(given, bool) or not isinstance(given, (int, float)):
        return False
    return float(given) == float(expected)


def default_weight_quantization_spec() -> QuantizationSpec:
    """int8 symmetric, per-channel on axis 0, static qparams, min/max range."""
    return QuantizationSpec(
        dtype=torch.int8,
        qscheme=QuantizationScheme.SYMMETRIC,
        granularity=PerChannelGranularity(axis=0),
        fake_quantize_cls="default",
        qparam_calculator_cls="static",
        range_calculator_cls="minmax",
    )


def default_activation_quantization_spec() -> QuantizationSpec:
    """int8 symmetric, per-tensor, moving-average qparams, min/max range."""
    return QuantizationSpec(
        dtype=torch.int8,
        qscheme=QuantizationScheme.SYMMETRIC,
        granularity=PerTensorGranularity(),
        fake_quantize_cls="default",
        qparam_calculator_cls="moving_average",
        range_calculator_cls="minmax",
    )
