"""KVCacheQuantConfig and QuantizerConfig.kv_cache_quant_configs: validation, warning, I/O."""

from __future__ import annotations

import warnings

import pydantic
import pytest
import torch

import coreai_opt.quantization as quantization
from coreai_opt.quantization import config as config_pkg
from coreai_opt.quantization.config import (
    ExecutionMode,
    KVCacheQuantConfig,
    ModuleQuantizerConfig,
    OpQuantizerConfig,
    QuantizerConfig,
)
from coreai_opt.quantization.spec import (
    PerChannelGranularity,
    QuantizationSpec,
    default_activation_quantization_spec,
)

INT8 = QuantizationSpec(dtype=torch.int8)
UINT4_ASYM = QuantizationSpec(
    dtype=torch.uint4, qscheme="asymmetric", granularity=PerChannelGranularity(axis=1)
)


def kv(index: int | str = 2, spec: QuantizationSpec | None = INT8) -> KVCacheQuantConfig:
    """A valid KV-cache config for input *index*."""
    return KVCacheQuantConfig(
        op_quantizer_config=OpQuantizerConfig(
            op_input_spec={index: spec}, op_output_spec=None, op_state_spec=None
        )
    )


def test_exported_from_both_packages() -> None:
    assert quantization.KVCacheQuantConfig is KVCacheQuantConfig
    assert "KVCacheQuantConfig" in quantization.__all__
    assert "KVCacheQuantConfig" in config_pkg.__all__


def test_valid_config_and_its_entry() -> None:
    cfg = kv(3, UINT4_ASYM)
    assert cfg.input_entry() == (3, UINT4_ASYM)
    assert cfg.op_quantizer_config.op_output_spec == {"*": None}
    assert cfg.op_quantizer_config.op_state_spec == {"*": None}
    # a digit-string key is an index, as in every spec dict
    assert kv("0").input_entry() == (0, INT8)
    # the dict form works as well
    from_dict = KVCacheQuantConfig(
        op_quantizer_config={
            "op_input_spec": {1: {"dtype": "int8"}},
            "op_output_spec": None,
            "op_state_spec": None,
        }
    )
    assert from_dict.input_entry() == (1, INT8)


@pytest.mark.parametrize(
    ("input_spec", "match"),
    [
        ({}, "exactly one key.*got 0 keys"),
        ({0: INT8, 1: INT8}, "exactly one key.*got 2 keys"),
        ({"*": INT8}, r"key '\*' is not allowed.*non-negative int"),
        ({"k_cache": INT8}, "key 'k_cache' is not allowed.*non-negative int"),
        ({1: None}, r"op_input_spec\[1\] is None.*needs a QuantizationSpec"),
        ({-1: INT8}, "negative"),
    ],
)
def test_input_spec_must_be_one_int_key_with_a_spec(input_spec: dict, match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        KVCacheQuantConfig(
            op_quantizer_config=OpQuantizerConfig(
                op_input_spec=input_spec, op_output_spec=None, op_state_spec=None
            )
        )


def test_omitted_input_spec_is_the_star_default_and_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"key '\*' is not allowed"):
        KVCacheQuantConfig(
            op_quantizer_config=OpQuantizerConfig(op_output_spec=None, op_state_spec=None)
        )


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("op_output_spec", {"op_output_spec": {0: INT8}, "op_state_spec": None}),
        ("op_state_spec", {"op_output_spec": None, "op_state_spec": {"weight": INT8}}),
        # omitted fields take the active defaults
        ("op_output_spec", {"op_state_spec": None}),
        ("op_state_spec", {"op_output_spec": None}),
    ],
)
def test_output_and_state_specs_must_be_inactive(field: str, kwargs: dict) -> None:
    with pytest.raises(pydantic.ValidationError, match=rf"{field} must be inactive"):
        KVCacheQuantConfig(op_quantizer_config=OpQuantizerConfig(op_input_spec={0: INT8}, **kwargs))


def test_inactive_dicts_with_explicit_none_values_are_fine() -> None:
    cfg = KVCacheQuantConfig(
        op_quantizer_config=OpQuantizerConfig(
            op_input_spec={0: INT8}, op_output_spec={0: None}, op_state_spec={"weight": None}
        )
    )
    assert cfg.input_entry() == (0, INT8)


def test_extra_fields_and_missing_field_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="op_quantizer_config"):
        KVCacheQuantConfig()  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="index"):
        KVCacheQuantConfig(op_quantizer_config=kv().op_quantizer_config, index=2)  # type: ignore[call-arg]


def test_assignment_is_validated_and_in_place_edits_are_caught_later() -> None:
    cfg = kv()
    with pytest.raises(pydantic.ValidationError, match="exactly one key"):
        cfg.op_quantizer_config = OpQuantizerConfig(
            op_input_spec={0: INT8, 1: INT8}, op_output_spec=None, op_state_spec=None
        )
    assert cfg.input_entry() == (2, INT8)
    cfg.op_quantizer_config.op_output_spec = {"*": INT8}
    with pytest.raises(ValueError, match="op_output_spec must be inactive"):
        cfg.input_entry()


def test_quantizer_config_field_default_and_values() -> None:
    assert QuantizerConfig().kv_cache_quant_configs is None
    assert QuantizerConfig(kv_cache_quant_configs=None).kv_cache_quant_configs is None
    entry = kv()
    cfg = QuantizerConfig(kv_cache_quant_configs={"index_copy_": entry})
    assert cfg.kv_cache_quant_configs == {"index_copy_": entry}
    # dict values are validated into KVCacheQuantConfig
    cfg = QuantizerConfig(kv_cache_quant_configs={"cat": entry.model_dump()})
    assert cfg.kv_cache_quant_configs == {"cat": entry}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"": kv()}, "key '' is not allowed"),
        ({3: kv()}, "key 3 is not allowed"),
        (["index_copy_"], "must be a dict of op type"),
        ({"cat": OpQuantizerConfig()}, "KVCacheQuantConfig"),
        ({"cat": {"op_quantizer_config": {"op_input_spec": {"*": INT8}}}}, "non-negative int"),
    ],
)
def test_quantizer_config_refuses_bad_entries(value: object, match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        QuantizerConfig(kv_cache_quant_configs=value)


def test_eager_mode_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"execution_mode='graph'.*got.*'eager'"):
        QuantizerConfig(kv_cache_quant_configs={"cat": kv()}, execution_mode="eager")
    with pytest.raises(pydantic.ValidationError, match="graph mode only"):
        QuantizerConfig(kv_cache_quant_configs={"cat": kv()}, execution_mode=ExecutionMode.EAGER)
    # switching an existing config to eager is refused and leaves it unchanged
    cfg = QuantizerConfig(kv_cache_quant_configs={"cat": kv()})
    with pytest.raises(pydantic.ValidationError, match="graph mode only"):
        cfg.set_execution_mode("eager")
    assert cfg.execution_mode is ExecutionMode.GRAPH
    # and so is adding KV-cache entries to an eager config
    eager = QuantizerConfig(execution_mode="eager")
    with pytest.raises(pydantic.ValidationError, match="graph mode only"):
        eager.kv_cache_quant_configs = {"cat": kv()}
    assert eager.kv_cache_quant_configs is None
    # an empty dict or None asks for nothing: fine in eager mode
    assert QuantizerConfig(kv_cache_quant_configs={}, execution_mode="eager")
    # the deprecated "pt2e" alias is graph mode
    with pytest.warns(DeprecationWarning):
        QuantizerConfig(kv_cache_quant_configs={"cat": kv()}, execution_mode="pt2e")


def test_eager_mode_is_refused_from_dict_and_yaml() -> None:
    body = {"execution_mode": "eager", "kv_cache_quant_configs": {"cat": kv().model_dump()}}
    with pytest.raises(pydantic.ValidationError, match="graph mode only"):
        QuantizerConfig.from_dict({"quantization_config": body})
    text = QuantizerConfig(kv_cache_quant_configs={"cat": kv()}).to_yaml()
    with pytest.raises(pydantic.ValidationError, match="graph mode only"):
        QuantizerConfig.from_yaml(text.replace("execution_mode: graph", "execution_mode: eager"))


def test_op_type_in_op_type_config_warns() -> None:
    glob = ModuleQuantizerConfig(op_type_config={"cat": None})
    with pytest.warns(UserWarning, match=r"\['cat'\].*global_config\.op_type_config") as rec:
        QuantizerConfig(global_config=glob, kv_cache_quant_configs={"cat": kv()})
    assert rec[0].filename == __file__  # points at the caller, not at pydantic
    sub = ModuleQuantizerConfig(op_type_config={"index_copy_": OpQuantizerConfig()})
    with pytest.warns(UserWarning, match=r"module_name_configs\['attn'\]\.op_type_config"):
        QuantizerConfig(
            module_name_configs={"attn": sub}, kv_cache_quant_configs={"index_copy_": kv()}
        )
    with pytest.warns(UserWarning, match=r"module_type_configs\['torch\.nn\.modules"):
        QuantizerConfig(
            module_type_configs={torch.nn.Linear: sub}, kv_cache_quant_configs={"index_copy_": kv()}
        )
    # a clash created later by a setter warns too
    cfg = QuantizerConfig(kv_cache_quant_configs={"cat": kv()})
    with pytest.warns(UserWarning, match="appear in both"):
        cfg.set_global(glob)


def test_no_warning_without_overlap() -> None:
    glob = ModuleQuantizerConfig(op_type_config={"linear": None}, op_name_config={"cat": None})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        QuantizerConfig(global_config=glob, kv_cache_quant_configs={"cat": kv()})
        QuantizerConfig(global_config=glob)


def _full_config() -> QuantizerConfig:
    return QuantizerConfig(
        global_config=ModuleQuantizerConfig(op_output_spec=None),
        kv_cache_quant_configs={"index_copy_": kv(2, UINT4_ASYM), "cat": kv(0)},
    )


def test_dict_round_trip() -> None:
    cfg = _full_config()
    data = cfg.to_dict()
    kv_dump = data["quantization_config"]["kv_cache_quant_configs"]
    assert list(kv_dump) == ["index_copy_", "cat"]
    assert kv_dump["cat"]["op_quantizer_config"]["op_output_spec"] == {"*": None}
    back = QuantizerConfig.from_dict(data)
    assert back == cfg
    assert back.kv_cache_quant_configs["index_copy_"].input_entry() == (2, UINT4_ASYM)
    none = QuantizerConfig()
    assert none.to_dict()["quantization_config"]["kv_cache_quant_configs"] is None
    assert QuantizerConfig.from_dict(none.to_dict()) == none


def test_yaml_round_trip(tmp_path) -> None:
    cfg = _full_config()
    text = cfg.to_yaml(tmp_path / "q.yaml")
    assert "kv_cache_quant_configs:" in text and "index_copy_:" in text
    assert QuantizerConfig.from_yaml(text) == cfg
    assert QuantizerConfig.from_yaml(tmp_path / "q.yaml") == cfg


def test_hand_written_yaml_with_anchor() -> None:
    text = """
quantization_spec:
  kv_int8: &kv_int8
    dtype: int8
    qscheme: symmetric
quantization_config:
  global_config: null
  kv_cache_quant_configs:
    index_copy_:
      op_quantizer_config:
        op_input_spec:
          "2": *kv_int8
        op_output_spec: null
        op_state_spec: null
"""
    cfg = QuantizerConfig.from_yaml(text)
    assert cfg.is_global_disabled()
    assert cfg.kv_cache_quant_configs["index_copy_"].input_entry() == (2, INT8)
    missing = text.replace("        op_output_spec: null\n", "")
    with pytest.raises(pydantic.ValidationError, match="op_output_spec must be inactive"):
        QuantizerConfig.from_yaml(missing)


def test_default_activation_spec_is_accepted() -> None:
    spec = default_activation_quantization_spec()
    assert kv(1, spec).input_entry() == (1, spec)
