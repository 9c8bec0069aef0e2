"""Resident memory of Core AI finalize, with and without ``mmap_dir``, in both modes.

Run with ``.venv/bin/python benchmarks/finalize_memory.py`` (outside ``make test``). Each
scenario runs in a fresh worker process (so one scenario's freed memory cannot hide
another's) on an MLP of ``--layers`` x ``nn.Linear(--hidden, --hidden)`` (default 4 x
2048 x 2048: 67 MB of float32 weights), quantized weight-only to int8 per channel (the
weights become 1 byte a value: 17 MB of codes).

The worker reads ``/proc/self/status`` (VmRSS, RssAnon, RssFile) after each step:

1. ``start``: torch, coreai_opt and the Core AI op library imported, and the whole
   pipeline run once on a small model (the first torch.export / prepare / finalize
   imports and initialises code: torch.export alone adds about 90 MiB of RSS that stays);
2. ``float``: the float model built;
3. ``prepared``: ``Quantizer.prepare`` + one forward;
4. ``finalized``: ``Quantizer.finalize(backend=CoreAI[, mmap_dir=...])``;
5. ``finalized + forward``: one forward of the finalized model (the mapped weight pages
   are read from the file and count as RssFile from then on);
6. ``dropped``: the caller's references to the float model and the Quantizer deleted (graph
   mode: the exported GraphModule shares its parameters with the float model, which the
   Quantizer keeps, so graph finalize frees dense weights only once both are gone).

Each step runs ``gc.collect()`` and glibc's ``malloc_trim(0)`` first, so RSS shows live
memory rather than what the allocator keeps for reuse. Prints a table and appends it to
benchmarks/RESULTS.md (unless ``--no-save``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SCENARIOS = [
    (mode, use_mmap, library)
    for library in ("selected", "coreai_opt")
    for mode in ("eager", "graph")
    for use_mmap in (False, True)
]
STEPS = ["start", "float", "prepared", "finalized", "finalized + forward", "dropped"]
MB = 1024 * 1024


def memory() -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of this process in MiB (after a collection and trim)."""
    gc.collect()
    with contextlib.suppress(OSError):  # not glibc: no trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


def worker(mode: str, use_mmap: bool, library: str, hidden: int, layers: int) -> dict[str, object]:
    """One scenario in this process; returns the measurements. *library* ``coreai_opt``
    forces this package's ops (and modules) even when coreai-torch imports."""
    warnings.simplefilter("ignore")
    import torch
    from torch import nn

    from coreai_opt import ExportBackend
    from coreai_opt.quantization import ModuleQuantizerConfig, Quantizer, QuantizerConfig
    from coreai_opt.quantization.finalize import _export_ops, select_export_ops
    from coreai_opt.quantization.spec import PerChannelGranularity, QuantizationSpec

    if library == "coreai_opt":
        _export_ops.coreai_torch_available = lambda: False  # type: ignore[assignment]

    torch.set_num_threads(2)
    ops = select_export_ops()  # imports coreai-torch when present (not finalize's memory)
    w8 = QuantizationSpec(dtype=torch.int8, granularity=PerChannelGranularity(axis=0))
    cfg = QuantizerConfig(
        execution_mode=mode,
        global_config=ModuleQuantizerConfig(
            op_state_spec={"weight": w8}, op_input_spec={"*": None}, op_output_spec={"*": None}
        ),
    )

    def build(width: int) -> nn.Module:
        blocks: list[nn.Module] = []
        for _ in range(layers):
            blocks += [nn.Linear(width, width), nn.ReLU()]
        return nn.Sequential(*blocks).eval()

    # Warm-up on a small model: the first torch.export / prepare / finalize imports and
    # initialises code (torch.export alone adds about 90 MiB of RSS that stays).
    with tempfile.TemporaryDirectory() as warm, torch.no_grad():
        small = Quantizer(build(64), cfg)
        small.finalize(
            small.prepare((torch.randn(2, 64),)),
            backend=ExportBackend.CoreAI,
            mmap_dir=Path(warm) / "w" if use_mmap else None,
        )
        del small
    rows: dict[str, dict[str, float]] = {"start": memory()}
    torch.manual_seed(0)
    model = build(hidden)
    float_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / MB
    x = torch.randn(8, hidden)
    rows["float"] = memory()
    q = Quantizer(model, cfg)
    prepared = q.prepare((x,))
    with torch.no_grad():
        ref = prepared(x)
    rows["prepared"] = memory()
    directory = tempfile.mkdtemp(prefix="finalize_memory_") if use_mmap else None
    start = time.perf_counter()
    with torch.no_grad():
        finalized = q.finalize(
            prepared,
            backend=ExportBackend.CoreAI,
            mmap_dir=None if directory is None else Path(directory) / "weights",
        )
    seconds = time.perf_counter() - start
    rows["finalized"] = memory()
    with torch.no_grad():
        out = finalized(x)
    rows["finalized + forward"] = memory()
    del q, model, prepared
    rows["dropped"] = memory()
    files = 0.0
    if directory is not None:
        files = sum(p.stat().st_size for p in (Path(directory) / "weights").iterdir()) / MB
    return {
        "rows": rows,
        "float_mb": float_mb,
        "file_mb": files,
        "finalize_s": seconds,
        "max_diff": float((out - ref).abs().max()),
        "library": ops.library,
    }


def run_worker(
    mode: str, use_mmap: bool, library: str, hidden: int, layers: int
) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--worker", mode, "--hidden", str(hidden)]
    cmd += ["--layers", str(layers), "--library", library]
    cmd += ["--mmap"] if use_mmap else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"worker {mode} mmap={use_mmap} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[tuple[str, bool, str], dict[str, object]]) -> list[str]:
    lines = [
        "| ops | mode | mmap_dir | step | RSS MiB | RssAnon MiB | RssFile MiB | RSS - start |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (mode, use_mmap, _), result in results.items():
        rows = result["rows"]
        assert isinstance(rows, dict)
        base = rows["start"]["VmRSS"]
        for step in STEPS:
            row = rows[step]
            lines.append(
                f"| {result['library']} | {mode} | {'yes' if use_mmap else 'no'} | {step} | "
                f"{row['VmRSS']:.0f} | "
                f"{row['RssAnon']:.0f} | {row['RssFile']:.0f} | {row['VmRSS'] - base:+.0f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--no-save", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--worker", choices=["eager", "graph"], help=argparse.SUPPRESS)
    parser.add_argument("--mmap", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--library", default="selected", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.mmap, args.library, args.hidden, args.layers)))
        return
    results = {s: run_worker(*s, args.hidden, args.layers) for s in SCENARIOS}
    first = next(iter(results.values()))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    import torch

    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    fs = subprocess.run(
        ["df", "-T", tempfile.gettempdir()], capture_output=True, text=True, check=False
    ).stdout.splitlines()[-1:]
    details = "; ".join(
        f"{r['library']} {mode}{' + mmap' if m else ''}: finalize {r['finalize_s']:.2f} s, "
        f"max |finalized - prepared| {r['max_diff']:.1e}"
        + (f", files {r['file_mb']:.1f} MiB" if m else "")
        for (mode, m, _), r in results.items()
    )
    header = (
        f"\n## Finalize memory (Core AI) — {datetime.date.today()} — commit {commit}\n\n"
        f"{platform.machine()}, {os.cpu_count()} CPUs, 2 threads, torch {torch.__version__} "
        f"(`python benchmarks/finalize_memory.py"
        f"{'' if args.hidden == 2048 else f' --hidden {args.hidden}'}"
        f"{'' if args.layers == 4 else f' --layers {args.layers}'}`). "
        f"Model: {args.layers} x Linear({args.hidden}, {args.hidden}) + ReLU, "
        f"{first['float_mb']:.1f} MiB of float32 parameters, int8 per-channel weight-only "
        f"(codes: a quarter of that). Ops: `coreai` = coreai-torch's modules and ops (what "
        f"finalize selects when coreai-torch imports), `coreai_opt` = this package's. One "
        f"worker process per scenario, warmed up on a small model; gc + malloc_trim before "
        f"each reading. The machine is shared with other sessions right now (load average "
        f"{load} at the end of the run): RSS is per process and does not depend on the load, "
        f"but each number is one run, not a median. mmap files in {tempfile.gettempdir()} "
        f"({' '.join(fs[0].split()[:2]) if fs else '?'}). {details}.\n"
    )
    text = header + "\n" + "\n".join(table(results)) + "\n"
    print(text)
    if not args.no_save:
        with RESULTS.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
