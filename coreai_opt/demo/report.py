"""Rendering of the demo's report: the rich table, ``demo_results.md`` and the PNG charts.

Charts are drawn on matplotlib's Agg canvas (no pyplot, no display needed).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from coreai_opt.demo.run import DemoReport, DemoRow

__all__ = [
    "ACCURACY_SIZE_PNG",
    "RESULTS_MD",
    "SENSITIVITY_PNG",
    "failure_notes",
    "finalize_notes",
    "finalized_agreement_note",
    "print_report",
    "results_table",
    "save_accuracy_size_chart",
    "to_markdown",
    "write_outputs",
]

RESULTS_MD = "demo_results.md"
ACCURACY_SIZE_PNG = "accuracy_size.png"
SENSITIVITY_PNG = "sensitivity.png"

COLUMNS = (
    "model",
    "config",
    "mode",
    "accuracy %",
    "agreement %",
    "weight KiB",
    "finalized KiB",
    "FQs dropped",
    "prepare s",
    "calib / train s",
    "eval s",
)


def _pm(row: DemoRow, name: str, scale: float = 100.0, digits: int = 2) -> str:
    mean, sd = row.mean(name) * scale, row.sd(name) * scale
    if len(row.runs) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _float_bytes(report: DemoReport, model: str, name: str = "weight_bytes") -> float:
    for row in report.rows:
        if row.model == model and row.key == "float":
            return row.mean(name)
    return math.nan


def _failure_note(report: DemoReport, row: DemoRow) -> str:
    """``"failed [n]"``: the row's number in :func:`failure_notes`."""
    return f"failed [{report.failures.index(row) + 1}]"


def failure_notes(report: DemoReport) -> list[str]:
    """One line per failed row: ``[n] model config (mode): the error``."""
    return [
        f"[{index}] {row.model} {row.config} ({row.mode}): {row.error}"
        for index, row in enumerate(report.failures, start=1)
    ]


def _finalize_label(report: DemoReport, row: DemoRow) -> str:
    """``"F<n>"``: the row's number in :func:`finalize_notes`."""
    return f"F{report.not_finalized.index(row) + 1}"


def finalize_notes(report: DemoReport) -> list[str]:
    """One line per row that ran but was not finalized to Core AI:
    ``[Fn] model config (mode): why``."""
    return [
        f"[{_finalize_label(report, row)}] {row.model} {row.config} ({row.mode}): "
        f"{row.finalize_error}"
        for row in report.not_finalized
    ]


def _finalized_rows(report: DemoReport) -> list[DemoRow]:
    """The quantized rows that ran and were finalized."""
    return [
        r
        for r in report.rows
        if r.key != "float" and r.runs and not r.error and not r.finalize_error
    ]


def _logits_differ(report: DemoReport) -> bool:
    """True when some finalized row's logits differ from its prepared model's."""
    return any(run.finalized_max_abs_diff != 0.0 for r in _finalized_rows(report) for run in r.runs)


def finalized_agreement_note(report: DemoReport) -> str:
    """How often the finalized copies predict what the prepared models predict (the
    lowest agreement over the seeds per row; rows below 100 % are named) and which rows'
    logits differ at all (with the largest absolute difference)."""
    rows = _finalized_rows(report)
    if not rows:
        return "no quantized row was finalized"
    lowest = {id(r): min(run.finalized_agreement for run in r.runs) for r in rows}
    below = [r for r in rows if lowest[id(r)] < 1.0]
    runs = sum(len(r.runs) for r in rows)
    images = report.environment.get("test images", "?")
    if not below:
        head = (
            f"100 % in every one of the {len(rows)} finalized quantized rows "
            f"({runs} runs, {images} test images each)"
        )
    else:
        head = (
            f"100 % in {len(rows) - len(below)} of the {len(rows)} finalized quantized rows "
            f"({images} test images per run); lower (worst seed): "
            + ", ".join(
                f"{r.model} {r.config} ({r.mode}) {100 * lowest[id(r)]:.2f} %" for r in below
            )
        )
    largest = {id(r): max(run.finalized_max_abs_diff for run in r.runs) for r in rows}
    inexact = [r for r in rows if largest[id(r)] != 0.0]
    if not inexact:
        return f"{head}; the logits are equal bit for bit in every row"
    return (
        f"{head}; the logits are equal bit for bit except in (largest absolute difference) "
        + ", ".join(f"{r.model} {r.config} ({r.mode}) {largest[id(r)]:.1e}" for r in inexact)
    )


def _finalized_cell(report: DemoReport, row: DemoRow) -> str:
    if row.finalize_error:
        return f"n/a [{_finalize_label(report, row)}]"
    size = row.mean("finalized_bytes")
    if row.key == "float":
        return f"{size / 1024:.1f}"
    ratio = _float_bytes(report, row.model, "finalized_bytes") / size if size else math.nan
    return f"{size / 1024:.1f} ({ratio:.1f}x)"


def _cells(report: DemoReport, row: DemoRow) -> list[str]:
    if row.error:
        failed = _failure_note(report, row)
        return [row.model, row.config, row.mode, failed, failed, *["-"] * (len(COLUMNS) - 5)]
    size = row.mean("weight_bytes")
    ratio = _float_bytes(report, row.model) / size if size else math.nan
    is_float = row.key == "float"
    fit = row.mean("fit_s")
    return [
        row.model,
        row.config,
        row.mode,
        _pm(row, "accuracy"),
        "100" if is_float else _pm(row, "agreement"),
        f"{size / 1024:.1f}" if is_float else f"{size / 1024:.1f} ({ratio:.1f}x)",
        _finalized_cell(report, row),
        "-" if is_float else str(max(r.dropped for r in row.runs)),
        "-" if is_float else f"{row.mean('prepare_s'):.2f}",
        "-" if fit == 0.0 else f"{fit:.2f}",
        f"{row.mean('eval_s'):.3f}",
    ]


def results_table(report: DemoReport) -> Table:
    """The results as a rich table (one section per model)."""
    seeds = len(report.settings.seeds)
    table = Table(
        title=f"coreai_opt demo: handwritten digits, {seeds} seed{'s' if seeds > 1 else ''}",
        caption="accuracy / agreement: mean ± sd over seeds; agreement = same prediction as "
        "the float model; weight KiB: packed weights + scales + unquantized tensors "
        "(bits_per_weight); finalized KiB: the state dict of the Core AI-finalized copy "
        "(x: smaller than float)",
    )
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if index < 3 else "right")
    previous = None
    for row in report.rows:
        if previous is not None and row.model != previous:
            table.add_section()
        previous = row.model
        table.add_row(*_cells(report, row))
    return table


def print_report(report: DemoReport, console: Console | None = None) -> None:
    """Print the results table, the sensitivity table and the keep-in-float advice."""
    console = console or Console()
    console.print(results_table(report))
    for note in failure_notes(report):
        console.print(f"[bold red]{escape(note)}[/]")
    for note in finalize_notes(report):
        console.print(f"[yellow]not finalized to Core AI {escape(note)}[/]")
    console.print(f"Finalized vs prepared predictions: {escape(finalized_agreement_note(report))}")
    if report.sensitivity is not None:
        console.print(
            report.sensitivity.to_rich_table(
                title=f"Layer sensitivity: {report.sensitivity_model}, "
                f"{report.sensitivity_config}, one layer at a time"
            )
        )
        console.print(
            f"Keep in float ({report.keep_float_rule}): [bold]{', '.join(report.keep_float)}[/]"
        )
    if report.files:
        console.print("Wrote " + ", ".join(report.files))
    console.print(
        f"Total {report.seconds:.1f} s (torch {report.environment.get('torch', '?')}, "
        f"threads: {report.environment.get('threads', '?')})"
    )


def to_markdown(report: DemoReport) -> str:
    """``demo_results.md``: settings, the results table, the sensitivity table, charts."""
    s = report.settings
    lines = [
        "# coreai_opt demo results",
        "",
        "Generated by `python -m coreai_opt.demo` (`make demo`). Data: scikit-learn's bundled "
        "handwritten digits (8x8, 10 classes), "
        f"{report.environment.get('train images', '?')} training / "
        f"{report.environment.get('test images', '?')} test images. Every quantized config "
        f"runs in {' and '.join(f'`{m}`' for m in s.modes)} mode "
        '(`QuantizerConfig(..., execution_mode="eager")`: the model stays an `nn.Module`, '
        "prepared in place on a deep copy of the float model, with fake-quantizer submodules "
        "and weight parametrizations; `graph`, the default: `torch.export` and fake-quantizers "
        "in the FX graph).",
        "",
        f"Seeds: {', '.join(map(str, s.seeds))} (each trains the float models anew, then "
        "quantizes them; calibration batches and QAT shuffling follow the seed). "
        f"Calibration: {s.calibration_batches} batches of {s.batch_size}. "
        f"QAT: {s.qat_epochs} epoch(s), Adam lr {s.qat_lr:g}, distillation from the float model, "
        "`quantizer.step()` per batch with a `QATSchedule` (fake-quant from 10% of the steps, "
        "observers off for the last 25%). "
        f"torch {report.environment.get('torch', '?')}, "
        f"threads: {report.environment.get('threads', '?')}; total {report.seconds:.0f} s.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" if i < 3 else "---:" for i in range(len(COLUMNS))) + " |",
    ]
    lines += ["| " + " | ".join(_cells(report, row)) + " |" for row in report.rows]
    notes = failure_notes(report)
    if notes:
        lines += ["", "**Failed runs** (the row is left out of the numbers):", ""]
        lines += [f"- {note}" for note in notes]
    notes = finalize_notes(report)
    if notes:
        lines += ["", "**Not finalized to Core AI** (finalized KiB n/a):", ""]
        lines += [f"- {note}" for note in notes]
    finalize_s = sum(run.finalize_s for row in report.rows for run in row.runs)
    lines += [
        "",
        "- accuracy / agreement: mean ± sample sd over the seeds, in percent; agreement is the "
        "share of test images whose prediction equals the float model's.",
        "- weight KiB: quantized tensors packed (n_bits per weight) plus one scale per block at "
        "its dtype (E8M0: 1 byte, else float32) plus zero points (none: the schemes are "
        "symmetric); every other parameter and buffer at its dtype size. In parentheses: how "
        "many times smaller than float.",
        "- finalized KiB: what the Core AI-finalized model stores. After each quantized "
        "run's evaluation a deep copy of the prepared model goes through "
        "`quantizer.finalize(backend=ExportBackend.CoreAI)` (graph: a GraphModule with "
        "`<weight>_quantized` / `_scale` / `_zero_point` buffers; eager: dequantize "
        "parametrizations holding them) and the `nbytes` of its state-dict tensors are "
        "summed: codes, scales, zero points, activation qparams and the tensors left "
        "float; the dense weights' zero-size placeholders count 0, a storage shared by "
        "several names once, the non-persistent prepared marker not at all. Float rows: "
        "the float model's state dict. In parentheses: how many times smaller than float. "
        f"Not in the seconds columns ({finalize_s:.1f} s in all, deep copies and the "
        "finalized models' test-set passes included).",
        "- why finalized KiB differs from weight KiB: (1) finalize does not pack int4: "
        "W4 codes are stored one per byte in int8 containers (`input_dtype=torch.int4` "
        "gives the converter the logical width), so the W4 rows store about as much as W8 "
        "(per-block W4 more: a float32 scale and an int8 zero point per block of 32); only "
        "FP4 codes are packed two a byte (uint8, with 1-byte E8M0 scales), so the MXFP4 "
        "rows match weight KiB exactly. (2) Integer weights keep an int8 zero point per "
        "scale although the schemes are symmetric (weight KiB counts none). (3) Activation "
        "qparams (a float32 scale, plus an int8 zero point for int8) are stored; eager "
        "mode holds each twice, in its quantize and its dequantize module. (4) Graph mode "
        "folds batch norm into the quantized convs before converting: the BN weights, "
        "biases, running statistics and int64 `num_batches_tracked` give way to one "
        "float32 bias per conv, so graph CNN rows store less than eager ones (not MXFP4, "
        "which quantizes only Linear layers; the transformer has no batch norm).",
        "- finalized vs prepared predictions (argmax on the test set): "
        + finalized_agreement_note(report)
        + (
            ". Where logits differ, the finalized graph runs the batch-norm-folded conv and "
            "the prepared one the conv followed by batch norm, which round differently; "
            "where activations are quantized too, a value that such a rounding difference "
            "moves across a rounding boundary changes by a whole quantization step."
            if _logits_differ(report)
            else "."
        ),
        "- FQs dropped: fake-quantizers prepare removed because a block of 32 does not divide "
        "the tensor's input channels (the CNN's first conv reads 1 channel, the transformer's "
        "token embedding 8 features); those weights stay float.",
        "- seconds: prepare (graph: torch.export + fake-quantizer insertion; eager: a "
        "recording forward + fake-quantizer attachment; both then run one forward of the "
        "example batch to initialise the qparams), calibration or QAT (float rows: training), "
        "and evaluation of the test set; means over the seeds.",
        "",
        "## Configs",
        "",
        "| config | what is quantized | after prepare |",
        "| --- | --- | --- |",
    ]
    seen = set()
    for row in report.rows:
        if row.key not in seen:
            seen.add(row.key)
            lines.append(f"| {row.config} | {row.description} | {row.procedure} |")
    lines += ["", f"![accuracy and size per config]({ACCURACY_SIZE_PNG})", ""]
    if report.sensitivity is not None:
        lines += [
            f"## Layer sensitivity ({report.sensitivity_model}, {report.sensitivity_config})",
            "",
            "Each layer quantized alone (`coreai_opt.inspection.layer_sensitivity`, graph mode, "
            "`module_name_configs` naming only that layer; a conv's config covers its "
            "conv-bn-relu pattern); SQNR of the logits against the float model, and the drops "
            "in agreement and accuracy.",
            "",
            report.sensitivity.to_markdown().rstrip("\n"),
            "",
            f"Keep in float ({report.keep_float_rule}): "
            + ", ".join(f"`{name}`" for name in report.keep_float),
            "",
            f"![per-layer sensitivity]({SENSITIVITY_PNG})",
            "",
        ]
    return "\n".join(lines)


def _chart_label(row: DemoRow) -> str:
    return row.config if row.key == "float" else f"{row.config} ({row.mode})"


def save_accuracy_size_chart(report: DemoReport, path: str | Path) -> Path:
    """Grouped bars per (config, mode): accuracy (with sd error bars), and weight KiB
    (solid) next to finalized KiB (hatched), one colour per model; failed rows and rows
    that were not finalized are left empty."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r for r in report.rows if not r.error and r.runs]
    models = list(dict.fromkeys(r.model for r in report.rows))
    labels = list(dict.fromkeys(_chart_label(r) for r in report.rows))
    by_key = {(r.model, _chart_label(r)): r for r in rows}
    fig = Figure(figsize=(max(11.0, 0.9 * len(labels) + 2.0), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_acc, ax_size = fig.subplots(1, 2)
    width = 0.8 / max(len(models), 1)
    half = width / 2
    xs = list(range(len(labels)))
    lowest = 100.0
    for index, model in enumerate(models):
        colour = f"C{index}"
        offset = (index - (len(models) - 1) / 2) * width
        series = [by_key.get((model, label)) for label in labels]
        acc = [100 * r.mean("accuracy") if r else math.nan for r in series]
        err = [100 * r.sd("accuracy") if r else 0.0 for r in series]
        size = [r.mean("weight_bytes") / 1024 if r else math.nan for r in series]
        final = [
            r.mean("finalized_bytes") / 1024 if r and not r.finalize_error else math.nan
            for r in series
        ]
        positions = [x + offset for x in xs]
        ax_acc.bar(positions, acc, width, yerr=err, capsize=2, label=model, color=colour)
        ax_size.bar(
            [p - half / 2 for p in positions], size, half, label=f"{model} packed", color=colour
        )
        ax_size.bar(
            [p + half / 2 for p in positions],
            final,
            half,
            label=f"{model} finalized",
            color="none",
            edgecolor=colour,
            hatch="////",
        )
        lowest = min([lowest, *(a - e for a, e in zip(acc, err, strict=True) if not math.isnan(a))])
    ax_acc.set_ylim(max(0.0, math.floor(lowest) - 2.0), 100.0)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("accuracy (mean ± sd over seeds)")
    ax_size.set_ylabel("weight storage (KiB)")
    ax_size.set_title("packed (bits_per_weight) and Core AI-finalized state")
    ax_size.legend(fontsize=8)
    for ax in (ax_acc, ax_size):
        ax.set_xticks(xs, labels, rotation=45, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    modes = " and ".join(dict.fromkeys(r.mode for r in report.rows if r.key != "float"))
    fig.suptitle(f"coreai_opt demo ({modes} mode): accuracy and size per config")
    fig.savefig(path, dpi=120)
    return path


def write_outputs(report: DemoReport, out_dir: str | Path) -> DemoReport:
    """Write ``demo_results.md`` and the PNG charts to *out_dir* (created if needed);
    returns the report with :attr:`DemoReport.files` set."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [save_accuracy_size_chart(report, out / ACCURACY_SIZE_PNG)]
    if report.sensitivity is not None:
        files.append(
            report.sensitivity.save_chart(
                out / SENSITIVITY_PNG,
                title=f"{report.sensitivity_model}, {report.sensitivity_config}: one layer "
                "quantized at a time",
            )
        )
    md = out / RESULTS_MD
    md.write_text(to_markdown(report) + "\n")
    files.insert(0, md)
    return replace(report, files=tuple(str(f) for f in files))
