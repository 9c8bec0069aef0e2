"""from_dict / from_yaml / to_dict / to_yaml: round trips, errors, safety, fuzzing."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydantic
import pytest
import torch
import torch.nn as nn
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coreai_opt.quantization import ModuleQuantizerConfig, QuantizationSpec, QuantizerConfig
from coreai_opt.quantization.config import ExecutionMode, OpQuantizerConfig, QATSchedule
from coreai_opt.quantization.spec import PerBlockGranularity

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)


def _rich_config() -> QuantizerConfig:
    act = QuantizationSpec(
        dtype="uint8",
        qscheme="asymmetric",
        qformulation="minval",
        float_range=[-1, None],
        qparam_calculator_cls="global_minmax",
    )
    weight = QuantizationSpec(dtype="int4", granularity=PerBlockGranularity(block_size=(1, -1)))
    return QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_type_config={"softmax": None, "add": OpQuantizerConfig(op_output_spec={0: act})},
            op_name_config={r"layer\d+\.linear": OpQuantizerConfig(op_input_spec=None)},
            qat_schedule=QATSchedule(enable_observer=1, enable_fake_quant=2, disable_observer=5),
        ),
        module_type_configs={
            nn.Linear: ModuleQuantizerConfig.presets.mxfp4(),
            nn.Conv2d: None,
            "my.pkg.Block": ModuleQuantizerConfig(
                module_input_spec={0: act}, module_state_spec={"weight": weight}
            ),
        },
        module_name_configs={"head": None, "enc.*": ModuleQuantizerConfig.presets.fp8()},
        preserved_attributes=["config"],
        execution_mode="eager",
    )


@pytest.mark.parametrize(
    "factory",
    [
        QuantizerConfig,
        _rich_config,
        lambda: QuantizerConfig(global_config=None),
        lambda: QuantizerConfig.presets.w8a8(),
        lambda: QuantizerConfig.presets.w4a8().only_for(nn.Linear),
        lambda: QuantizerConfig.presets.mxfp4(execution_mode=ExecutionMode.EAGER),
    ],
)
def test_round_trips(factory, tmp_path: Path) -> None:
    config = factory()
    assert QuantizerConfig.from_dict(config.to_dict()) == config
    text = config.to_yaml()
    assert QuantizerConfig.from_yaml(text) == config
    path = tmp_path / "config.yaml"
    config.to_yaml(path)
    assert QuantizerConfig.from_yaml(path) == config
    assert QuantizerConfig.from_yaml(str(path)) == config
    assert QuantizerConfig.from_yaml(io.StringIO(text)) == config
    assert QuantizerConfig.from_yaml(io.BytesIO(text.encode())) == config
    # Output is plain YAML: the safe loader reads it, no python tags anywhere.
    assert "!!python" not in text
    assert isinstance(yaml.safe_load(text), dict)


def test_to_yaml_writes_names_keys_and_values() -> None:
    text = _rich_config().to_yaml()
    data = yaml.safe_load(text)["quantization_config"]
    linear = data["module_type_configs"]["torch.nn.modules.linear.Linear"]
    weight = linear["op_state_spec"]["weight"]
    assert weight["dtype"] == "float4_e2m1fn_x2"
    assert weight["scale_dtype"] == "float8_e8m0fnu"
    assert weight["qscheme"] == "symmetric"
    assert weight["fake_quantize_cls"] == "default"
    assert weight["granularity"] == {"axis": None, "block_size": 32, "type": "per_block"}
    assert "n_bits" not in weight
    assert data["execution_mode"] == "eager"
    assert data["module_type_configs"]["torch.nn.modules.conv.Conv2d"] is None


def test_to_dict_has_python_objects() -> None:
    dumped = QuantizerConfig().to_dict()["quantization_config"]
    spec = dumped["global_config"]["op_state_spec"]["weight"]
    assert spec["dtype"] is torch.int8
    assert spec["n_bits"] == 8
    assert dumped["global_config"]["op_input_spec"]["*"]["quant_min"] == -128


def test_pt2e_in_yaml_still_works_with_warning() -> None:
    with pytest.warns(DeprecationWarning, match=r"ExecutionMode\('pt2e'\) is deprecated"):
        config = QuantizerConfig.from_yaml("quantization_config:\n  execution_mode: pt2e\n")
    assert config.execution_mode is ExecutionMode.GRAPH


def test_top_level_key_errors() -> None:
    with pytest.raises(
        RuntimeError, match=r"unexpected top-level key 'bogus'.*quantization_config"
    ):
        QuantizerConfig.from_dict({"quantization_config": {}, "bogus": 1})
    with pytest.raises(RuntimeError, match=r"Did not find 'quantization_config'"):
        QuantizerConfig.from_dict({"quantization_spec": {}})
    with pytest.raises(TypeError, match=r"'quantization_config' must be a dict.*NoneType"):
        QuantizerConfig.from_dict({"quantization_config": None})
    with pytest.raises(TypeError, match=r"from_dict expects a dict.*list"):
        QuantizerConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_unknown_config_field_names_it() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"globl_config") as err:
        QuantizerConfig.from_dict({"quantization_config": {"globl_config": None}})
    assert "Extra inputs are not permitted" in str(err.value)


def test_empty_document_warns_and_returns_none() -> None:
    with pytest.warns(UserWarning, match=r"empty"):
        assert QuantizerConfig.from_yaml("# nothing\n") is None


def test_non_mapping_document() -> None:
    with pytest.raises(ValueError, match=r"must be a mapping.*list"):
        QuantizerConfig.from_yaml("- a\n- b\n")
    with pytest.raises(ValueError, match=r"not an existing file"):
        QuantizerConfig.from_yaml("missing_config.yaml")


def test_yaml_syntax_error_is_value_error_with_line() -> None:
    text = "quantization_config:\n  global_config:\n    op_input_spec: [1, 2\n  x: }\n"
    with pytest.raises(ValueError, match=r"line \d+, column \d+"):
        QuantizerConfig.from_yaml(text)


def test_from_yaml_rejects_other_source_types() -> None:
    with pytest.raises(TypeError, match=r"file path.*YAML text.*stream"):
        QuantizerConfig.from_yaml(42)


# -- security ---------------------------------------------------------------------------

_MARKER: list[str] = []


def test_python_object_tags_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    payloads = [
        f"quantization_config: !!python/object/apply:os.system ['touch {target}']\n",
        "quantization_config: !!python/name:os.system\n",
        "quantization_config: !!python/object:collections.OrderedDict {}\n",
        f"quantization_config:\n  execution_mode: !!python/object/apply:builtins.exec "
        f'[\'open("{target}", "w")\']\n',
    ]
    for payload in payloads:
        with pytest.raises(ValueError, match=r"Could not parse YAML"):
            QuantizerConfig.from_yaml(payload)
    assert not target.exists()


def test_module_type_strings_are_never_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import importlib

    def refuse(*args, **kwargs):
        raise AssertionError("config text must not be imported")

    config_text = """
quantization_config:
  module_type_configs:
    os.system: null
    evil_package_that_does_not_exist.Module: null
    "__import__('os').system('true')": null
"""
    monkeypatch.setattr(importlib, "import_module", refuse)
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    config = QuantizerConfig.from_yaml(config_text)
    assert "evil_package_that_does_not_exist.Module" in config.module_type_configs
    assert "os.system" in config.module_type_configs


def test_dtype_strings_are_not_evaluated() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"dtype"):
        QuantizationSpec(dtype="__import__('os')")
    with pytest.raises(pydantic.ValidationError, match=r"dtype"):
        QuantizationSpec(dtype="nn")  # an attribute of torch that is not a dtype


# -- fuzzing ----------------------------------------------------------------------------

_FIELD_NAMES = [
    "global_config",
    "module_type_configs",
    "module_name_configs",
    "execution_mode",
    "preserved_attributes",
    "op_input_spec",
    "op_output_spec",
    "op_state_spec",
    "op_type_config",
    "op_name_config",
    "module_input_spec",
    "module_output_spec",
    "module_state_spec",
    "qat_schedule",
    "dtype",
    "qscheme",
    "qformulation",
    "granularity",
    "type",
    "axis",
    "block_size",
    "float_range",
    "scale_dtype",
    "fake_quantize_cls",
    "qparam_calculator_cls",
    "range_calculator_cls",
    "enable_observer",
    "*",
    "0",
    "weight",
    "torch.nn.modules.linear.Linear",
    "per_block",
    "int4",
    "[",
    "(a",
]
_keys = st.one_of(
    st.sampled_from(_FIELD_NAMES),
    st.text(max_size=8),
    st.integers(-2, 3),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70),
    st.floats(allow_nan=True),
    st.sampled_from(
        [
            *_FIELD_NAMES,
            "graph",
            "pt2e",
            "eager",
            "symmetric",
            "minval",
            "float8_e8m0fnu",
            "float4_e2m1fn",
            "moving_average",
        ]
    ),
    st.text(max_size=10),
)
_nested = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_keys, children, max_size=5),
    ),
    max_leaves=25,
)

_ALLOWED = (ValueError, TypeError, pydantic.ValidationError)


def _call_and_check(fn, *args) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn(*args)
        except _ALLOWED:
            pass
        except RuntimeError as exc:
            assert "top-level key" in str(exc) or "Did not find" in str(exc), exc


@FUZZ
@given(_nested)
def test_fuzz_from_dict_nested(data) -> None:
    _call_and_check(QuantizerConfig.from_dict, {"quantization_config": data})


@FUZZ
@given(st.dictionaries(_keys, _nested, max_size=4))
def test_fuzz_from_dict_top_level(data) -> None:
    _call_and_check(QuantizerConfig.from_dict, data)


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_from_yaml_text(text: str) -> None:
    _call_and_check(QuantizerConfig.from_yaml, "quantization_config:\n  " + text)
    _call_and_check(QuantizerConfig.from_yaml, text)


@FUZZ
@given(st.dictionaries(st.sampled_from(_FIELD_NAMES[14:28]), _nested, max_size=5))
def test_fuzz_quantization_spec(fields) -> None:
    _call_and_check(lambda f: QuantizationSpec(**f), {str(k): v for k, v in fields.items()})
