"""Every YAML example of the config guide parses equal to its programmatic twin."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from coreai_opt.quantization import ModuleQuantizerConfig, QuantizationSpec, QuantizerConfig
from coreai_opt.quantization.config import OpQuantizerConfig
from coreai_opt.quantization.spec import (
    MovingAverageQParamsCalculator,
    PerBlockGranularity,
    PerChannelGranularity,
    QuantizationScheme,
    default_activation_quantization_spec,
    default_weight_quantization_spec,
)


def _int8_specs() -> tuple[QuantizationSpec, QuantizationSpec]:
    act = QuantizationSpec(dtype="int8", granularity={"type": "per_tensor"})
    weight = QuantizationSpec(dtype="int8", granularity={"type": "per_channel"})
    return act, weight


def test_mxfp4_weights_fp8_activations() -> None:
    fp8_activation = QuantizationSpec(dtype=torch.float8_e4m3fn)
    mxfp4_weight = QuantizationSpec(
        dtype=torch.float4_e2m1fn_x2,
        granularity=PerBlockGranularity(block_size=32),
        scale_dtype=torch.float8_e8m0fnu,
    )
    programmatic = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_input_spec={"*": fp8_activation},
            op_output_spec={"*": fp8_activation},
            op_state_spec={"weight": mxfp4_weight},
        )
    )
    yaml_text = """
quantization_spec:
  spec1: &fp8_activation
    dtype: float8_e4m3fn

  spec2: &mxfp4_weight
    dtype: float4_e2m1fn_x2
    granularity: { type: per_block, block_size: 32 }
    scale_dtype: float8_e8m0fnu

quantization_config:
  global_config:
    op_input_spec:
      "*": *fp8_activation # Quantize all op inputs
    op_output_spec:
      "*": *fp8_activation # Quantize all op outputs
    op_state_spec:
      weight: *mxfp4_weight # Quantize weight tensors
"""
    assert QuantizerConfig.from_yaml(yaml_text) == programmatic


def test_skip_linear_as_op_type() -> None:
    programmatic = QuantizerConfig(
        global_config=ModuleQuantizerConfig(op_type_config={"linear": None})
    )
    yaml_text = """
quantization_config:
  global_config:
    op_type_config:
      linear: null
"""
    parsed = QuantizerConfig.from_yaml(yaml_text)
    assert parsed == programmatic
    assert parsed.global_config.op_type_config["linear"].is_disabled()


def test_skip_linear_as_module_type() -> None:
    programmatic = QuantizerConfig(module_type_configs={"torch.nn.modules.linear.Linear": None})
    yaml_text = """
quantization_config:
  module_type_configs:
    torch.nn.modules.linear.Linear: null
"""
    assert QuantizerConfig.from_yaml(yaml_text) == programmatic
    assert programmatic == QuantizerConfig(module_type_configs={nn.Linear: None})


def test_short_module_type_name_from_guide_is_rejected_with_full_name_hint() -> None:
    # The guide's "mymodelSelfAttention" key has no module path: it can never match.
    with pytest.raises(ValueError) as programmatic_err:
        QuantizerConfig(
            module_type_configs={
                "mymodelSelfAttention": ModuleQuantizerConfig(op_type_config={"softmax": None})
            }
        )
    yaml_text = """
quantization_config:
  module_type_configs:
    mymodelSelfAttention:
      op_type_config:
        softmax: null
"""
    with pytest.raises(ValueError) as yaml_err:
        QuantizerConfig.from_yaml(yaml_text)
    for err in (programmatic_err, yaml_err):
        message = str(err.value)
        assert "mymodelSelfAttention" in message
        assert "fully-qualified" in message
        assert "<package>.<module>.mymodelSelfAttention" in message


def test_dotted_module_type_name_works_for_guide_example() -> None:
    programmatic = QuantizerConfig(
        module_type_configs={
            "mymodel.SelfAttention": ModuleQuantizerConfig(op_type_config={"softmax": None})
        }
    )
    yaml_text = """
quantization_config:
  module_type_configs:
    mymodel.SelfAttention:
      op_type_config:
        softmax: null
"""
    assert QuantizerConfig.from_yaml(yaml_text) == programmatic


def test_skip_softmax_in_named_module() -> None:
    programmatic = QuantizerConfig(
        module_name_configs={
            "model.selfattention.layer.0": ModuleQuantizerConfig(
                op_type_config={"softmax": None},
            )
        },
    )
    yaml_text = """
quantization_config:
  module_name_configs:
    model.selfattention.layer.0:
      op_type_config:
        softmax: null
"""
    assert QuantizerConfig.from_yaml(yaml_text) == programmatic


def test_skip_concat_output_globally() -> None:
    activation_spec = default_activation_quantization_spec()
    programmatic = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_type_config={
                "concat": OpQuantizerConfig(
                    op_input_spec={"*": activation_spec},
                    op_output_spec=None,
                )
            },
        )
    )
    yaml_text = """
quantization_spec:
  activation_spec: &activation_spec
    dtype: int8
    qscheme: symmetric
    granularity: { type: per_tensor }

quantization_config:
  global_config:
    op_type_config:
      concat:
        op_input_spec:
          "*": *activation_spec
        op_output_spec: null
"""
    parsed = QuantizerConfig.from_yaml(yaml_text)
    # The YAML spec leaves qparam_calculator_cls at "default" (moving average for
    # activations), the programmatic one names moving_average explicitly.
    concat = parsed.global_config.op_type_config["concat"]
    assert concat.op_output_spec == {"*": None}
    assert concat.op_input_spec["*"] == QuantizationSpec(
        **{**activation_spec.model_dump(), "qparam_calculator_cls": "default"}
    )
    assert parsed.global_config.op_state_spec == programmatic.global_config.op_state_spec


def test_quantize_only_linear_layers() -> None:
    int8_activation, int8_weight = _int8_specs()
    programmatic = QuantizerConfig(
        global_config=None,
        module_type_configs={
            "torch.nn.modules.linear.Linear": ModuleQuantizerConfig(
                op_input_spec={"*": int8_activation},
                op_output_spec={"*": int8_activation},
                op_state_spec={"weight": int8_weight},
            )
        },
    )
    yaml_text = """
quantization_spec:
  spec1: &int8_activation
    dtype: int8
    granularity:
      type: per_tensor

  spec2: &int8_weight
    dtype: int8
    granularity:
      type: per_channel

quantization_config:
  global_config: null # Disable global quantization

  # Enable quantization only for all Linear layers
  module_type_configs:
    torch.nn.modules.linear.Linear:
      op_input_spec:
        "*": *int8_activation
      op_output_spec:
        "*": *int8_activation
      op_state_spec:
        weight: *int8_weight
"""
    parsed = QuantizerConfig.from_yaml(yaml_text)
    assert parsed == programmatic
    assert parsed.is_global_disabled()


def test_quantize_only_named_op() -> None:
    int8_activation, int8_weight = _int8_specs()
    programmatic = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_input_spec=None,
            op_output_spec=None,
            op_state_spec=None,
            op_name_config={
                "linear_23": OpQuantizerConfig(
                    op_input_spec={"*": int8_activation},
                    op_output_spec={"*": int8_activation},
                    op_state_spec={"weight": int8_weight},
                )
            },
        )
    )
    yaml_text = """
quantization_spec:
  spec1: &int8_activation
    dtype: int8
    granularity:
      type: per_tensor

  spec2: &int8_weight
    dtype: int8
    granularity:
      type: per_channel

quantization_config:
  global_config:
    op_input_spec: null
    op_output_spec: # empty also signifies null
    op_state_spec:
    op_name_config:
      linear_23:
        op_input_spec:
          "*": *int8_activation
        op_output_spec:
          "*": *int8_activation
        op_state_spec:
          weight: *int8_weight
"""
    assert QuantizerConfig.from_yaml(yaml_text) == programmatic


def test_explicit_specs_per_module_type() -> None:
    programmatic = QuantizerConfig(global_config=None)
    linear_config = ModuleQuantizerConfig(
        op_input_spec=None,
        op_output_spec=None,
        op_state_spec={
            "weight": QuantizationSpec(
                dtype=torch.int4, granularity=PerBlockGranularity(block_size=32)
            )
        },
    )
    embedding_config = ModuleQuantizerConfig(
        op_input_spec=None,
        op_output_spec=None,
        op_state_spec={
            "weight": QuantizationSpec(dtype=torch.int8, granularity=PerChannelGranularity())
        },
    )
    programmatic.set_module_type("torch.nn.modules.linear.Linear", linear_config)
    programmatic.set_module_type("torch.nn.modules.sparse.Embedding", embedding_config)
    yaml_text = """
quantization_spec:
  spec1: &int8_weight
    dtype: int8
    granularity:
      type: per_channel

  spec2: &int4_weight
    dtype: int4
    granularity:
      type: per_block
      block_size: 32

quantization_config:
  global_config: null # Disable global quantization

  module_type_configs:
    torch.nn.modules.linear.Linear:
      op_input_spec:
      op_output_spec:
      op_state_spec:
        weight: *int4_weight

    torch.nn.modules.sparse.Embedding:
      op_input_spec:
      op_output_spec:
      op_state_spec:
        weight: *int8_weight
"""
    assert QuantizerConfig.from_yaml(yaml_text) == programmatic


def test_module_boundary_quantization() -> None:
    int8_activation = QuantizationSpec(dtype="int8", granularity={"type": "per_tensor"})
    programmatic = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_input_spec={"*": int8_activation},
            op_output_spec={"*": int8_activation},
        ),
        module_type_configs={
            "torch.nn.modules.activation.MultiheadAttention": ModuleQuantizerConfig(
                op_input_spec=None,
                op_output_spec=None,
                module_input_spec={0: int8_activation, 1: int8_activation, 2: int8_activation},
                module_output_spec={"*": int8_activation},
            )
        },
    )
    yaml_text = """
quantization_spec:
  spec1: &int8_activation
    dtype: int8
    granularity:
      type: per_tensor

quantization_config:
  global_config:
    op_input_spec:
      "*": *int8_activation
    op_output_spec:
      "*": *int8_activation
  module_type_configs:
    torch.nn.modules.activation.MultiheadAttention:
      op_input_spec:
      op_output_spec:
      module_input_spec:
        0: *int8_activation # query tensor
        1: *int8_activation # key tensor
        2: *int8_activation # value tensor
      module_output_spec:
        "*": *int8_activation # attention output
"""
    parsed = QuantizerConfig.from_yaml(yaml_text)
    assert parsed == programmatic
    mha = parsed.module_type_configs["torch.nn.modules.activation.MultiheadAttention"]
    assert sorted(mha.module_input_spec) == [0, 1, 2]


def test_override_default_axis_for_named_layer() -> None:
    programmatic = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_state_spec={
                "weight": QuantizationSpec(
                    dtype=torch.int4, granularity=PerBlockGranularity(block_size=32)
                )
            },
        ),
        module_name_configs={
            "decoder.deconv1": ModuleQuantizerConfig(
                op_state_spec={
                    "weight": QuantizationSpec(
                        dtype=torch.int4, granularity=PerBlockGranularity(axis=1, block_size=32)
                    )
                },
            ),
        },
    )
    yaml_text = """
quantization_config:
  global_config:
    op_state_spec:
      weight:
        dtype: int4
        granularity:
          type: per_block
          block_size: 32
          # axis omitted, resolved per module type during prepare()
  module_name_configs:
    decoder.deconv1:
      op_state_spec:
        weight:
          dtype: int4
          granularity:
            type: per_block
            # explicit axis=1 overrides the default for this ConvTranspose2d
            axis: 1
            block_size: 32
"""
    assert QuantizerConfig.from_yaml(yaml_text) == programmatic


# -- programmatic snippets of the guide ---------------------------------------------------


def test_default_configs_are_equivalent() -> None:
    explicit = QuantizerConfig(
        global_config=ModuleQuantizerConfig(
            op_input_spec={"*": default_activation_quantization_spec()},
            op_output_spec={"*": default_activation_quantization_spec()},
            op_state_spec={"weight": default_weight_quantization_spec()},
        )
    )
    assert QuantizerConfig() == QuantizerConfig(global_config=ModuleQuantizerConfig()) == explicit
    assert OpQuantizerConfig() == OpQuantizerConfig(
        op_input_spec={"*": default_activation_quantization_spec()},
        op_output_spec={"*": default_activation_quantization_spec()},
        op_state_spec={"weight": default_weight_quantization_spec()},
    )


def test_spec_snippets_run() -> None:
    weight_spec = default_weight_quantization_spec()
    activation_spec = default_activation_quantization_spec()
    int4_spec = QuantizationSpec(
        dtype=torch.int4,
        qscheme=QuantizationScheme.SYMMETRIC,
        granularity=PerBlockGranularity(block_size=32),
    )
    assert weight_spec.granularity == PerChannelGranularity(axis=0)
    assert activation_spec.qparam_calculator_cls is MovingAverageQParamsCalculator
    assert (int4_spec.quant_min, int4_spec.quant_max) == (-8, 7)


def test_presets_and_chaining_snippet() -> None:
    config = QuantizerConfig.presets.w4()
    config.set_module_type(nn.Embedding, ModuleQuantizerConfig.presets.w8())
    chained = QuantizerConfig.presets.w4().set_module_type(
        nn.Embedding, ModuleQuantizerConfig.presets.w8()
    )
    assert config == chained
    assert "torch.nn.modules.sparse.Embedding" in chained.module_type_configs


def test_only_for_snippet_matches_setter_code() -> None:
    shortcut = QuantizerConfig.presets.w4().only_for(nn.Linear, nn.Conv2d)
    setters = QuantizerConfig(global_config=None)
    setters.set_module_type(nn.Linear, ModuleQuantizerConfig.presets.w4())
    setters.set_module_type(nn.Conv2d, ModuleQuantizerConfig.presets.w4())
    assert shortcut == setters


def test_without_snippet_matches_setter_code() -> None:
    shortcut = QuantizerConfig.presets.w4().without(nn.LayerNorm, nn.Embedding, "model.lm_head")
    setters = QuantizerConfig.presets.w4()
    setters.set_module_type(nn.LayerNorm, None)
    setters.set_module_type(nn.Embedding, None)
    setters.set_module_name("model.lm_head", None)
    assert shortcut == setters


def test_dict_snippet() -> None:
    config = QuantizerConfig.from_dict({"quantization_config": {}})
    assert config == QuantizerConfig()
