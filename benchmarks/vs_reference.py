"""Side by side with the reference (coreai-opt 0.3.0 over torchao), both modes, as a black box.

Run with this project's interpreter: ``.venv/bin/python benchmarks/vs_reference.py``.

1. Builds (or reuses) a separate virtual environment for the reference, ``.venv-reference``
   at the repository root (never ``.venv``): ``python3 -m venv``, then pip installs
   ``torch==2.13.0`` (exact: the local index serves a CPU build), ``torchao`` (0.18.0 if the
   index lists it, else the newest listed) and ``coreai-opt==0.3.0``. ``--fresh`` rebuilds it.
2. Trains the two benchmark models (bench_models.py: SmallCNN with conv-bn, PreLNBlock) briefly
   on scikit-learn's digits shaped for each, in this process, and writes the data and float
   weights to a temporary directory.
3. Runs benchmarks/vs_reference_worker.py in both environments over the same files, once
   per execution mode (``--modes graph,eager``, the default; ``QuantizerConfig(
   execution_mode=...)`` on both sides): W8, W4 per-block 32, W8A8 calibrated
   (calibration_mode over 4 batches), one W8A8 QAT epoch (training_mode + step). Only the
   reference's documented public API is used.
4. Compares per mode: accuracy and agreement with the float model, the max qparam difference
   per matching FQ (graph: weights by parameter name, activations by producer and consumer
   ops; eager: by the FQ's submodule path, which both libraries build from the module and op
   names), FQ count and placement differences, in eager mode the state_dict keys (model keys
   and each FQ's own keys), prepare time, forward overhead (prepared / float), QAT step
   time and the bytes a QAT step saves for backward. Prints one report per mode and
   appends it to benchmarks/RESULTS.md (unless ``--no-save``).

Timings are medians (prepare over ``--prepare-repeats``, forward over ``--rounds``
interleaved rounds); the header records the load average before and after, since other work
on the machine shows up in them. Never part of ``make test``.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.util
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_models import PreLNBlock, SmallCNN  # noqa: E402
from vs_reference_worker import CONFIGS, MODES, batch_size, model_inputs, readout  # noqa: E402

RESULTS = HERE / "RESULTS.md"
DEFAULT_VENV = REPO / ".venv-reference"
TORCH_PIN = "torch==2.13.0"
REFERENCE_PIN = "coreai-opt==0.3.0"
PREFERRED_TORCHAO = "0.18.0"
MODELS = ("SmallCNN", "PreLNBlock")


class InstallError(RuntimeError):
    """A step of building the reference's environment failed."""


def log(msg: str) -> None:
    """Progress line with the elapsed time."""
    print(f"[vs_reference {time.perf_counter() - START:6.1f}s] {msg}", flush=True)


START = time.perf_counter()


def run_checked(cmd: list[str], what: str) -> str:
    """Runs a command; on failure raises InstallError naming the command and its output.

    It runs outside the repository, so that ``python -c`` / ``-m`` cannot import this
    project's ``coreai_opt`` from the current directory.
    """
    log(f"{what}: {' '.join(cmd)}")
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, cwd=tempfile.gettempdir()
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise InstallError(
            f"{what} failed (exit {proc.returncode})\ncommand: {' '.join(cmd)}\n{tail}"
        )
    return proc.stdout


def pick_torchao(pip: list[str]) -> str:
    """torchao 0.18.0 if the index lists it, else the newest listed version."""
    out = run_checked([*pip, "index", "versions", "torchao"], "listing torchao versions")
    match = re.search(r"Available versions:\s*(.+)", out)
    if not match:
        raise InstallError(f"could not read torchao versions from:\n{out}")
    versions = [v.strip() for v in match.group(1).split(",")]
    return PREFERRED_TORCHAO if PREFERRED_TORCHAO in versions else versions[0]


def ensure_venv(venv: Path, fresh: bool) -> Path:
    """Creates (or reuses) the reference's environment and returns its python."""
    if venv.resolve() == (REPO / ".venv").resolve():
        raise InstallError("refusing to use the project's .venv for the reference")
    python = venv / "bin" / "python"
    marker = venv / ".vs_reference_ok"
    if fresh and venv.exists():
        log(f"--fresh: removing {venv}")
        shutil.rmtree(venv)
    if marker.exists() and python.exists():
        log(f"reusing {venv} ({marker.read_text().strip()})")
        return python
    run_checked(["python3", "-m", "venv", str(venv)], "creating the virtual environment")
    pip = [str(python), "-m", "pip"]
    run_checked([*pip, "install", TORCH_PIN], f"installing {TORCH_PIN}")
    torchao = f"torchao=={pick_torchao(pip)}"
    run_checked([*pip, "install", TORCH_PIN, torchao], f"installing {torchao}")
    run_checked([*pip, "install", TORCH_PIN, torchao, REFERENCE_PIN], f"installing {REFERENCE_PIN}")
    versions = run_checked(
        [
            str(python),
            "-I",
            "-c",
            "import torch, torchao, coreai_opt; from importlib.metadata import version; "
            "print(f'torch {torch.__version__}, torchao {torchao.__version__}, "
            'coreai-opt {version("coreai-opt")}\')',
        ],
        "importing the reference",
    ).strip()
    marker.write_text(versions + "\n")
    log(f"reference environment ready: {versions}")
    return python


def load_digits_split(seed: int) -> dict[str, torch.Tensor]:
    """scikit-learn's digits as N x 64 floats in [0, 1], an 80/20 split, fixed embeddings.

    Read from the CSV that scikit-learn ships, without importing scikit-learn: its own
    OpenMP runtime would slow torch down in this process.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-learn is needed for its bundled digits (in the project .venv)")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(csv, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = torch.from_numpy(table[:, :-1]) / 16.0
    y = torch.from_numpy(table[:, -1]).long()
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    n_train = int(0.8 * len(x))
    n_test = (len(x) - n_train) // 32 * 32  # whole batches: the models are exported static
    tr, te = order[:n_train], order[n_train : n_train + n_test]
    return {
        "train_x": x[tr].contiguous(),
        "train_y": y[tr].contiguous(),
        "test_x": x[te].contiguous(),
        "test_y": y[te].contiguous(),
        "embed_value": torch.randn(256, generator=gen),
        "embed_position": 0.5 * torch.randn(64, 256, generator=gen),
    }


def train_float(name: str, data: dict[str, torch.Tensor], epochs: int, seed: int) -> nn.Module:
    """Adam for a few epochs on the training split; returns the model in eval mode."""
    torch.manual_seed(seed)
    model = SmallCNN() if name == "SmallCNN" else PreLNBlock()
    x, y = model_inputs(name, data, "train"), data["train_y"]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bs = batch_size(name)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - bs + 1, bs):
            idx = order[i : i + bs]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(readout(name, model(x[idx])), y[idx]).backward()
            opt.step()
    return model.eval()


def run_worker(
    python: Path, side: str, work: Path, args: argparse.Namespace, mode: str
) -> dict[str, Any]:
    """Runs the worker in one environment and mode; the repository is on the path only for
    ours."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if side == "ours":
        env["PYTHONPATH"] = str(REPO)
    cmd = [
        str(python),
        str(HERE / "vs_reference_worker.py"),
        "--work",
        str(work),
        "--side",
        side,
        "--threads",
        str(args.threads),
        "--rounds",
        str(args.rounds),
        "--prepare-repeats",
        str(args.prepare_repeats),
        "--mode",
        mode,
    ]
    log(f"running the {side} side, {mode} mode: {python}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=work, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the {side} worker failed (exit {proc.returncode}): {' '.join(cmd)}")
    log(f"{side} side, {mode} mode done in {time.perf_counter() - t0:.0f} s")
    return torch.load(work / f"{side}-{mode}.pt", weights_only=False)  # written by us


# ----------------------------------------------------------------------------------------
# comparison


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (logits.argmax(1) == y).float().mean().item()


def agreement(logits: torch.Tensor, ref: torch.Tensor) -> float:
    """Percent of samples whose argmax equals the float model's."""
    return 100.0 * (logits.argmax(1) == ref.argmax(1)).float().mean().item()


def qparam_diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, str]:
    """(max |scale diff|, max relative scale diff, note) between two FQ rows."""
    sa, sb = a["scale"], b["scale"]
    if sa is None or sb is None:
        return float("nan"), float("nan"), "no qparams on one side"
    if sa.numel() != sb.numel():
        return float("nan"), float("nan"), f"scale shapes {list(sa.shape)} vs {list(sb.shape)}"
    sa, sb = sa.reshape(-1).float(), sb.reshape(-1).float()
    d = (sa - sb).abs()
    rel = (d / sb.abs().clamp_min(1e-30)).max().item()
    note = ""
    za, zb = a["zero_point"], b["zero_point"]
    if za is not None and zb is not None and za.numel() == zb.numel():
        zd = (za.reshape(-1).long() - zb.reshape(-1).long()).abs().max().item()
        if zd:
            note = f"zero_point differs by up to {zd}"
    elif (za is None) != (zb is None):
        note = "zero_point on one side only"
    return d.max().item(), rel, note


def match_fqs(
    ours: list[dict[str, Any]], ref: list[dict[str, Any]]
) -> tuple[list[tuple[dict, dict]], list[dict], list[dict]]:
    """Pairs FQs by key, then by weight slot, then activations by producer when unique."""
    pairs = []
    ref_left = list(ref)
    ours_left = []
    for o in ours:
        hit = next((r for r in ref_left if r["key"] == o["key"]), None)
        if hit is None:
            ours_left.append(o)
        else:
            pairs.append((o, hit))
            ref_left.remove(hit)
    by_slot = []
    for o in ours_left:
        hit = next((r for r in ref_left if o["slot"] and r["slot"] == o["slot"]), None)
        if hit is None:
            by_slot.append(o)
        else:
            pairs.append((o, hit))
            ref_left.remove(hit)
    still = []
    for o in by_slot:
        cands = [
            r
            for r in ref_left
            if o["kind"] == r["kind"] == "activation" and r["producer"] == o["producer"]
        ]
        if len(cands) == 1:
            pairs.append((o, cands[0]))
            ref_left.remove(cands[0])
        else:
            still.append(o)
    return pairs, still, ref_left


def counts(fqs: list[dict[str, Any]]) -> str:
    """'nodes (modules)': FQ call_module nodes and distinct FQ modules."""
    return f"{len(fqs)} ({len({f['module'] for f in fqs})})"


def shared(fq: dict[str, Any]) -> str:
    """' = <first node>' when this FQ node calls a module an earlier node already calls."""
    return f" (= {fq['module']})" if fq["module"] != fq["name"] else ""


def fmt(v: float, digits: int = 3) -> str:
    """A float for the tables ('-' for NaN)."""
    return "-" if v != v else f"{v:.{digits}g}"


def _fq_prefix(key: str, names: list[str]) -> str | None:
    """The longest FQ name *key* lies under, or None."""
    hits = [n for n in names if key.startswith(f"{n}.")]
    return max(hits, key=len) if hits else None


def state_key_lines(o: dict[str, Any], r: dict[str, Any]) -> list[str]:
    """Eager state_dict keys: model keys outside the FQs (same parametrized weights?) and
    each side's per-FQ key suffixes (what an FQ stores)."""
    lines = []
    o_names = [f["name"] for f in o["fqs_after_prepare"]]
    r_names = [f["name"] for f in r["fqs_after_prepare"]]
    o_model = {k for k in o["state_keys"] if _fq_prefix(k, o_names) is None}
    r_model = {k for k in r["state_keys"] if _fq_prefix(k, r_names) is None}
    if o_model == r_model:
        lines.append(f"- state_dict keys outside the FQs: the same {len(o_model)} on both sides.")
    else:
        lines.append(
            f"- state_dict keys outside the FQs: only ours {sorted(o_model - r_model)}, "
            f"only ref {sorted(r_model - o_model)}."
        )
    for side, row, names in (("ours", o, o_names), ("ref", r, r_names)):
        suffixes: dict[str, int] = {}
        for k in row["state_keys"]:
            prefix = _fq_prefix(k, names)
            if prefix is not None:
                suffix = k[len(prefix) + 1 :]
                suffixes[suffix] = suffixes.get(suffix, 0) + 1
        listed = ", ".join(f"`{k}`" + (f" x{n}" if n > 1 else "") for k, n in suffixes.items())
        lines.append(f"- per-FQ state_dict keys ({side}, {len(names)} FQs): {listed or 'none'}.")
    return lines


def param_note(o: dict[str, Any], r: dict[str, Any]) -> str:
    """' Trained parameters: ...' — the max |ours - ref| over parameters of the same name
    and shape after the QAT epoch (both sides started from the same float weights)."""
    po, pr = o.get("params"), r.get("params")
    if not po or not pr:
        return ""
    same = [k for k in po if k in pr and po[k].shape == pr[k].shape]
    if not same:
        return " Trained parameters: no names in common."
    diffs = {k: (po[k].float() - pr[k].float()).abs().max().item() for k in same}
    worst = max(diffs, key=lambda k: diffs[k])
    left = len(po) + len(pr) - 2 * len(same)
    return (
        f" Trained parameters ({len(same)} matched by name{f', {left} unmatched' if left else ''}"
        f"): max abs diff {fmt(diffs[worst])} (`{worst}`), "
        f"{sum(1 for v in diffs.values() if v == 0)} bit-identical."
    )


def saved_note(o: dict, r: dict, float_ours: int, float_ref: int) -> str:
    """The QAT step's saved-for-backward bytes on both sides (empty for old result files)."""
    if "qat_saved_bytes" not in o or "qat_saved_bytes" not in r:
        return ""
    mib = 2.0**20
    so, sr = o["qat_saved_bytes"], r["qat_saved_bytes"]
    return (
        f" Saved for backward in one QAT step: {so / mib:.2f} MiB ours ({so / float_ours:.2f}x "
        f"float), {sr / mib:.2f} MiB reference ({sr / float_ref:.2f}x float)."
    )


def compare(
    ours: dict, ref: dict, data: dict[str, torch.Tensor], mode: str = "graph"
) -> tuple[list[str], list[str]]:
    """Markdown lines: the side-by-side table, then the per-FQ differences."""
    counted = "FQ nodes (modules)" if mode == "graph" else "FQs (modules)"
    table = [
        "| model | config | acc % ours / ref | agree % ours / ref | max abs out diff "
        f"ours vs ref | {counted} ours / ref | matched | max scale diff (rel) "
        "| prepare s ours / ref | forward x float ours / ref | QAT step ms ours / ref (x float) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    detail: list[str] = []
    y = data["test_y"]
    for name in MODELS:
        o_m, r_m = ours[name], ref[name]
        fo, fr = o_m["float_logits"], r_m["float_logits"]
        same_float = (fo - fr).abs().max().item()
        table.append(
            f"| {name} | float | {accuracy(fo, y):.2f} / {accuracy(fr, y):.2f} | 100 / 100 "
            f"| {fmt(same_float)} | - | - | - | - | - | - |"
        )
        for cfg in CONFIGS:
            o, r = o_m[cfg], r_m[cfg]
            pairs, only_o, only_r = match_fqs(o["fqs"], r["fqs"])
            diffs = [qparam_diff(a, b) for a, b in pairs]
            finite = [d for d in diffs if d[0] == d[0]]
            max_abs = max((d[0] for d in finite), default=float("nan"))
            max_rel = max((d[1] for d in finite), default=float("nan"))
            out_diff = (o["logits"] - r["logits"]).abs().max().item()
            fo_ratio = o["forward_s"]["prepared"] / o["forward_s"]["float"]
            fr_ratio = r["forward_s"]["prepared"] / r["forward_s"]["float"]
            qat, qat_note = "-", ""
            if "qat_step_interleaved_s" in o:
                io, ir = o["qat_step_interleaved_s"], r["qat_step_interleaved_s"]
                so, sr = io["prepared"], ir["prepared"]
                qat = (
                    f"{so * 1e3:.2f} / {sr * 1e3:.2f} ({so / io['float']:.2f}x / "
                    f"{sr / ir['float']:.2f}x)"
                )
                eo = statistics.median(o["qat_step_s"][3:])
                er = statistics.median(r["qat_step_s"][3:])
                qat_note = (
                    f"\n- {name} QAT: median step over the epoch {eo * 1e3:.2f} ms ours, "
                    f"{er * 1e3:.2f} ms reference; float SGD step (same loop) "
                    f"{o_m['float_step_s'] * 1e3:.2f} / {r_m['float_step_s'] * 1e3:.2f} ms."
                    f"{param_note(o, r)}"
                    f"{saved_note(o, r, o_m['float_saved_bytes'], r_m['float_saved_bytes'])}"
                )
            table.append(
                f"| {name} | {cfg} | {accuracy(o['logits'], y):.2f} / "
                f"{accuracy(r['logits'], y):.2f} | {agreement(o['logits'], fo):.2f} / "
                f"{agreement(r['logits'], fr):.2f} | {fmt(out_diff)} | {counts(o['fqs'])} / "
                f"{counts(r['fqs'])} | {len(pairs)} | {fmt(max_abs)} ({fmt(max_rel)}) | "
                f"{statistics.median(o['prepare_s']):.3f} / "
                f"{statistics.median(r['prepare_s']):.3f} | {fo_ratio:.2f} / {fr_ratio:.2f} "
                f"| {qat} |"
            )
            detail.append(f"\n#### {name} / {cfg}\n")
            detail.append(
                "| FQ (what it quantizes) | ours | ref | max abs scale diff | rel | note |"
            )
            detail.append("|---|---|---|---|---|---|")
            for (a, b), (dabs, drel, note) in zip(pairs, diffs, strict=True):
                shape = "x".join(str(s) for s in a["scale"].shape) if a["scale"] is not None else ""
                if a["tensor_fqn"] != b["tensor_fqn"]:
                    note = f"{note} tensor_fqn {a['tensor_fqn']!r} / {b['tensor_fqn']!r}".strip()
                detail.append(
                    f"| {a['kind']} `{a['key']}` [{shape or 'scalar'}] | {a['name']}{shared(a)} | "
                    f"{b['name']}{shared(b)} | {fmt(dabs)} | {fmt(drel)} | {note} |"
                )
            for a in only_o:
                detail.append(
                    f"| ONLY OURS: {a['kind']} `{a['key']}` | {a['name']}{shared(a)} | - | | | |"
                )
            for b in only_r:
                detail.append(
                    f"| ONLY REF: {b['kind']} `{b['key']}` | - | {b['name']}{shared(b)} | | | |"
                )
            if mode == "eager":
                detail.append("")
                detail.extend(state_key_lines(o, r))
            if qat_note:
                detail.append(qat_note)
            for side, row in (("ours", o), ("ref", r)):
                for w in row["warnings"]:
                    detail.append(f"\n- prepare warning ({side}): {w}")
    return table, detail


def report(
    mode: str,
    ours: dict[str, Any],
    ref: dict[str, Any],
    data: dict[str, torch.Tensor],
    args: argparse.Namespace,
    load: tuple[float, float],
    seconds: float,
) -> str:
    """The RESULTS.md section of one execution mode."""
    table, detail = compare(ours, ref, data, mode)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    rv, ov = ref["versions"], ours["versions"]
    command = " ".join([".venv/bin/python benchmarks/vs_reference.py", *sys.argv[1:]])
    header = (
        f"\n## Side by side with the reference, {mode} mode — {datetime.date.today()} — "
        f"commit {commit}\n\n"
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores), "
        f"{args.threads} threads, Python "
        f"{ov['python']}; ours: torch {ov['torch']}; reference: coreai-opt {rv['dist']} "
        f"(its `__version__` says {rv['coreai_opt']}), "
        f"torchao {rv['torchao']}, torch {rv['torch']} (its own venv). "
        f"`{command}` ({mode} mode: {seconds:.0f} s); "
        f"`QuantizerConfig(execution_mode={mode!r})` on both sides. 1-minute load average "
        f"{load[0]:.2f} before, {load[1]:.2f} after: the machine was shared with other work, "
        "so timings are noisy; every timing is a median.\n\n"
        "Data: scikit-learn digits (1437 train / 352 test), float models trained here "
        f"({args.epochs} Adam epochs) and loaded by both sides. Accuracy on the test split; "
        "agreement = argmax equal to that side's float model; out diff = max |logit ours - "
        "logit ref|; scale diff over FQs matched by what they quantize "
        + (
            "(graph: parameter / producer and consumers)"
            if mode == "graph"
            else "(eager: the FQ's submodule path, `<module>.<op>_quantize_<arg>` or "
            "`<module>.parametrizations.<param>.0`, the same scheme on both sides)"
        )
        + f"; prepare = median of {args.prepare_repeats}; "
        f"forward = eval batch ({args.rounds} interleaved rounds, median); QAT step = SGD step "
        "+ step() on one batch in training_mode after the epoch, interleaved with the float "
        "model's SGD step (median); the epoch's own medians are in the detail.\n"
    )
    return header + "\n" + "\n".join(table) + "\n\n### Per-FQ detail\n" + "\n".join(detail) + "\n"


def main() -> None:
    """Builds the reference's environment, runs both sides, prints and saves the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fresh", action="store_true", help="rebuild the reference venv")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--epochs", type=int, default=3, help="float training epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20, help="timed forward rounds")
    parser.add_argument("--prepare-repeats", type=int, default=3, help="timed prepares")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated execution modes to compare"
    )
    parser.add_argument("--no-save", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the exchange directory")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        parser.error(f"--modes: unknown {unknown}; choose from {list(MODES)}")
    try:
        ref_python = ensure_venv(args.venv, args.fresh)
    except InstallError as exc:
        print(f"\nERROR: the reference environment could not be built.\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="vs_reference_"))
    sections = []
    try:
        log(f"exchange directory {work}")
        data = load_digits_split(seed=0)
        torch.save(data, work / "data.pt")
        for name in MODELS:
            log(f"training float {name} ({args.epochs} epochs on digits)")
            model = train_float(name, data, args.epochs, seed=0)
            torch.save(model.state_dict(), work / f"float_{name}.pt")
        for mode in modes:
            t0, load0 = time.perf_counter(), os.getloadavg()[0]
            ours = run_worker(Path(sys.executable), "ours", work, args, mode)
            ref = run_worker(ref_python, "reference", work, args, mode)
            load = (load0, os.getloadavg()[0])
            sections.append(report(mode, ours, ref, data, args, load, time.perf_counter() - t0))
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = "".join(sections)
    print(text)
    if not args.no_save:
        with RESULTS.open("a") as f:
            f.write(text)
        log(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
