"""The Quantizer facade and the shared life cycle on hand-built prepared models."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from coreai_opt import ExportBackend
from coreai_opt.quantization import Quantizer, _lifecycle
from coreai_opt.quantization.config import (
    ExecutionMode,
    ModuleQuantizerConfig,
    QATSchedule,
    QuantizerConfig,
)
from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerChannelGranularity,
    QuantizationComponentFactory,
    QuantizationSpec,
    default_activation_quantization_spec,
)
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase


def _weight_fq(**spec):
    return QuantizationComponentFactory.create_fake_quantizer(QuantizationSpec(**spec), "weight")


def _act_fq():
    return QuantizationComponentFactory.create_fake_quantizer(
        default_activation_quantization_spec(), "activation"
    )


class Block(nn.Module):
    """Linear with a weight parametrization FQ and an output FQ."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)
        parametrize.register_parametrization(
            self.linear, "weight", _weight_fq(granularity={"type": "per_channel"}), unsafe=True
        )
        self.linear_quantize_output_0 = _act_fq()

    def forward(self, x):
        return self.linear_quantize_output_0(self.linear(x))


class Net(nn.Module):
    """Two blocks and an input FQ; built and marked prepared by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.input_quantize_0 = _act_fq()
        self.a = Block()
        self.b = Block()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.b(self.drop(self.a(self.input_quantize_0(x))))


def _prepared(config: QuantizerConfig | None = None) -> tuple[Quantizer, Net]:
    net = Net()
    weights = {
        f"{p}.linear.parametrizations.weight.0": (
            getattr(net, p).linear.parametrizations.weight[0],
            [nn.Linear],
        )
        for p in ("a", "b")
    }
    _lifecycle.apply_weight_axis_defaults(weights, {"input_quantize_0": net.input_quantize_0})
    with torch.no_grad():
        net.eval()
        _lifecycle.set_switches(net, observer=True, fake_quant=False)
        net(torch.randn(4, 8))
        _lifecycle.set_switches(net, observer=False, fake_quant=True)
    _lifecycle.mark_prepared(net)
    quantizer = Quantizer(net, config or QuantizerConfig(execution_mode="eager"))
    return quantizer, net


def _switches(net: nn.Module) -> dict[str, tuple[int, int]]:
    return {
        name: (int(fq.observer_enabled), int(fq.fake_quant_enabled))
        for name, fq in _lifecycle.fake_quantizers(net).items()
    }


def test_prepared_marker() -> None:
    net = nn.Linear(2, 2)
    assert not _lifecycle.is_prepared(net)
    _lifecycle.mark_prepared(net)
    assert _lifecycle.is_prepared(net)
    assert "_coreai_opt_prepared" not in net.state_dict()
    assert net._coreai_opt_prepared.item() is True


def test_axis_defaults_resolve_weights() -> None:
    _, net = _prepared()
    fq = net.a.linear.parametrizations.weight[0]
    assert fq.granularity == PerChannelGranularity(axis=0)
    assert fq.calculate_qparams()[0].shape == (8, 1)


def test_axis_default_errors() -> None:
    fq = _weight_fq(granularity={"type": "per_block", "block_size": 4})
    with pytest.raises(ValueError, match=r"Weight fake-quantize modules with unresolved axis=None"):
        _lifecycle.apply_weight_axis_defaults({"w": (fq, [nn.LayerNorm])})
    with pytest.raises(ValueError, match=r"Conflicting default axes .* axis 1 .* axis 0"):
        _lifecycle.apply_weight_axis_defaults({"w": (fq, [nn.Conv2d, nn.ConvTranspose2d])})
    act = QuantizationComponentFactory.create_fake_quantizer(
        QuantizationSpec(granularity={"type": "per_channel"}), "activation"
    )
    with pytest.raises(ValueError, match=r"Activation fake-quantize modules with unresolved"):
        _lifecycle.apply_weight_axis_defaults({}, {"act": act})
    _lifecycle.apply_weight_axis_defaults({"w": (fq, ["aten.conv_transpose2d.input"])})
    assert fq.granularity == PerBlockGranularity(axis=0, block_size=4)
    explicit = _weight_fq(granularity={"type": "per_channel", "axis": 1})
    _lifecycle.apply_weight_axis_defaults({"e": (explicit, [nn.Linear])})
    assert explicit.granularity.axis == 1


def test_calibration_mode() -> None:
    q, net = _prepared()
    net.train()
    with q.calibration_mode() as m:
        assert m is net and not net.training and not net.a.linear.training
        assert set(_switches(net).values()) == {(1, 0)}
        x = torch.randn(4, 8)
        torch.testing.assert_close(m(x), m(x))
    assert set(_switches(net).values()) == {(0, 1)}
    assert net.training and net.a.training
    with (
        pytest.raises(RuntimeError, match=r"needs a prepared model"),
        q.calibration_mode(nn.Linear(2, 2)),
    ):
        pass


def test_calibrate_runs_batches_with_progress(capsys) -> None:
    q, net = _prepared()
    before = net.input_quantize_0.calculate_qparams()[0].clone()
    data = [torch.randn(4, 8) * 50 for _ in range(3)]
    q.calibrate(data, progress=True)
    assert "calibrating" in capsys.readouterr().err
    assert not torch.equal(net.input_quantize_0.calculate_qparams()[0], before)
    q.calibrate([(torch.randn(4, 8),)], progress=False, max_batches=1)
    assert set(_switches(net).values()) == {(0, 1)}


def test_training_mode_defaults_and_nesting() -> None:
    q, net = _prepared()
    net.eval()
    with q.training_mode():
        assert net.training and net.drop.training
        assert set(_switches(net).values()) == {(1, 1)}
        with pytest.raises(RuntimeError, match=r"nested training_mode"), q.training_mode():
            pass
        net(torch.randn(2, 8)).sum().backward()
        assert net.a.linear.parametrizations.weight.original.grad is not None
    assert not net.training
    assert set(_switches(net).values()) == {(0, 1)}
    with pytest.raises(RuntimeError, match=r"inside a training_mode\(\) context"):
        q.step()
    with q.training_mode(), pytest.warns(UserWarning, match=r"no qat_schedule"):
        q.step()
    assert q.step_count == 0


def test_qat_schedule_state_at_each_step() -> None:
    schedule_a = QATSchedule(enable_observer=1, enable_fake_quant=2, disable_observer=4)
    config = QuantizerConfig(
        global_config=ModuleQuantizerConfig(),
        module_name_configs={"a": ModuleQuantizerConfig(qat_schedule=schedule_a)},
        execution_mode="eager",
    )
    q, net = _prepared(config)
    a_fqs = ["a.linear.parametrizations.weight.0", "a.linear_quantize_output_0"]
    others = [
        "input_quantize_0",
        "b.linear.parametrizations.weight.0",
        "b.linear_quantize_output_0",
    ]
    expected = {0: (0, 0), 1: (1, 0), 2: (1, 1), 3: (1, 1), 4: (0, 1), 5: (0, 1)}
    with q.training_mode():
        for step in range(6):
            state = _switches(net)
            assert q.step_count == step
            for name in a_fqs:
                assert state[name] == expected[step], (step, name)
            for name in others:
                assert state[name] == (1, 1)
            net(torch.randn(2, 8))
            q.step()
    assert set(_switches(net).values()) == {(0, 1)}
    with q.training_mode():  # the count resumes, never reset
        assert q.step_count == 6 and _switches(net)[a_fqs[0]] == (0, 1)
    for call in (q.enable_observer, q.disable_observer, q.enable_fake_quant, q.disable_fake_quant):
        with pytest.raises(RuntimeError, match=r"qat_schedule is configured"):
            call()


def test_enable_disable_model_and_submodule() -> None:
    q, net = _prepared()
    q.enable_observer(net.a)
    state = _switches(net)
    assert state["a.linear_quantize_output_0"] == (1, 1) and state["input_quantize_0"] == (0, 1)
    q.disable_fake_quant()
    assert all(fq == 0 for _, fq in _switches(net).values())
    q.enable_fake_quant()
    q.disable_observer()
    assert set(_switches(net).values()) == {(0, 1)}
    with pytest.raises(ValueError, match=r"not part of the prepared model"):
        q.enable_observer(nn.Linear(2, 2))


def test_shared_fake_quantizer_keeps_first_schedule() -> None:
    net = nn.Module()
    shared = _act_fq()
    net.first = nn.Sequential(shared)
    net.second = nn.Sequential(shared)
    config = QuantizerConfig(
        module_name_configs={
            "first": ModuleQuantizerConfig(qat_schedule=QATSchedule(enable_fake_quant=3)),
            "second": ModuleQuantizerConfig(qat_schedule=QATSchedule(enable_fake_quant=1)),
        }
    )
    with pytest.warns(UserWarning, match=r"different qat_schedule"):
        schedules = _lifecycle.resolve_schedules(net, config)
    assert schedules == {"first.0": QATSchedule(enable_fake_quant=3)}


def test_disabled_fake_quantizers_are_removed_with_warning() -> None:
    net = nn.Module()
    net.lin = nn.Linear(6, 4)
    parametrize.register_parametrization(
        net.lin,
        "weight",
        _weight_fq(granularity={"type": "per_block", "axis": 1, "block_size": 4}),
        unsafe=True,
    )
    net.out_q = QuantizationComponentFactory.create_fake_quantizer(
        QuantizationSpec(granularity={"type": "per_block", "axis": 1, "block_size": 3}),
        "activation",
    )
    net.ok_q = _act_fq()
    net.lin.weight  # noqa: B018  (runs the weight FQ: 6 is not a multiple of 4)
    net.out_q(torch.randn(2, 4))
    net.ok_q(torch.randn(2, 4))
    with pytest.warns(UserWarning, match=r"removed 2 fake-quantizer"):
        removed = _lifecycle.remove_disabled_fake_quantizers(net)
    assert removed == ["lin.parametrizations.weight.0", "out_q"]
    assert not parametrize.is_parametrized(net.lin)
    assert isinstance(net.out_q, nn.Identity) and isinstance(net.ok_q, FakeQuantizeImplBase)


def test_finalize_dispatch_and_errors(tmp_path) -> None:
    q, net = _prepared()
    assert q.finalize(backend=ExportBackend._TORCH) is net
    assert q.finalize(net, backend="_torch") is net
    with pytest.raises(ValueError, match=r"backend='tflite' .* allowed"):
        q.finalize(backend="tflite")
    with pytest.raises(
        ValueError, match=r"only supported with backend=ExportBackend.CoreAI.*backend='coreml'"
    ):
        q.finalize(backend=ExportBackend.CoreML, mmap_dir=str(tmp_path))
    assert q.finalize(backend=ExportBackend.CoreAI) is net
    assert not _lifecycle.fake_quantizers(net)
    graph_q = Quantizer(nn.Sequential(nn.Linear(4, 4)), QuantizerConfig())
    graph_q.prepare((torch.randn(2, 4),))
    with pytest.raises(
        ValueError, match=r"only supported with backend=ExportBackend.CoreAI.*backend='_torch'"
    ):
        graph_q.finalize(backend=ExportBackend._TORCH, mmap_dir=str(tmp_path))
    eager = QuantizerConfig(execution_mode=ExecutionMode.EAGER)
    with pytest.raises(RuntimeError, match=r"finalize\(\) needs a prepared model"):
        Quantizer(nn.Linear(2, 2), eager).finalize(backend=ExportBackend._TORCH)
    with pytest.raises(TypeError, match=r"graph mode needs the torch.fx.GraphModule"):
        Quantizer(nn.Linear(2, 2)).finalize(backend=ExportBackend._TORCH)


def test_eager_op_names_need_a_prepared_model_or_inputs() -> None:
    with pytest.raises(ValueError, match=r"eager-prepared model or example_inputs"):
        Quantizer.get_compressible_op_names(nn.Linear(2, 2), ExecutionMode.EAGER)
    names = Quantizer.get_compressible_op_names(
        nn.Linear(2, 2), ExecutionMode.EAGER, example_inputs=(torch.randn(1, 2),)
    )
    assert names == {"linear"}


def test_constructor_validation() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got dict"):
        Quantizer({})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"config must be a QuantizerConfig"):
        Quantizer(nn.Linear(2, 2), {"global_config": None})  # type: ignore[arg-type]
    q = Quantizer(nn.Linear(2, 2))
    assert q.config == QuantizerConfig() and q.execution_mode is ExecutionMode.GRAPH


def test_state_dict_round_trip_of_prepared_model() -> None:
    _, src = _prepared()
    with _lifecycle.calibration_mode(src):
        src(torch.randn(3, 8) * 4)
    _, dst = _prepared()
    dst.load_state_dict(src.state_dict())
    for key, value in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[key], value, rtol=0, atol=0)
    x = torch.randn(3, 8)
    _lifecycle.set_switches(dst, observer=False, fake_quant=True)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
