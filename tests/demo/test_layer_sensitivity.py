"""coreai_opt.inspection.layer_sensitivity: one row per layer, finite SQNR, the PNG chart."""

from __future__ import annotations

import io
import math

import pytest
import torch
from rich.console import Console
from torch import nn

from coreai_opt.inspection import layer_sensitivity
from coreai_opt.inspection.sensitivity import LayerSensitivity, SensitivityResult
from coreai_opt.quantization import ModuleQuantizerConfig, QuantizerConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Net(nn.Module):
    """conv-bn-relu, conv-relu, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(16, 1, 4, 4, generator=generator),
            torch.randint(0, 10, (16,), generator=generator),
        )
        for _ in range(3)
    ]


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_rows_per_layer_finite_sqnr_and_png(model: nn.Module, batches: list, tmp_path) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    console = _quiet()
    chart = tmp_path / "charts" / "sensitivity.png"
    result = layer_sensitivity(
        model, QuantizerConfig.presets.w4a8(), batches, chart_path=chart, console=console
    )
    assert isinstance(result, SensitivityResult)
    assert [r.layer for r in result.rows] == ["conv1", "conv2", "fc"]
    for row in result.rows:
        assert isinstance(row, LayerSensitivity)
        assert math.isfinite(row.sqnr_db)
        assert 0.0 <= row.agreement <= 1.0
        assert row.agreement_drop == pytest.approx(1.0 - row.agreement)
        assert row.accuracy is not None and row.accuracy_drop is not None
        assert row.accuracy_drop == pytest.approx(result.float_accuracy - row.accuracy)
        assert row.fake_quantizers >= 2  # the weight and at least one activation
        assert row.dropped_fake_quantizers == 0
    assert result.rows[0].module_type == "torch.nn.modules.conv.Conv2d"
    assert result.num_samples == 48
    assert result.execution_mode == "graph"
    assert result.chart_path == chart
    assert chart.read_bytes().startswith(PNG_SIGNATURE)
    # the table was printed; the model was not touched
    text = console.file.getvalue()
    assert "conv1" in text and "SQNR" in text
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_quantizing_one_layer_only_changes_the_output(model: nn.Module, batches: list) -> None:
    """W8 weight-only on one layer: a high but finite SQNR, far above W4A8's."""
    w8 = layer_sensitivity(model, QuantizerConfig.presets.w8(), batches, show=False)
    w4a8 = layer_sensitivity(model, QuantizerConfig.presets.w4a8(), batches, show=False)
    for a, b in zip(w8.rows, w4a8.rows, strict=True):
        assert math.isfinite(a.sqnr_db)
        assert a.sqnr_db > b.sqnr_db
        assert a.fake_quantizers == 1  # weight only, just this layer


def test_layers_argument_module_config_and_ranking(
    model: nn.Module, batches: list, tmp_path
) -> None:
    result = layer_sensitivity(
        model, ModuleQuantizerConfig.presets.w4a8(), batches, layers=["fc", "conv1"], show=False
    )
    assert [r.layer for r in result.rows] == ["fc", "conv1"]
    assert result.chart_path is None
    by_sqnr = result.ranked("sqnr")
    assert by_sqnr[0].sqnr_db <= by_sqnr[1].sqnr_db
    assert result.worst(1, by="sqnr") == by_sqnr[:1]
    assert len(result.worst(2)) == 2
    assert result.layers_to_keep_float(max_agreement_drop=-1.0) == [
        r.layer for r in result.ranked()
    ]
    assert result.layers_to_keep_float(max_agreement_drop=1.0) == []
    assert result.layers_to_keep_float(max_agreement_drop=1.0, min_sqnr_db=math.inf) == [
        r.layer for r in result.ranked()
    ]
    md = result.to_markdown()
    assert md.count("\n") == 4 and "| fc |" in md
    path = result.save_chart(tmp_path / "again.png", title="t")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="by="):
        result.ranked("size")


def test_layers_the_config_skips_are_not_analysed(model: nn.Module, batches: list) -> None:
    config = QuantizerConfig.presets.w8().without("conv2")
    result = layer_sensitivity(model, config, batches, show=False)
    assert [r.layer for r in result.rows] == ["conv1", "fc"]
    with pytest.raises(ValueError, match="not quantized"):
        layer_sensitivity(model, config, batches, layers=["conv2"], show=False)
    with pytest.raises(ValueError, match="not a submodule"):
        layer_sensitivity(model, config, batches, layers=["nope"], show=False)


def test_inputs_without_targets_and_bad_arguments(model: nn.Module, batches: list) -> None:
    inputs = [x for x, _ in batches]
    result = layer_sensitivity(model, None, inputs, layers=["fc"], show=False)
    (row,) = result.rows
    assert result.float_accuracy is None and row.accuracy is None and row.accuracy_drop is None
    assert "accuracy" not in result.to_markdown()
    with pytest.raises(ValueError, match="empty"):
        layer_sensitivity(model, None, [], show=False)
    with pytest.raises(TypeError, match="config"):
        layer_sensitivity(model, "w8", inputs, show=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="batch"):
        layer_sensitivity(model, None, [(inputs[0], None, None)], show=False)


def test_block_size_drops_are_counted(batches: list) -> None:
    """Per-block 32 on a conv reading 1 channel: prepare drops its FQ; the row says so."""
    torch.manual_seed(0)
    model = Net().eval()
    result = layer_sensitivity(
        model,
        QuantizerConfig.presets.w4_per_block(block_size=32),
        batches,
        layers=["conv1"],
        show=False,
    )
    (row,) = result.rows
    assert row.dropped_fake_quantizers == 1
    assert row.fake_quantizers == 0
    # nothing is quantized: the output equals the float model's up to the rounding of the
    # conv-bn QAT form (conv(x, w * f) / f), which prepare keeps
    assert row.sqnr_db > 100.0
    assert row.agreement == 1.0
