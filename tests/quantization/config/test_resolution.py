"""Which module config, op config and spec apply (shared by both execution modes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from coreai_opt.quantization import ModuleQuantizerConfig, QuantizationSpec, QuantizerConfig
from coreai_opt.quantization.config import OpQuantizerConfig
from coreai_opt.quantization.config.resolution import (
    ConfigLevel,
    build_module_config_dict,
    lookup_spec,
    lookup_spec_entry,
    resolve_module_config,
    resolve_op_config,
    resolve_spec,
)

INT4 = QuantizationSpec(dtype="int4")
INT8 = QuantizationSpec(dtype="int8")
UINT8 = QuantizationSpec(dtype="uint8")


def _weights(spec: QuantizationSpec | None, **extra) -> ModuleQuantizerConfig:
    return ModuleQuantizerConfig(
        op_input_spec=None, op_output_spec=None, op_state_spec={"weight": spec}, **extra
    )


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.conv = nn.Conv1d(4, 4, 1)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = Block()
        self.dec = Block()
        self.head = nn.Linear(4, 2)
        self.shared = self.head


def _weight_of(resolved) -> QuantizationSpec | None:
    return lookup_spec(resolved.config.op_state_spec, "weight")


def test_precedence_name_over_type_over_global() -> None:
    config = QuantizerConfig(
        global_config=_weights(INT8),
        module_type_configs={nn.Linear: _weights(INT4)},
        module_name_configs={"head": _weights(UINT8)},
    )
    table = build_module_config_dict(config, Model())
    assert table["head"].level is ConfigLevel.MODULE_NAME and _weight_of(table["head"]) == UINT8
    assert table["enc.fc"].level is ConfigLevel.MODULE_TYPE and _weight_of(table["enc.fc"]) == INT4
    assert table["enc.conv"].level is ConfigLevel.GLOBAL
    assert _weight_of(table["enc.conv"]) == INT8
    assert "shared" not in table  # shared modules are keyed by their first name


def test_name_level_covers_descendants_and_beats_their_type_match() -> None:
    config = QuantizerConfig(
        module_type_configs={nn.Linear: _weights(INT4)},
        module_name_configs={"dec": None},
    )
    table = build_module_config_dict(config, Model())
    assert table["dec.fc"].config.is_disabled()
    assert table["dec.fc"].owner == "dec" and table["dec.fc"].inherited
    assert _weight_of(table["enc.fc"]) == INT4


def test_deeper_match_within_a_level_wins() -> None:
    config = QuantizerConfig(module_name_configs={"enc": None, "enc.fc": _weights(INT4)})
    table = build_module_config_dict(config, Model())
    assert _weight_of(table["enc.fc"]) == INT4
    assert table["enc.conv"].config.is_disabled()


def test_later_entry_wins_for_one_module() -> None:
    config = QuantizerConfig(
        module_name_configs={r"enc\..*": _weights(INT4), r".*fc": _weights(UINT8)}
    )
    assert _weight_of(resolve_module_config(config, "enc.fc", nn.Linear)) == UINT8
    assert _weight_of(resolve_module_config(config, "enc.conv", nn.Conv1d)) == INT4


def test_regex_is_full_match_and_aliases_count() -> None:
    config = QuantizerConfig(module_name_configs={"hea": None, "shared": _weights(INT4)})
    assert resolve_module_config(config, "head", nn.Linear).level is ConfigLevel.GLOBAL
    table = build_module_config_dict(config, Model())
    assert _weight_of(table["head"]) == INT4  # matched through its alias "shared"


def test_module_specs_are_not_inherited() -> None:
    block = ModuleQuantizerConfig(module_input_spec={0: INT8}, module_state_spec={"bias": INT4})
    config = QuantizerConfig(module_type_configs={"tests.Block": block})
    own = resolve_module_config(config, "enc", "tests.Block")
    assert own.config.module_input_spec == {0: INT8} and not own.inherited
    child = resolve_module_config(
        config, "enc.fc", nn.Linear, ancestors=[("", None), ("enc", "tests.Block")]
    )
    assert child.level is ConfigLevel.MODULE_TYPE and child.owner == "enc"
    assert child.config.module_input_spec == {} and child.config.module_state_spec == {}
    assert child.config.op_input_spec == block.op_input_spec


def test_global_disabled_and_reenabled_by_type() -> None:
    config = QuantizerConfig.presets.w8().only_for(nn.Linear)
    table = build_module_config_dict(config, Model())
    assert table[""].config.is_disabled()
    assert table["enc.conv"].config.is_disabled()
    assert not table["enc.fc"].config.is_disabled()


def test_op_level_precedence() -> None:
    module = ModuleQuantizerConfig(
        op_type_config={"add": OpQuantizerConfig(op_input_spec={0: INT4}), "mul": None},
        op_name_config={
            r"add_\d": OpQuantizerConfig(op_input_spec={0: UINT8}),
            r"add_1": OpQuantizerConfig(op_input_spec={0: INT8}),
        },
    )
    assert resolve_op_config(module, "add", "add").op_input_spec == {0: INT4}
    assert resolve_op_config(module, "add_2", "add").op_input_spec == {0: UINT8}
    assert resolve_op_config(module, "add_1", "add").op_input_spec == {0: INT8}
    assert resolve_op_config(module, "mul", "mul").is_disabled()
    assert resolve_op_config(module, "xadd_1", "sub") == module.op_defaults()
    assert resolve_op_config(module, None, None).op_input_spec == module.op_input_spec


def test_tensor_keys_star_explicit_and_none() -> None:
    specs = {"*": INT8, 1: INT4, 2: None}
    assert lookup_spec(specs, 0) == INT8
    assert lookup_spec(specs, 1) == INT4
    assert lookup_spec(specs, "1") == INT4
    assert lookup_spec_entry(specs, 2) == (True, None)
    assert lookup_spec_entry({1: INT4}, 0) == (False, None)
    assert lookup_spec(specs, "*") == INT8
    with pytest.raises(TypeError, match=r"int index or a str"):
        lookup_spec(specs, 1.0)  # type: ignore[arg-type]


def test_resolve_spec_end_to_end() -> None:
    config = QuantizerConfig(
        module_name_configs={
            "enc": ModuleQuantizerConfig(
                op_type_config={"linear": OpQuantizerConfig(op_output_spec={0: None})}
            )
        }
    )
    common = {"module_path": "enc.fc", "module_type": nn.Linear, "op_type": "linear"}
    assert resolve_spec(config, op_name="linear", group="output", key=0, **common) is None
    assert resolve_spec(config, op_name="linear", group="input", key=0, **common).dtype is (
        torch.int8
    )
    weight = resolve_spec(config, op_name="linear", group="state", key="weight", **common)
    assert weight.granularity.axis == 0
    assert resolve_spec(config, op_name="linear", group="state", key="bias", **common) is None
