"""Config classes: defaults, keys, validation, setters, presets, schedules, enums."""

from __future__ import annotations

import warnings

import pydantic
import pytest
import torch
import torch.nn as nn

from coreai_opt._export_backend import CoreMLExportError, ExportBackend
from coreai_opt._version import __version__
from coreai_opt.config import CompressionType, ModuleCompressionConfig
from coreai_opt.config import WeightOnlyModuleValidationMixin as WeightOnlyMixin
from coreai_opt.config.spec import CompressionTargetTensor
from coreai_opt.quantization import ModuleQuantizerConfig, QuantizationSpec, QuantizerConfig
from coreai_opt.quantization.config import ExecutionMode, OpQuantizerConfig, QATSchedule
from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerChannelGranularity,
    default_activation_quantization_spec,
    default_weight_quantization_spec,
)

ACT = default_activation_quantization_spec()
W = default_weight_quantization_spec()


def test_omitted_vs_none() -> None:
    op = OpQuantizerConfig()
    assert op.op_input_spec == {"*": ACT} and op.op_output_spec == {"*": ACT}
    assert op.op_state_spec == {"weight": W}
    off = OpQuantizerConfig(op_input_spec=None, op_output_spec=None, op_state_spec=None)
    # 0.3.0: an explicit None is stored as {"*": None} (0.2.0 stored {}).
    none = {"*": None}
    assert (off.op_input_spec, off.op_output_spec, off.op_state_spec) == (none, none, none)
    assert off.is_disabled() and not op.is_disabled()
    # A spec dict is active when any value is not None.
    assert OpQuantizerConfig(
        op_input_spec={0: None}, op_output_spec={}, op_state_spec=None
    ).is_disabled()
    assert not OpQuantizerConfig(
        op_input_spec={"*": None, 1: ACT}, op_output_spec=None, op_state_spec=None
    ).is_disabled()
    module = ModuleQuantizerConfig()
    assert module.op_type_config == {} and module.module_input_spec == {}
    assert module.qat_schedule is None
    assert QuantizerConfig().global_config == module
    assert QuantizerConfig(global_config=None).is_global_disabled()
    assert QuantizerConfig().execution_mode is ExecutionMode.GRAPH
    assert QuantizerConfig().preserved_attributes is None


def test_none_values_become_disabled_configs() -> None:
    cfg = ModuleQuantizerConfig(op_type_config={"linear": None}, op_name_config={"add_1": None})
    assert cfg.op_type_config["linear"].is_disabled()
    assert cfg.op_name_config["add_1"] == OpQuantizerConfig.disabled()
    top = QuantizerConfig(module_type_configs={nn.Linear: None}, module_name_configs={"a": None})
    assert top.module_type_configs["torch.nn.modules.linear.Linear"].is_disabled()
    assert top.module_name_configs["a"].is_disabled()


def test_digit_string_keys_become_ints() -> None:
    cfg = OpQuantizerConfig(op_input_spec={"0": ACT, "*": None}, op_output_spec={"1": ACT})
    assert cfg.op_input_spec == {0: ACT, "*": None}
    assert cfg.op_output_spec == {1: ACT}
    assert OpQuantizerConfig(op_state_spec={"0": W}).op_state_spec == {"0": W}


def test_spec_values_from_dicts() -> None:
    cfg = OpQuantizerConfig(op_input_spec={0: {"dtype": "int4"}})
    assert cfg.op_input_spec[0] == QuantizationSpec(dtype=torch.int4)


@pytest.mark.parametrize(
    ("field", "value", "fragments"),
    [
        ("op_input_spec", {0: ACT, "0": ACT}, ["op_input_spec", "two keys", "0"]),
        ("op_input_spec", {-1: ACT}, ["op_input_spec", "-1", "indices >= 0"]),
        ("op_input_spec", {True: ACT}, ["op_input_spec", "True", "allowed keys"]),
        ("op_input_spec", {1.5: ACT}, ["op_input_spec", "1.5", "an int index or a name"]),
        ("op_output_spec", {0: ACT, "x": ACT}, ["op_output_spec", "mixes", "either int"]),
        ("op_state_spec", {0: W}, ["op_state_spec", "0", "keyed by name"]),
        ("op_state_spec", {"": W}, ["op_state_spec", "''", "allowed"]),
        ("op_input_spec", [ACT], ["op_input_spec", "must be a dict", "list"]),
        ("op_input_spec", {0: "int8"}, ["op_input_spec.0", "QuantizationSpec"]),
    ],
)
def test_bad_spec_dicts(field: str, value: object, fragments: list[str]) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        OpQuantizerConfig(**{field: value})
    for fragment in fragments:
        assert fragment in str(err.value), (fragment, str(err.value))


def test_bad_module_level_fields() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"op_name_config key '\(' is not a valid"):
        ModuleQuantizerConfig(op_name_config={"(": None})
    with pytest.raises(pydantic.ValidationError, match=r"op_type_config key 3 is not allowed"):
        ModuleQuantizerConfig(op_type_config={3: None})
    with pytest.raises(pydantic.ValidationError, match=r"module_state_spec key 1 is an index"):
        ModuleQuantizerConfig(module_state_spec={1: W})
    with pytest.raises(pydantic.ValidationError, match=r"qat_schedule"):
        ModuleQuantizerConfig(qat_schedule={"enable_observer": -1})
    with pytest.raises(pydantic.ValidationError, match=r"op_inputs_spec"):
        ModuleQuantizerConfig(op_inputs_spec={})


def test_validate_assignment() -> None:
    cfg = ModuleQuantizerConfig()
    cfg.op_input_spec = None
    assert cfg.op_input_spec == {"*": None}
    with pytest.raises(pydantic.ValidationError, match=r"op_output_spec"):
        cfg.op_output_spec = {-3: ACT}


def test_module_type_keys() -> None:
    cfg = QuantizerConfig(module_type_configs={nn.Linear: None, "torch.nn.Conv2d": None})
    assert list(cfg.module_type_configs) == [
        "torch.nn.modules.linear.Linear",
        "torch.nn.modules.conv.Conv2d",
    ]
    with pytest.raises(ValueError, match=r"'Linear' is not a fully-qualified.*torch\.nn\.modules"):
        QuantizerConfig(module_type_configs={"Linear": None})
    with pytest.raises(TypeError, match=r"key 3 has type int"):
        QuantizerConfig(module_type_configs={3: None})
    with pytest.raises(TypeError, match=r"not a torch\.nn\.Module subclass"):
        QuantizerConfig(module_type_configs={int: None})
    with pytest.raises(pydantic.ValidationError, match=r"module_name_configs key '\[' is not"):
        QuantizerConfig(module_name_configs={"[": None})


def test_global_config_restrictions() -> None:
    for field in ("module_input_spec", "module_output_spec", "module_state_spec"):
        key = "weight" if field == "module_state_spec" else 0
        with pytest.raises(pydantic.ValidationError, match=rf"global_config may not set {field}"):
            QuantizerConfig(global_config=ModuleQuantizerConfig(**{field: {key: ACT}}))
    cfg = QuantizerConfig()
    with pytest.raises(pydantic.ValidationError, match=r"global_config may not set"):
        cfg.set_global(ModuleQuantizerConfig(module_input_spec={0: ACT}))


def test_final_classes() -> None:
    with pytest.raises(TypeError, match=r"final"):

        class _M(ModuleQuantizerConfig):
            pass

    with pytest.raises(TypeError, match=r"final"):

        class _Q(QuantizerConfig):
            pass


def test_setters_return_self_and_chain() -> None:
    cfg = QuantizerConfig()
    w4 = ModuleQuantizerConfig.presets.w4()
    out = (
        cfg.set_global(None)
        .set_module_type(nn.Linear, w4)
        .set_module_name("enc.*", None)
        .set_execution_mode("EAGER")
    )
    assert out is cfg
    assert cfg.is_global_disabled()
    assert cfg.module_type_configs["torch.nn.modules.linear.Linear"] == w4
    assert cfg.module_name_configs["enc.*"].is_disabled()
    assert cfg.execution_mode is ExecutionMode.EAGER
    cfg.set_module_name("a", None).set_module_name("b", None).set_module_name("a", w4)
    assert list(cfg.module_name_configs) == ["enc.*", "b", "a"]
    with pytest.raises(pydantic.ValidationError, match=r"execution_mode 'fast'.*'graph', 'eager'"):
        cfg.set_execution_mode("fast")


def test_only_for_and_without() -> None:
    cfg = QuantizerConfig.presets.w8().only_for([nn.Linear, "head"])
    assert cfg.is_global_disabled()
    assert cfg.module_name_configs["head"] == ModuleQuantizerConfig.presets.w8()
    with pytest.raises(ValueError, match=r"global_config is disabled"):
        cfg.only_for(nn.Conv2d)
    with pytest.raises(ValueError, match=r"at least one"):
        QuantizerConfig().only_for()
    with pytest.raises(TypeError, match=r"target 3 has type int"):
        QuantizerConfig().only_for(nn.Linear, 3)
    untouched = QuantizerConfig()
    with pytest.raises(TypeError):
        untouched.only_for(nn.Linear, object)
    assert not untouched.is_global_disabled() and untouched.module_type_configs == {}
    assert QuantizerConfig().without() == QuantizerConfig()
    cfg = QuantizerConfig().without((nn.Linear, "x"))
    assert cfg.module_type_configs["torch.nn.modules.linear.Linear"].is_disabled()


@pytest.mark.parametrize("name", ["w8", "w4"])
def test_reference_presets(name: str) -> None:
    module = getattr(ModuleQuantizerConfig.presets, name)(axis=1)
    dtype = torch.int8 if name == "w8" else torch.int4
    assert module.op_input_spec == {"*": None} and module.op_output_spec == {"*": None}
    assert module.op_state_spec == {
        "weight": QuantizationSpec(dtype=dtype, granularity=PerChannelGranularity(axis=1))
    }
    top = getattr(QuantizerConfig.presets, name)(execution_mode="eager")
    assert top.execution_mode is ExecutionMode.EAGER
    assert top.global_config.op_state_spec["weight"].granularity.axis is None


def test_w4_per_block_and_additions() -> None:
    spec = ModuleQuantizerConfig.presets.w4_per_block(block_size=64).op_state_spec["weight"]
    assert spec.granularity == PerBlockGranularity(block_size=64)
    w8a8 = ModuleQuantizerConfig.presets.w8a8()
    assert w8a8.op_input_spec == w8a8.op_output_spec == {"*": ACT}
    assert w8a8.op_state_spec["weight"].dtype is torch.int8
    w4a8 = QuantizerConfig.presets.w4a8(axis=0).global_config
    assert w4a8.op_state_spec["weight"].dtype is torch.int4
    assert w4a8.op_input_spec["*"].dtype is torch.int8
    fp8 = ModuleQuantizerConfig.presets.fp8()
    assert fp8.op_input_spec["*"].dtype is torch.float8_e4m3fn
    assert fp8.op_state_spec["weight"].granularity == PerChannelGranularity()
    mx = ModuleQuantizerConfig.presets.mxfp4().op_state_spec["weight"]
    assert mx.dtype is torch.float4_e2m1fn_x2
    assert mx.scale_dtype is torch.float8_e8m0fnu
    assert mx.granularity == PerBlockGranularity(block_size=32)
    with pytest.raises(pydantic.ValidationError, match=r"block_size=0"):
        ModuleQuantizerConfig.presets.mxfp4(block_size=0)
    with pytest.raises(TypeError):
        ModuleQuantizerConfig.presets.w8(1)  # type: ignore[misc]


def test_qat_schedule_states() -> None:
    s = QATSchedule(enable_observer=1, enable_fake_quant=2, disable_observer=4)
    states = [tuple(s.state_at(k)) for k in range(6)]
    assert states == [
        (False, False),
        (True, False),
        (True, True),
        (True, True),
        (False, True),
        (False, True),
    ]
    assert QATSchedule().state_at(0) == (True, True)
    assert QATSchedule()._compute_state(10**6).obs_on
    with pytest.raises(ValueError, match=r"step must be an int >= 0"):
        s.state_at(-1)
    with pytest.raises(pydantic.ValidationError, match=r"frozen"):
        s.enable_observer = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"enable_observer": -1}, "enable_observer"),
        ({"enable_fake_quant": -2}, "enable_fake_quant"),
        ({"disable_observer": 0}, "disable_observer"),
        ({"enable_observer": True}, "enable_observer"),
        ({"enable_observer": 3, "enable_fake_quant": 2}, "enable_fake_quant=2 must be >="),
        (
            {"enable_observer": 3, "enable_fake_quant": 3, "disable_observer": 3},
            "disable_observer=3 must be > enable_observer=3",
        ),
        (
            {"enable_fake_quant": 5, "disable_observer": 4},
            "disable_observer=4 must be >= enable_fake_quant=5",
        ),
        ({"start": 1}, "start"),
    ],
)
def test_qat_schedule_validation(kwargs: dict, fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=fragment):
        QATSchedule(**kwargs)


def test_execution_mode_lookup() -> None:
    assert ExecutionMode("GRAPH") is ExecutionMode.GRAPH
    with pytest.warns(DeprecationWarning, match=r"ExecutionMode\.PT2E is deprecated.*GRAPH"):
        assert ExecutionMode.PT2E is ExecutionMode.GRAPH
    with pytest.warns(DeprecationWarning):
        assert ExecutionMode("Pt2E") is ExecutionMode.GRAPH
    with pytest.warns(DeprecationWarning):
        assert ExecutionMode["PT2E"] is ExecutionMode.GRAPH
    with pytest.warns(DeprecationWarning):
        assert QuantizerConfig(execution_mode="pt2e").execution_mode is ExecutionMode.GRAPH
    with pytest.raises(ValueError, match=r"'jit' is not a valid ExecutionMode.*'graph', 'eager'"):
        ExecutionMode("jit")
    assert str(ExecutionMode.EAGER) == "eager" and ExecutionMode.EAGER == "eager"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(ExecutionMode) == [ExecutionMode.GRAPH, ExecutionMode.EAGER]


def test_export_backend_and_error() -> None:
    assert [m.value for m in ExportBackend] == ["_torch", "coreml", "coreai"]
    assert ExportBackend("CoreAI") is ExportBackend.CoreAI
    with pytest.warns(DeprecationWarning, match=r"ExportBackend\.MIL is deprecated.*CoreML"):
        assert ExportBackend.MIL is ExportBackend.CoreML
    with pytest.warns(DeprecationWarning, match=r"ExportBackend\(.mlir.\) is deprecated.*CoreAI"):
        assert ExportBackend("mlir") is ExportBackend.CoreAI
    with pytest.raises(ValueError, match=r"'tflite' is not a valid ExportBackend"):
        ExportBackend("tflite")
    err = CoreMLExportError(torch.int4, "activation of linear")
    assert isinstance(err, ValueError)
    assert "torch.int4" in str(err) and "activation of linear" in str(err)
    assert "ExportBackend.CoreAI" in str(err)
    assert __version__ == "0.3.0"  # the coreai-opt release this package implements


def test_compression_base_enums() -> None:
    assert [t.to_coreml_code() for t in CompressionType] == [3, 2, 1]
    assert QuantizationSpec.get_compression_type() is CompressionType.QUANTIZATION
    assert CompressionTargetTensor("LUT") is CompressionTargetTensor.LUT


def test_weight_only_mixin() -> None:
    class PalettizeModuleConfig(
        WeightOnlyMixin, ModuleCompressionConfig[OpQuantizerConfig, QuantizationSpec]
    ):
        pass

    cfg = PalettizeModuleConfig(op_state_spec={"weight": W})
    assert cfg.op_input_spec == {} and cfg.op_output_spec == {}
    with pytest.raises(pydantic.ValidationError, match=r"weight-only: op_input_spec must be"):
        PalettizeModuleConfig(op_input_spec={0: ACT})
