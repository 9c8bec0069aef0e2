"""The demo at small scale: prediction agreement with the float model in eager and graph
mode, the Core AI-finalized size and predictions, the table, demo_results.md and the
charts, failed and not finalized runs, and the command line."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console

import coreai_opt.demo.run as demo_run
from coreai_opt.demo import DemoReport, DemoSettings, print_report, run_demo, write_outputs
from coreai_opt.demo.__main__ import main
from coreai_opt.demo.configs import DEMO_CONFIGS, MODES, qat_schedule
from coreai_opt.demo.finalized import FinalizedModel
from coreai_opt.demo.report import (
    ACCURACY_SIZE_PNG,
    RESULTS_MD,
    SENSITIVITY_PNG,
    failure_notes,
    finalize_notes,
    results_table,
    to_markdown,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = ("cnn", "transformer")

# Minimum agreement with the float model's predictions, in both execution modes.
AGREEMENT = {"w8": 0.99, "w8a8": 0.98, "w4a8_qat": 0.97}
ROWS_PER_MODEL = 1 + len(DEMO_CONFIGS) * len(MODES)
# Minimum agreement of the Core AI-finalized model's predictions with the prepared model's.
FINALIZED_AGREEMENT = {"w8": 0.999}
FINALIZED_AGREEMENT_OTHERS = 0.98


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def report() -> DemoReport:
    threads = torch.get_num_threads()
    result = run_demo(DemoSettings.quick(), console=_console(), progress=False)
    assert torch.get_num_threads() == threads  # restored
    return result


def test_no_run_failed(report: DemoReport) -> None:
    assert failure_notes(report) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("key", sorted(AGREEMENT))
def test_agreement_with_the_float_model(
    report: DemoReport, model: str, key: str, mode: str
) -> None:
    row = report.row(model, key, mode)
    assert row.mode == mode
    assert not row.error, row.error
    assert len(row.runs) == len(report.settings.seeds)
    assert min(r.agreement for r in row.runs) >= AGREEMENT[key], row


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", MODELS)
def test_every_row_and_its_numbers(report: DemoReport, model: str, mode: str) -> None:
    float_row = report.row(model, "float")
    (float_run,) = float_row.runs
    assert float_run.accuracy > 0.9
    for cfg in DEMO_CONFIGS:
        row = report.row(model, cfg.key, mode)
        (run,) = row.runs
        assert 0.0 <= run.agreement <= 1.0
        assert run.accuracy > 0.85
        assert 0 < run.weight_bytes < float_run.weight_bytes
        assert run.fake_quantizers > 0
        assert run.prepare_s > 0 and run.eval_s > 0
        assert (run.fit_s > 0) == (cfg.procedure.value != "weights only")
    # the first layer's input channels (1 pixel / 8 features) hold no block of 32
    assert report.row(model, "w4_block", mode).runs[0].dropped == 1
    assert report.row(model, "w8", mode).runs[0].dropped == 0
    # int4 codes are smaller than int8 codes
    w4 = report.row(model, "w4_block", mode).mean("weight_bytes")
    assert w4 < report.row(model, "w8", mode).mean("weight_bytes")


@pytest.mark.parametrize("model", MODELS)
def test_both_modes_store_the_same_weights(report: DemoReport, model: str) -> None:
    """The packed size depends on the config, not on the mode that inserted the FQs."""
    for cfg in DEMO_CONFIGS:
        eager, graph = (report.row(model, cfg.key, mode) for mode in ("eager", "graph"))
        assert eager.mean("weight_bytes") == pytest.approx(graph.mean("weight_bytes"), rel=0.01)
        assert eager.runs[0].dropped == graph.runs[0].dropped


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", MODELS)
def test_finalized_size_and_predictions(report: DemoReport, model: str, mode: str) -> None:
    float_row = report.row(model, "float")
    (float_run,) = float_row.runs
    # the float model's state dict: every tensor at its dtype size, as weight KiB counts it
    assert float_run.finalized_bytes == float_run.weight_bytes
    assert float_run.finalized_agreement == 1.0
    for cfg in DEMO_CONFIGS:
        row = report.row(model, cfg.key, mode)
        assert not row.finalize_error, row.finalize_error
        (run,) = row.runs
        assert 0 < run.finalized_bytes < float_run.finalized_bytes, row
        minimum = FINALIZED_AGREEMENT.get(cfg.key, FINALIZED_AGREEMENT_OTHERS)
        assert run.finalized_agreement >= minimum, row
        assert run.finalize_s > 0
    # finalize packs FP4 two a byte with 1-byte E8M0 scales: the same count as weight KiB
    mxfp4 = report.row(model, "mxfp4", mode).runs[0]
    assert mxfp4.finalized_bytes == mxfp4.weight_bytes
    # but stores int4 codes one a byte (int8 containers): more than the packed count
    w4 = report.row(model, "w4_block", mode).runs[0]
    assert w4.finalized_bytes > w4.weight_bytes


def test_graph_mode_folds_batch_norm_before_finalizing(report: DemoReport) -> None:
    eager, graph = (report.row("cnn", "w8", mode).runs[0] for mode in ("eager", "graph"))
    assert graph.finalized_bytes < eager.finalized_bytes
    eager, graph = (report.row("transformer", "w8", mode).runs[0] for mode in ("eager", "graph"))
    assert graph.finalized_bytes == eager.finalized_bytes  # no batch norm to fold


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
    assert md.count("| CNN |") == ROWS_PER_MODEL
    assert md.count("| Transformer |") == ROWS_PER_MODEL
    for mode in MODES:
        assert f"| CNN | W4A8 QAT | {mode} |" in md
        assert f"| Transformer | MXFP4 Linear | {mode} |" in md
    assert "| weight KiB | finalized KiB |" in md
    assert "- finalized KiB: " in md and "- why finalized KiB differs from weight KiB" in md
    assert "- finalized vs prepared predictions (argmax on the test set): 100 %" in md
    assert "Failed runs" not in md and "Not finalized" not in md and "n/a" not in md
    assert "## Layer sensitivity" in md and "| block1.0 |" in md
    console = _console()
    print_report(written, console)
    text = console.file.getvalue()
    assert "W4 per-block 32" in text and "Keep in float" in text
    assert results_table(report).row_count == 2 * ROWS_PER_MODEL


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
            "--modes",
            "eager",
            "--no-sensitivity",
            "--no-progress",
        ]
    )
    assert status == 0
    assert (out / RESULTS_MD).is_file() and (out / ACCURACY_SIZE_PNG).is_file()
    assert not (out / SENSITIVITY_PNG).exists()
    printed = capsys.readouterr().out
    assert "CNN" in printed and "W8" in printed and "eager" in printed
    md = (out / RESULTS_MD).read_text()
    assert "| CNN | W8 | eager |" in md and "| CNN | W8 | graph |" not in md


def _failing_quantize_once(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom\nsecond line")


def test_a_failed_run_is_shown_not_hidden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(demo_run, "_quantize_once", _failing_quantize_once)
    settings = replace(
        DemoSettings.quick(),
        models=("cnn",),
        configs=("w8",),
        modes=("eager",),
        epoch_scale=0.1,
        sensitivity=False,
    )
    report = run_demo(settings, console=_console(), progress=False)
    (failed,) = report.failures
    assert failed.runs == () and failed.error == "seed 0: RuntimeError: boom second line"
    assert failure_notes(report) == ["[1] CNN W8 (eager): seed 0: RuntimeError: boom second line"]
    md = to_markdown(report)
    assert "| CNN | W8 | eager | failed [1] | failed [1] |" in md
    assert "- [1] CNN W8 (eager): seed 0: RuntimeError: boom second line" in md
    console = _console()
    print_report(write_outputs(report, tmp_path), console)
    assert "RuntimeError: boom" in console.file.getvalue()
    with pytest.raises(RuntimeError, match="boom"):
        run_demo(replace(settings, fail_fast=True), console=_console(), progress=False)


def _refusing_finalize(*args: object, **kwargs: object) -> FinalizedModel:
    raise NotImplementedError("cannot export dynamic\nfake-quantizers")


def _broken_finalize(*args: object, **kwargs: object) -> FinalizedModel:
    raise RuntimeError("finalize bug")


def test_a_config_finalize_refuses_is_shown_as_na(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = replace(
        DemoSettings.quick(),
        models=("cnn",),
        configs=("w8",),
        modes=("graph",),
        epoch_scale=0.1,
        sensitivity=False,
    )
    monkeypatch.setattr(demo_run, "finalize_and_compare", _refusing_finalize)
    report = run_demo(replace(settings, fail_fast=True), console=_console(), progress=False)
    row = report.row("cnn", "w8", "graph")
    assert not row.error and len(row.runs) == 1  # the run itself counts
    reason = "seed 0: NotImplementedError: cannot export dynamic fake-quantizers"
    assert row.finalize_error == reason
    assert report.not_finalized == (row,)
    expected_note = f"[F1] CNN W8 (graph): {reason}"
    assert finalize_notes(report) == [expected_note]
    md = to_markdown(report)
    assert "| n/a [F1] |" in md
    assert "**Not finalized to Core AI**" in md and f"- {expected_note}" in md
    assert "no quantized row was finalized" in md
    console = _console()
    print_report(write_outputs(report, tmp_path), console)  # the chart leaves the bar out
    assert "not finalized to Core AI [F1]" in console.file.getvalue()
    # anything but a refusal is also shown as n/a, and raised with fail_fast
    monkeypatch.setattr(demo_run, "finalize_and_compare", _broken_finalize)
    report = run_demo(settings, console=_console(), progress=False)
    assert report.row("cnn", "w8", "graph").finalize_error.endswith("RuntimeError: finalize bug")
    with pytest.raises(RuntimeError, match="finalize bug"):
        run_demo(replace(settings, fail_fast=True), console=_console(), progress=False)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown model / config keys"):
        run_demo(replace(DemoSettings.quick(), configs=("w3",)), console=_console())
    with pytest.raises(ValueError, match="modes"):
        run_demo(replace(DemoSettings.quick(), modes=("pt2e",)), console=_console())
