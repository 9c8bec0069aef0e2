"""QuantizationSpec fields, defaults, derived values and validation rules."""

from __future__ import annotations

import pydantic
import pytest
import torch

from coreai_opt.quantization import QuantizationSpec
from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QParamsCalculatorBase,
    QuantizationFormulation,
    QuantizationScheme,
    default_activation_quantization_spec,
    default_weight_quantization_spec,
)
from coreai_opt.quantization.spec._dtype_table import FORMATS, quant_range
from coreai_opt.quantization.spec.fake_quantize import (
    FakeQuantizeImplBase,
    _DefaultFakeQuantizeImpl,
)
from coreai_opt.quantization.spec.qparams_calculator import (
    GlobalMinMaxQParamsCalculator,
    MovingAverageQParamsCalculator,
    StaticQParamsCalculator,
    _DefaultQParamsCalculator,
)
from coreai_opt.quantization.spec.range_calculator import MinMaxRangeCalculator

ALL_DTYPES = sorted(FORMATS)


def test_defaults() -> None:
    spec = QuantizationSpec()
    assert spec.dtype is torch.int8
    assert spec.qscheme is QuantizationScheme.SYMMETRIC
    assert spec.qformulation is QuantizationFormulation.ZP
    assert spec.granularity == PerTensorGranularity()
    # Keys resolve to the registered classes, as in the reference.
    assert spec.fake_quantize_cls is _DefaultFakeQuantizeImpl
    assert spec.qparam_calculator_cls is _DefaultQParamsCalculator
    assert spec.range_calculator_cls is MinMaxRangeCalculator
    assert spec.float_range == [None, None]
    assert spec.scale_dtype is None
    assert (spec.n_bits, spec.target_dtype, spec.quant_min, spec.quant_max) == (
        8,
        torch.int8,
        -128,
        127,
    )


def test_default_spec_functions() -> None:
    weight = default_weight_quantization_spec()
    assert weight.granularity == PerChannelGranularity(axis=0)
    assert weight.qparam_calculator_cls is StaticQParamsCalculator
    act = default_activation_quantization_spec()
    assert act.granularity == PerTensorGranularity()
    assert act.qparam_calculator_cls is MovingAverageQParamsCalculator


@pytest.mark.parametrize(
    ("dtype", "qscheme", "expected"),
    [
        ("int8", "symmetric", (-128, 127)),
        ("int8", "symmetric_with_clipping", (-127, 127)),
        ("int4", "asymmetric", (-8, 7)),
        ("int4", "symmetric_with_clipping", (-7, 7)),
        ("int2", "symmetric_with_clipping", (-1, 1)),
        ("uint8", "symmetric_with_clipping", (0, 255)),
        ("uint4", "asymmetric", (0, 15)),
        ("uint2", "symmetric", (0, 3)),
        ("float8_e4m3fn", "symmetric", (-448.0, 448.0)),
        ("float8_e5m2", "symmetric", (-57344.0, 57344.0)),
        ("float4_e2m1fn_x2", "symmetric", (-6.0, 6.0)),
    ],
)
def test_quant_ranges(dtype: str, qscheme: str, expected: tuple) -> None:
    spec = QuantizationSpec(dtype=dtype, qscheme=qscheme)
    assert (spec.quant_min, spec.quant_max) == expected
    assert type(spec.quant_min) is type(expected[0])


def test_dtype_table_function() -> None:
    assert quant_range(torch.int8, False) == (-128.0, 127.0)
    assert quant_range("int8", True) == (-127.0, 127.0)
    assert quant_range(torch.uint4, True) == (0.0, 15.0)
    assert quant_range(torch.float8_e5m2, True) == (-57344.0, 57344.0)
    for name in ALL_DTYPES:
        lo, hi = quant_range(name, False)
        assert (isinstance(lo, float) and lo < 0 <= hi) or lo == 0.0
    with pytest.raises(ValueError, match=r"float32.*known formats"):
        quant_range(torch.float32, False)


@pytest.mark.parametrize(
    ("dtype", "n_bits", "target"),
    [
        ("int8", 8, torch.int8),
        ("int4", 4, torch.int8),
        ("uint2", 2, torch.uint8),
        ("uint8", 8, torch.uint8),
        ("float8_e5m2", 8, torch.float8_e5m2),
        ("float4_e2m1fn_x2", 4, torch.float8_e4m3fn),
    ],
)
def test_derived_bits_and_target(dtype: str, n_bits: int, target: torch.dtype) -> None:
    spec = QuantizationSpec(dtype=dtype)
    assert (spec.n_bits, spec.target_dtype) == (n_bits, target)


@pytest.mark.parametrize(
    ("alias", "dtype"),
    [("float4_e2m1fn", torch.float4_e2m1fn_x2), ("float8_e4m3", torch.float8_e4m3fn)],
)
def test_dtype_aliases(alias: str, dtype: torch.dtype) -> None:
    assert QuantizationSpec(dtype=alias).dtype is dtype


def test_scale_dtype_rules() -> None:
    assert QuantizationSpec(dtype="float4_e2m1fn_x2").scale_dtype is torch.float8_e8m0fnu
    assert QuantizationSpec(dtype="float8_e4m3fn").scale_dtype is None
    fp8_mx = QuantizationSpec(dtype="float8_e4m3fn", scale_dtype="float8_e8m0")
    assert fp8_mx.scale_dtype is torch.float8_e8m0fnu


def test_calculator_keys_and_registered_classes() -> None:
    expected = {
        "default": _DefaultQParamsCalculator,
        "static": StaticQParamsCalculator,
        "moving_average": MovingAverageQParamsCalculator,
        "global_minmax": GlobalMinMaxQParamsCalculator,
    }
    for key, klass in expected.items():
        assert QuantizationSpec(qparam_calculator_cls=key).qparam_calculator_cls is klass
        assert QuantizationSpec(qparam_calculator_cls=klass) == QuantizationSpec(
            qparam_calculator_cls=key
        )

    @QParamsCalculatorBase.register("test_only_calc")
    class _Calc(QParamsCalculatorBase):
        def forward(self, x):
            return x, None, None

    try:
        spec = QuantizationSpec(qparam_calculator_cls="test_only_calc")
        assert spec.qparam_calculator_cls is _Calc
        assert QuantizationSpec(qparam_calculator_cls=_Calc) == spec
        assert QuantizationSpec(**spec.model_dump()) == spec
    finally:
        QParamsCalculatorBase.REGISTRY.pop("test_only_calc")


def test_frozen_and_hashable() -> None:
    spec = QuantizationSpec()
    with pytest.raises(pydantic.ValidationError, match=r"frozen"):
        spec.dtype = torch.int4  # type: ignore[misc]
    assert hash(spec) == hash(QuantizationSpec())
    assert len({spec, QuantizationSpec(), QuantizationSpec(dtype="int4")}) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"dtype": "uint4", "qscheme": "asymmetric", "qformulation": "minval"},
        {"dtype": "int2", "qscheme": "symmetric_with_clipping", "float_range": (-1, 2)},
        {"dtype": "float4_e2m1fn_x2", "granularity": {"type": "per_block", "block_size": 32}},
        {"dtype": "float8_e5m2", "granularity": PerChannelGranularity(axis=-1)},
        {"granularity": PerBlockGranularity(block_size=(1, -1, 4))},
        {"qparam_calculator_cls": "global_minmax", "float_range": [None, 3]},
    ],
)
def test_model_dump_round_trip(kwargs: dict) -> None:
    spec = QuantizationSpec(**kwargs)
    dumped = spec.model_dump()
    assert {"n_bits", "target_dtype", "quant_min", "quant_max"} <= set(dumped)
    assert QuantizationSpec(**dumped) == spec
    assert QuantizationSpec.model_validate(dumped) == spec


def test_extra_args_of_subclass() -> None:
    class AveragingSpec(QuantizationSpec):
        averaging_constant: float = 0.1

    spec = AveragingSpec(averaging_constant=0.5)
    assert spec.get_extra_args() == {"averaging_constant": 0.5}
    assert QuantizationSpec().get_extra_args() == {}


def _fails(kwargs: dict, *fragments: str, exc: type[Exception] = pydantic.ValidationError):
    with pytest.raises(exc) as err:
        QuantizationSpec(**kwargs)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bad_dtype_name() -> None:
    _fails({"dtype": "int9"}, "dtype", "'int9'")
    _fails({"dtype": "int3"}, "dtype", "int3", "allowed dtypes", "int8", "float8_e4m3fn")


def test_dtype_not_supported() -> None:
    _fails({"dtype": torch.float32}, "dtype", "float32", "allowed dtypes", "uint2")
    _fails({"dtype": 8}, "dtype", "int", "8")


def test_supported_dtypes_is_read_at_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QuantizationSpec, "SUPPORTED_DTYPES", {torch.int8})
    _fails({"dtype": "int4"}, "dtype", "int4", "allowed dtypes: ['int8']")


def test_bad_qscheme_and_qformulation() -> None:
    _fails({"qscheme": "sym"}, "qscheme", "'sym'", "'symmetric_with_clipping'")
    _fails({"qformulation": "offset"}, "qformulation", "'offset'", "'minval'", "'zp'")


def test_float_dtype_needs_symmetric_and_zp() -> None:
    _fails(
        {"dtype": "float8_e4m3fn", "qscheme": "asymmetric"},
        "qscheme",
        "asymmetric",
        "allowed: 'symmetric'",
    )
    _fails(
        {"dtype": "float8_e5m2", "qscheme": "symmetric_with_clipping"},
        "qscheme",
        "symmetric_with_clipping",
        "'symmetric'",
    )
    _fails(
        {"dtype": "float4_e2m1fn_x2", "qformulation": "minval"},
        "qformulation",
        "minval",
        "allowed: 'zp'",
    )


def test_bad_granularity() -> None:
    _fails({"granularity": "per_tensor"}, "granularity", "'per_tensor'", "per_channel")
    _fails({"granularity": {"axis": 0}}, "granularity", "no 'type'", "per_block")
    _fails({"granularity": {"type": "per_row"}}, "granularity", "per_row", "per_tensor")
    _fails({"granularity": 3}, "granularity", "int", "per_channel")
    _fails({"granularity": {"type": "per_channel", "axis": "0"}}, "granularity.axis", "'0'")


def test_bad_component_keys() -> None:
    _fails({"fake_quantize_cls": "fancy"}, "fake_quantize_cls", "'fancy'", "'default'")
    _fails({"qparam_calculator_cls": "ema"}, "qparam_calculator_cls", "'ema'", "moving_average")
    _fails({"range_calculator_cls": "percentile"}, "range_calculator_cls", "percentile", "minmax")

    class Unregistered(FakeQuantizeImplBase):
        def forward(self, x):
            return x

    _fails(
        {"fake_quantize_cls": Unregistered},
        "fake_quantize_cls",
        "Unregistered",
        "not registered",
        "available keys",
    )
    # 0.3.0: any other value is a ValueError naming the registry and its keys.
    _fails(
        {"fake_quantize_cls": 1.5},
        "fake_quantize_cls",
        "float",
        "FakeQuantizeImplBase registry",
        "'default'",
    )


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ([1.0, 2.0], ["float_range", "min=1.0", "<= 0"]),
        ([-2.0, -1.0], ["float_range", "max=-1.0", ">= 0"]),
        ([0.0, 0.0], ["float_range", "min must be < max"]),
        ([None], ["float_range", "two entries", "[None]"]),
        ("0,1", ["float_range", "two entries", "'0,1'"]),
        ([True, None], ["float_range", "True", "allowed: int, float or None"]),
        (["a", None], ["float_range", "'a'", "allowed: int, float or None"]),
        ([float("-inf"), None], ["float_range", "-inf", "finite"]),
    ],
)
def test_bad_float_range(value: object, fragments: list[str]) -> None:
    _fails({"float_range": value}, *fragments)


def test_float_range_normalised_to_floats() -> None:
    assert QuantizationSpec(float_range=(-1, 4)).float_range == [-1.0, 4.0]


def test_bad_scale_dtype() -> None:
    _fails({"scale_dtype": "float32"}, "scale_dtype", "float32", "float8_e8m0fnu")
    _fails({"scale_dtype": "float8_e8m0fnu"}, "scale_dtype", "int8", "allowed: None")
    _fails({"dtype": "uint4", "scale_dtype": torch.float8_e8m0fnu}, "scale_dtype", "uint4")


def test_unknown_fields_are_named() -> None:
    _fails(
        {"dtyp": "int8", "axis": 0},
        "unknown field(s) ['dtyp', 'axis']",
        "allowed fields",
        "granularity",
    )


def test_inconsistent_derived_keys() -> None:
    dumped = QuantizationSpec(dtype="int4").model_dump()
    for key, bad in [
        ("n_bits", 8),
        ("quant_min", -128),
        ("quant_max", 127.5),
        ("target_dtype", torch.uint8),
        ("target_dtype", "nonsense"),
    ]:
        _fails({**dumped, key: bad}, f"derived field {key}=", "does not match")
    assert QuantizationSpec(dtype="int4", _quant_range=(-8, 7)).quant_min == -8
    _fails({"_quant_range": [-8, 8], "dtype": "int4"}, "_quant_range")
