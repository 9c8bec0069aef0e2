"""Graph-mode KV-cache quantization: QuantizerConfig.kv_cache_quant_configs at prepare."""

from __future__ import annotations

import pytest
import torch
from graph_helpers import node
from models import KV_SPEC, CacheUpdate, CacheWrite, kv
from torch import fx, nn

from coreai_opt.quantization import Quantizer, QuantizerConfig
from coreai_opt.quantization._graph.annotate import annotate
from coreai_opt.quantization._graph.export import export_model
from coreai_opt.quantization._graph.insert import is_fq_node
from coreai_opt.quantization._graph.kv_cache import KV_CACHE_PRIORITY, apply_kv_cache_specs
from coreai_opt.quantization.config import ModuleQuantizerConfig, OpQuantizerConfig
from coreai_opt.quantization.config.resolution import build_module_config_dict
from coreai_opt.quantization.spec import QuantizationSpec


class Attention(nn.Module):
    """Key/value caches appended with ``torch.cat``, then scaled_dot_product_attention."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)
        self.v = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor):
        k = torch.cat([k_cache, self.k(x)], dim=2)
        v = torch.cat([v_cache, self.v(x)], dim=2)
        return nn.functional.scaled_dot_product_attention(self.q(x), k, v)


class Wrapped(nn.Module):
    """Attention as a submodule named ``attn``."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention()

    def forward(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor):
        return self.attn(x, k_cache, v_cache)


def write_inputs() -> tuple[torch.Tensor, ...]:
    return torch.randn(2, 8), torch.tensor([1, 4])


def update_inputs() -> tuple[torch.Tensor, ...]:
    return torch.randn(6, 8), torch.randn(2, 8), torch.tensor([0, 3])


def attention_inputs() -> tuple[torch.Tensor, ...]:
    return torch.randn(1, 2, 3, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)


def fq_reading(gm: fx.GraphModule, consumer: str, index: int) -> nn.Module | None:
    """The FQ module feeding tensor input *index* of node *consumer*, if any."""
    inp = node(gm, consumer).all_input_nodes[index]
    return getattr(gm, str(inp.target)) if is_fq_node(inp) else None


def fq_count(gm: fx.GraphModule) -> int:
    return sum(1 for n in gm.graph.nodes if is_fq_node(n))


def assert_kv_fq(fq: nn.Module | None) -> None:
    assert fq is not None
    assert fq.dtype == torch.int4 and fq.qscheme.value == "asymmetric"


def test_in_place_cache_write_gets_an_fq_on_the_written_value() -> None:
    torch.manual_seed(0)
    config = QuantizerConfig(global_config=None, kv_cache_quant_configs={"index_copy_": kv(2)})
    gm = Quantizer(CacheWrite(), config).prepare(write_inputs())
    # tensor inputs of index_copy_: (cache, idx, value); only the value is quantized
    assert_kv_fq(fq_reading(gm, "index_copy_", 2))
    fq_node = node(gm, "index_copy_").all_input_nodes[2]
    assert fq_node.name.startswith("activation_post_process_")
    assert fq_node.args[0].name == "linear"
    assert fq_count(gm) == 1  # global_config=None: nothing else


def test_cache_buffer_written_in_place_is_refused() -> None:
    """Fake-quantizing the buffer an in-place op writes would redirect the write."""
    config = QuantizerConfig(global_config=None, kv_cache_quant_configs={"index_copy_": kv(0)})
    with pytest.raises(ValueError, match=r"writes in place; it cannot be fake-quantized"):
        Quantizer(CacheWrite(), config).prepare(write_inputs())


def test_cache_input_slot_of_an_out_of_place_update() -> None:
    torch.manual_seed(0)
    config = QuantizerConfig(global_config=None, kv_cache_quant_configs={"index_copy": kv(0)})
    model = CacheUpdate()
    inputs = update_inputs()
    gm = Quantizer(model, config).prepare(inputs)
    assert_kv_fq(fq_reading(gm, "index_copy", 0))
    assert node(gm, "index_copy").all_input_nodes[0].args[0].name == "cache"
    assert fq_count(gm) == 1
    # qparams were calibrated: the int4 cache stays close to the float one
    out, ref = gm(*inputs), model(*inputs)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 0.5 * ref.abs().max()


def test_override_beats_a_global_decline_and_keeps_the_other_slots() -> None:
    torch.manual_seed(0)
    # The global config declines input 1 of every cat (and the linear outputs), so
    # without the KV-cache entry the projected keys/values reach cat unquantized.
    glob = ModuleQuantizerConfig(
        op_output_spec=None,
        op_type_config={"cat": OpQuantizerConfig(op_input_spec={1: None}, op_output_spec=None)},
    )
    plain = Quantizer(Attention(), QuantizerConfig(global_config=glob)).prepare(attention_inputs())
    assert fq_reading(plain, "cat", 1) is None and fq_reading(plain, "cat_1", 1) is None

    with pytest.warns(UserWarning, match="appear in both kv_cache_quant_configs"):
        config = QuantizerConfig(global_config=glob, kv_cache_quant_configs={"cat": kv(1)})
    gm = Quantizer(Attention(), config).prepare(attention_inputs())
    for cat in ("cat", "cat_1"):
        assert_kv_fq(fq_reading(gm, cat, 1))
        # input 0 (the cache) is not named by either config: left alone
        assert fq_reading(gm, cat, 0) is None
    # the q projection, untouched by the KV-cache entry, keeps its global input FQ
    assert fq_reading(gm, "linear_2", 0) is not None


def test_override_beats_a_default_spec_on_the_same_slot() -> None:
    torch.manual_seed(0)
    # W8A8 everywhere; the KV-cache entry replaces the int8 spec on sdpa's key input.
    config = QuantizerConfig(kv_cache_quant_configs={"scaled_dot_product_attention": kv(1)})
    gm = Quantizer(Attention(), config).prepare(attention_inputs())
    assert_kv_fq(fq_reading(gm, "scaled_dot_product_attention", 1))
    for index in (0, 2):
        fq = fq_reading(gm, "scaled_dot_product_attention", index)
        assert fq is not None and fq.dtype == torch.int8


def test_override_beats_module_boundary_specs() -> None:
    torch.manual_seed(0)
    int8 = QuantizationSpec(dtype=torch.int8)
    boundary = ModuleQuantizerConfig(
        op_input_spec=None, op_output_spec=None, op_state_spec=None, module_input_spec={0: int8}
    )
    config = QuantizerConfig(global_config=None, module_name_configs={"attn": boundary})
    gm = Quantizer(Wrapped(), config).prepare(attention_inputs())
    fq = fq_reading(gm, "linear", 0)  # the attention module's input 0 (x) feeds linear
    assert fq is not None and fq.dtype == torch.int8

    config = QuantizerConfig(
        global_config=None,
        module_name_configs={"attn": boundary},
        kv_cache_quant_configs={"linear": kv(0)},
    )
    gm = Quantizer(Wrapped(), config).prepare(attention_inputs())
    assert_kv_fq(fq_reading(gm, "linear", 0))


def test_annotation_slot_priority_and_owner() -> None:
    model = Wrapped()
    config = QuantizerConfig(kv_cache_quant_configs={"cat": kv(1)})
    gm = export_model(model, attention_inputs(), None, True)
    ann = annotate(gm, model, config, build_module_config_dict(config, model))
    for cat in ("cat", "cat_1"):
        slot = ann.inputs[(node(gm, cat), 1)]
        assert slot.spec == KV_SPEC
        assert slot.priority == KV_CACHE_PRIORITY == (-2, -2, 0, 0)
        assert slot.owner[0] == "attn"
        assert "Attention" in str(slot.owner[1])
    # every other annotation has a lower priority (a larger tuple)
    others = [s for key, s in ann.inputs.items() if s.priority != KV_CACHE_PRIORITY]
    assert others and all(s.priority > KV_CACHE_PRIORITY for s in others)


def test_no_entries_leaves_the_annotations_alone() -> None:
    model = CacheUpdate()
    gm = export_model(model, update_inputs(), None, True)
    config = QuantizerConfig()
    ann = annotate(gm, model, config, build_module_config_dict(config, model))
    before = dict(ann.inputs)
    apply_kv_cache_specs(ann, gm, QuantizerConfig(kv_cache_quant_configs={}))
    apply_kv_cache_specs(ann, gm, config)
    assert ann.inputs == before


def test_missing_op_type_raises() -> None:
    config = QuantizerConfig(kv_cache_quant_configs={"index_put_": kv(0)})
    with pytest.raises(ValueError, match=r"'index_put_'.*no op of type.*'index_copy'") as info:
        Quantizer(CacheUpdate(), config).prepare(update_inputs())
    assert "matmul" in str(info.value)  # lists the op types that are there
    # the in-place and out-of-place ops are different op types
    config = QuantizerConfig(kv_cache_quant_configs={"index_copy_": kv(2)})
    with pytest.raises(ValueError, match="no op of type 'index_copy_'"):
        Quantizer(CacheUpdate(), config).prepare(update_inputs())


def test_index_out_of_range_raises() -> None:
    config = QuantizerConfig(kv_cache_quant_configs={"index_copy": kv(3)})
    with pytest.raises(
        ValueError, match=r"'index_copy'.*index 3 is out of range.*3 tensor input\(s\)"
    ) as info:
        Quantizer(CacheUpdate(), config).prepare(update_inputs())
    assert "allowed indices: [0, 1, 2]" in str(info.value)
    config = QuantizerConfig(kv_cache_quant_configs={"scaled_dot_product_attention": kv(3)})
    with pytest.raises(ValueError, match="index 3 is out of range"):
        Quantizer(Attention(), config).prepare(attention_inputs())


def test_integer_input_raises() -> None:
    # index_copy's input 1 is the int64 index tensor
    config = QuantizerConfig(kv_cache_quant_configs={"index_copy": kv(1)})
    with pytest.raises(
        ValueError, match=r"'index_copy'.*index 1 .*'idx', a torch\.int64 tensor"
    ) as info:
        Quantizer(CacheUpdate(), config).prepare(update_inputs())
    assert "floating-point inputs: [0, 2]" in str(info.value)


def test_prepared_model_trains_and_keeps_the_override() -> None:
    torch.manual_seed(0)
    config = QuantizerConfig(kv_cache_quant_configs={"index_copy": kv(0)})
    quantizer = Quantizer(CacheUpdate(), config)
    inputs = update_inputs()
    gm = quantizer.prepare(inputs)
    with quantizer.training_mode():
        gm(*inputs).sum().backward()
    assert_kv_fq(fq_reading(gm, "index_copy", 0))
    assert all(p.grad is not None for p in gm.parameters() if p.requires_grad)


class BufferCacheRead(nn.Module):
    """A cache buffer read by an out-of-place update (the buffer itself is not written)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("cache", torch.randn(6, 8))

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.cache.index_copy(0, idx, x) * 2


def test_a_cache_buffer_read_out_of_place_gets_an_fq() -> None:
    config = QuantizerConfig(global_config=None, kv_cache_quant_configs={"index_copy": kv(0)})
    x, idx = torch.randn(2, 8), torch.tensor([1, 4])
    model = BufferCacheRead()
    gm = Quantizer(model, config).prepare((x, idx))
    fq = node(gm, "index_copy").all_input_nodes[0]
    assert fq.op == "call_module" and fq.args[0].op == "get_attr"
    assert_kv_fq(fq_reading(gm, "index_copy", 0))
    assert torch.equal(gm.cache, model.cache)  # the buffer itself is untouched


def test_an_unknown_execution_mode_is_refused_by_name() -> None:
    from coreai_opt.quantization import InvalidExecutionModeError

    with pytest.raises(InvalidExecutionModeError, match=r"execution_mode='jit' .* allowed"):
        Quantizer.get_compressible_op_names(nn.Linear(2, 2), "jit")
