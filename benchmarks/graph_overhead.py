"""Graph mode's cost: prepare time, and W8A8 forward / QAT step time over the float model.

Models: benchmarks/bench_models.py (a small CNN with conv-bn, a pre-LN transformer block).
For each: prepare (median of 5), then forward (eval, no_grad) and a QAT step (forward,
backward, SGD) of the float model and of the prepared model, uncompiled and under
torch.compile (Inductor), 2 threads, median of interleaved rounds. Prints a table and
appends it to benchmarks/RESULTS.md (unless --no-save).

Targets (issue 11): QAT step <= 1.3x float uncompiled, <= 1.15x float compiled; prepare
<= 0.5x the reference's (coreai-opt 0.3.0 over torchao: 1.4 s for the block).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_models import PreLNBlock, SmallCNN
from ops_cpu import TUNABLES
from torch import nn

from coreai_opt.quantization import Quantizer, QuantizerConfig

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def medians(
    fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 15
) -> dict[str, float]:
    """Median seconds per call of each function, sampled round-robin (rotated each round).

    The warm-up is long because Inductor finishes compiling in background workers during
    the first calls of a compiled model, which share this machine's two cores.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def qat_step(model: nn.Module, fwd: Callable, x: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    """One SGD step on the mean square of the output."""
    opt.zero_grad(set_to_none=True)
    fwd(x).float().square().mean().backward()
    opt.step()


def measure(name: str, make: Callable[[], nn.Module], x: torch.Tensor, rounds: int) -> list[str]:
    """Table rows for one model."""
    torch.manual_seed(0)
    float_model = make()
    prepare_times = []
    for _ in range(5):
        model = copy.deepcopy(float_model)
        t0 = time.perf_counter()
        prepared = Quantizer(model, QuantizerConfig()).prepare((x,))
        prepare_times.append(time.perf_counter() - t0)
    prepare_s = statistics.median(prepare_times)
    q = Quantizer(float_model, QuantizerConfig())
    rows = [f"| {name} | prepare | {prepare_s * 1e3:.0f} ms | | |"]

    def fwd_rows(compiled: bool) -> None:
        f_model = copy.deepcopy(float_model).eval()
        p_model = copy.deepcopy(prepared).eval()
        f_fn = torch.compile(f_model) if compiled else f_model
        p_fn = torch.compile(p_model) if compiled else p_model

        def f() -> None:
            with torch.no_grad():
                f_fn(x)

        def p() -> None:
            with torch.no_grad():
                p_fn(x)

        t = medians({"float": f, "prepared": p}, rounds)
        label = "forward (compiled)" if compiled else "forward"
        rows.append(
            f"| {name} | {label} | {t['float'] * 1e3:.2f} ms | {t['prepared'] * 1e3:.2f} ms "
            f"| {t['prepared'] / t['float']:.2f}x |"
        )

    def step_rows(compiled: bool) -> None:
        f_model = copy.deepcopy(float_model).train()
        p_model = copy.deepcopy(prepared)
        f_opt = torch.optim.SGD(f_model.parameters(), lr=1e-3)
        p_opt = torch.optim.SGD(p_model.parameters(), lr=1e-3)
        f_fn = torch.compile(f_model) if compiled else f_model
        p_fn = torch.compile(p_model) if compiled else p_model
        with q.training_mode(p_model):
            t = medians(
                {
                    "float": lambda: qat_step(f_model, f_fn, x, f_opt),
                    "prepared": lambda: qat_step(p_model, p_fn, x, p_opt),
                },
                rounds,
            )
        label = "QAT step (compiled)" if compiled else "QAT step"
        rows.append(
            f"| {name} | {label} | {t['float'] * 1e3:.2f} ms | {t['prepared'] * 1e3:.2f} ms "
            f"| {t['prepared'] / t['float']:.2f}x |"
        )

    for compiled in (False, True):
        fwd_rows(compiled)
        step_rows(compiled)
    return rows


def main() -> None:
    """Runs both models and prints / saves the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    if os.environ.get("GLIBC_TUNABLES") != TUNABLES:  # the allocator of ops_cpu.py, see there
        os.environ["GLIBC_TUNABLES"] = TUNABLES
        os.execv(sys.executable, [sys.executable, *sys.argv])
    torch.set_num_threads(args.threads)
    rows = ["| model | measure | float | W8A8 graph | ratio |", "|---|---|---|---|---|"]
    rows += measure("SmallCNN (32x3x16x16)", SmallCNN, SmallCNN.example_input(), args.rounds)
    rows += measure("PreLNBlock (16x64x256)", PreLNBlock, PreLNBlock.example_input(), args.rounds)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    header = (
        f"\n## Graph mode overhead — {datetime.date.today()} — commit {commit}\n\n"
        f"{platform.processor() or platform.machine()}, {args.threads} threads, torch "
        f"{torch.__version__}, CPU kernels {torch.ops.coreai_opt.cpu_kernel_isa()}, median of "
        f"{args.rounds} interleaved rounds after 15 warm-up calls, GLIBC_TUNABLES={TUNABLES} "
        f"(`python benchmarks/graph_overhead.py`).\n"
    )
    text = header + "\n" + "\n".join(rows) + "\n"
    print(text)
    if not args.no_save:
        with RESULTS.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
