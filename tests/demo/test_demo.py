"""The demo at small scale: prediction agreement with the float model in graph mode, the
table, demo_results.md and the charts, and the command line."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console

from coreai_opt.demo import DemoReport, DemoSettings, print_report, run_demo, write_outputs
from coreai_opt.demo.__main__ import main
from coreai_opt.demo.configs import DEMO_CONFIGS, qat_schedule
from coreai_opt.demo.report import ACCURACY_SIZE_PNG, RESULTS_MD, SENSITIVITY_PNG, results_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = ("cnn", "transformer")

# Minimum agreement with the float model's predictions (graph mode).
AGREEMENT = {"w8": 0.99, "w8a8": 0.98, "w4a8_qat": 0.97}


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def report() -> DemoReport:
    threads = torch.get_num_threads()
    result = run_demo(DemoSettings.quick(), console=_console(), progress=False)
    assert torch.get_num_threads() == threads  # restored
    return result


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("key", sorted(AGREEMENT))
def test_agreement_with_the_float_model(report: DemoReport, model: str, key: str) -> None:
    row = report.row(model, key)
    assert row.mode == "graph"
    assert min(r.agreement for r in row.runs) >= AGREEMENT[key], row


@pytest.mark.parametrize("model", MODELS)
def test_every_row_and_its_numbers(report: DemoReport, model: str) -> None:
    float_row = report.row(model, "float")
    (float_run,) = float_row.runs
    assert float_run.accuracy > 0.9
    for cfg in DEMO_CONFIGS:
        row = report.row(model, cfg.key)
        (run,) = row.runs
        assert 0.0 <= run.agreement <= 1.0
        assert run.accuracy > 0.85
        assert 0 < run.weight_bytes < float_run.weight_bytes
        assert run.fake_quantizers > 0
        assert run.prepare_s > 0 and run.eval_s > 0
        assert (run.fit_s > 0) == (cfg.procedure.value != "weights only")
    # the first layer's input channels (1 pixel / 8 features) hold no block of 32
    assert report.row(model, "w4_block").runs[0].dropped == 1
    assert report.row(model, "w8").runs[0].dropped == 0
    # int4 codes are smaller than int8 codes
    w4 = report.row(model, "w4_block").mean("weight_bytes")
    assert w4 < report.row(model, "w8").mean("weight_bytes")


def test_sensitivity_and_keep_float(report: DemoReport) -> None:
    result = report.sensitivity
    assert result is not None
    assert [r.layer for r in result.rows] == ["block1.0", "block2.0", "block3.0", "fc1", "fc2"]
    assert report.keep_float and set(report.keep_float) <= {r.layer for r in result.rows}
    assert report.keep_float_rule


def test_outputs_table_and_markdown(report: DemoReport, tmp_path: Path) -> None:
    written = write_outputs(report, tmp_path / "out")
    names = {Path(f).name for f in written.files}
    assert names == {RESULTS_MD, ACCURACY_SIZE_PNG, SENSITIVITY_PNG}
    for png in (ACCURACY_SIZE_PNG, SENSITIVITY_PNG):
        assert (tmp_path / "out" / png).read_bytes().startswith(PNG_SIGNATURE)
    md = (tmp_path / "out" / RESULTS_MD).read_text()
    assert md.count("| CNN |") == 1 + len(DEMO_CONFIGS)
    assert md.count("| Transformer |") == 1 + len(DEMO_CONFIGS)
    assert "| CNN | W4A8 QAT | graph |" in md
    assert "## Layer sensitivity" in md and "| block1.0 |" in md
    console = _console()
    print_report(written, console)
    text = console.file.getvalue()
    assert "W4 per-block 32" in text and "Keep in float" in text
    assert results_table(report).row_count == 2 * (1 + len(DEMO_CONFIGS))


def test_qat_schedule_order() -> None:
    schedule = qat_schedule(46)
    assert schedule.enable_observer == 0
    assert 0 < schedule.enable_fake_quant < schedule.disable_observer < 46
    assert qat_schedule(1).disable_observer > qat_schedule(1).enable_fake_quant


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    status = main(
        [
            "--quick",
            "--out",
            str(out),
            "--models",
            "cnn",
            "--configs",
            "w8",
            "--no-sensitivity",
            "--no-progress",
        ]
    )
    assert status == 0
    assert (out / RESULTS_MD).is_file() and (out / ACCURACY_SIZE_PNG).is_file()
    assert not (out / SENSITIVITY_PNG).exists()
    printed = capsys.readouterr().out
    assert "CNN" in printed and "W8" in printed


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown model / config keys"):
        run_demo(replace(DemoSettings.quick(), configs=("w3",)), console=_console())
