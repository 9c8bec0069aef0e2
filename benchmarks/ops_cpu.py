"""CPU benchmarks of the coreai_opt ops beside their peers (run with `make bench`).

One process, 2 threads, median of >= 20 timed rounds after warm-up; each round calls
every contender once (interleaved, so machine noise hits all alike). Every case is timed for:
  ours      torch.ops.coreai_opt.*
  aten      the closest aten op, where one exists
  eager     the same math as a composite expression of torch ops
  compiled  torch.compile of that composite (Inductor)
  copy      an in-process `copy_` of the same number of input bytes (the memory roofline)
Effective bandwidth = minimal bytes the op must move per element (documented per case) x
elements / time. Results are printed and appended to benchmarks/RESULTS.md.

Allocator: every contender returns a fresh output tensor. glibc serves large blocks with
mmap and unmaps them on free, so each call would page-fault its output in again (that costs
more than the kernel itself and hides what the kernels do). The script re-runs itself with
GLIBC_TUNABLES that keep freed memory for reuse, the usual fix (like jemalloc or tcmalloc),
for all contenders alike; --default-allocator measures without it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import coreai_opt  # noqa: F401  (loads the ops)

OPS = torch.ops.coreai_opt
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
Fn = Callable[[], object]


CONTENDERS = ("ours", "copy", "aten", "eager", "compiled")


def interleaved_medians(
    fns: dict[str, Fn], runs: int, calls: int = 1, warmup: int = 3
) -> dict[str, float]:
    """Median wall time per call of each function over `runs` rounds after `warmup` rounds.

    Each round takes one sample of every contender, in an order rotated from round to round,
    so a slow stretch of a shared machine lands on all of them alike instead of on whichever
    happened to run then. A sample is
    `calls` back-to-back calls (for per-call latency of tiny tensors in a warm state).
    """
    for _ in range(warmup):
        for fn in fns.values():
            for _ in range(calls):
                fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns.items())
    for r in range(runs):
        # Rotate who goes first, so no contender always follows the same neighbour.
        for key, fn in order[r % len(order) :] + order[: r % len(order)]:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[key].append((time.perf_counter() - t0) / calls)
    return {k: statistics.median(v) for k, v in times.items()}


@dataclass
class Case:
    """One benchmark: our op and its peers over the same data."""

    name: str
    numel: int
    bytes_per_element: float  # minimal bytes our op must move per element
    bytes_note: str
    ours: Fn
    copy: Fn
    aten: Fn | None = None
    eager: Fn | None = None
    compiled: Fn | None = None
    times: dict[str, float] = field(default_factory=dict)
    large: bool = True  # >= 128 MB of traffic: the bandwidth targets apply
    element_size: int = 4  # bytes of one input element (sizes the copy)


def compile_fn(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> Fn:
    """torch.compile(fn) bound to args (compiled on the first call, i.e. in warm-up)."""
    compiled = torch.compile(fn, dynamic=False)
    return lambda: compiled(*args)


def int_fq_expr(x: torch.Tensor, s: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int):
    """The integer fake-quantize formula in torch ops (float32 math)."""
    xf = x.float()
    return ((torch.clamp(torch.round(xf / s) + zp, qmin, qmax) - zp) * s).to(x.dtype)


def int_mask_expr(g: torch.Tensor, x: torch.Tensor, s: torch.Tensor, zp: torch.Tensor):
    """STE backward for int8 in torch ops."""
    q = torch.round(x.float() / s) + zp
    return (g.float() * ((q >= -128) & (q <= 127))).to(g.dtype)


def fp4_expr(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """MXFP4 fake-quantize (blocks of 32 along the last dim) in torch ops."""
    v = torch.clamp(x.view(x.shape[0], -1, 32) / s.unsqueeze(-1), -6, 6)
    a = v.abs()
    q = torch.where(
        a < 2, torch.round(a * 2) / 2, torch.where(a < 4, torch.round(a), torch.round(a / 2) * 2)
    )
    return (torch.copysign(q, v) * s.unsqueeze(-1)).view_as(x)


def fp8_expr(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """FP8 E4M3 fake-quantize in torch ops."""
    return torch.clamp(x / s, -448, 448).to(torch.float8_e4m3fn).to(x.dtype) * s


def lsq_backward_expr(
    g: torch.Tensor, x: torch.Tensor, s: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LSQ backward (per-channel along dim 0) in torch ops: dx and the per-channel sums."""
    zr = torch.round(torch.clamp(zp, qmin, qmax))
    q = torch.round(x / s) + zr
    inside = (q >= qmin) & (q <= qmax)
    qc = torch.clamp(q, qmin, qmax)
    y = (qc - zr) * s
    dx = g * inside
    ds = torch.where(inside, g * (y - x) / s, g * (qc - zr)).sum(dim=1, keepdim=True)
    dz = torch.where(inside, torch.zeros_like(g), -g * s).sum(dim=1, keepdim=True)
    return dx, ds, dz


def weight_cases() -> list[Case]:
    """4096 x 4096 weights: per-channel int8 fwd/bwd (fp32, bf16), int4 blocks, MXFP4, LSQ."""
    cases: list[Case] = []
    n = 4096
    for dtype in (torch.float32, torch.bfloat16):
        es = torch.finfo(dtype).bits // 8
        x = torch.randn(n, n, dtype=dtype)
        s = (x.float().abs().amax(dim=1, keepdim=True) / 127.5).clamp_min(1e-8)
        zp = torch.zeros(n, 1, dtype=torch.int32)
        dst = torch.empty_like(x)
        g = torch.randn_like(x)
        tag = str(dtype).removeprefix("torch.")
        s_flat, zp_flat = s.flatten(), zp.flatten()
        cases.append(
            Case(
                f"weight 4096x4096 per-channel int8 fwd {tag}",
                x.numel(),
                2 * es,
                "read x, write y",
                ours=lambda x=x, s=s, zp=zp: OPS.fake_quantize_int(x, s, zp, None, -128, 127),
                copy=lambda x=x, d=dst: d.copy_(x),
                aten=lambda x=x, s=s_flat, z=zp_flat: torch.fake_quantize_per_channel_affine(
                    x, s, z, 0, -128, 127
                ),
                eager=lambda x=x, s=s, zp=zp: int_fq_expr(x, s, zp, -128, 127),
                compiled=compile_fn(lambda x, s, zp: int_fq_expr(x, s, zp, -128, 127), x, s, zp),
                element_size=es,
            )
        )
        mask = torch.ops.aten.fake_quantize_per_channel_affine_cachemask(
            x, s_flat, zp_flat, 0, -128, 127
        )[1]
        cases.append(
            Case(
                f"weight 4096x4096 per-channel int8 bwd {tag}",
                x.numel(),
                3 * es,
                "read grad and x, write grad_x (aten reads a saved 1-byte mask instead of x)",
                ours=lambda g=g, x=x, s=s, zp=zp: OPS.fake_quantize_int_backward(
                    g, x, s, zp, None, -128, 127
                ),
                copy=lambda x=x, d=dst: d.copy_(x),
                aten=lambda g=g, m=mask: (
                    torch.ops.aten.fake_quantize_per_channel_affine_cachemask_backward(g, m)
                ),
                eager=lambda g=g, x=x, s=s, zp=zp: int_mask_expr(g, x, s, zp),
                compiled=compile_fn(int_mask_expr, g, x, s, zp),
                element_size=es,
            )
        )

    x = torch.randn(n, n)
    dst = torch.empty_like(x)
    sb = (x.view(n, -1, 32).abs().amax(-1) / 7.5).clamp_min(1e-8)
    zb = torch.zeros_like(sb, dtype=torch.int32)
    cases.append(
        Case(
            "weight 4096x4096 per-block-32 int4 fwd fp32",
            x.numel(),
            8,
            "read x, write y",
            ours=lambda: OPS.fake_quantize_int(x, sb, zb, None, -8, 7),
            copy=lambda: dst.copy_(x),
            aten=lambda: torch.fake_quantize_per_channel_affine(
                x.view(-1, 32), sb.flatten(), zb.flatten(), 0, -8, 7
            ),
            eager=lambda: int_fq_expr(x.view(n, -1, 32), sb.unsqueeze(-1), zb.unsqueeze(-1), -8, 7),
            compiled=compile_fn(
                lambda x, s, z: int_fq_expr(
                    x.view(n, -1, 32), s.unsqueeze(-1), z.unsqueeze(-1), -8, 7
                ),
                x,
                sb,
                zb,
            ),
        )
    )
    lo, hi = OPS.minmax(x, [1, 32])
    se = OPS.choose_qparams_float(lo, hi, torch.float4_e2m1fn_x2, True, None, None)
    cases.append(
        Case(
            "weight 4096x4096 MXFP4 (E8M0 blocks of 32) fwd fp32",
            x.numel(),
            8,
            "read x, write y",
            ours=lambda: OPS.fake_quantize_float(x, se, torch.float4_e2m1fn_x2),
            copy=lambda: dst.copy_(x),
            eager=lambda: fp4_expr(x, se),
            compiled=compile_fn(fp4_expr, x, se),
        )
    )
    sl = s.clone()
    zl = torch.zeros(n, 1)
    g = torch.randn_like(x)
    cases.append(
        Case(
            "weight 4096x4096 LSQ per-channel bwd fp32",
            x.numel(),
            12,
            "read grad and x, write grad_x (+ per-channel sums)",
            ours=lambda: OPS.fake_quantize_lsq_backward(g, x, sl, zl, -128, 127, 1.0),
            copy=lambda: dst.copy_(x),
            aten=lambda: torch.ops.aten._fake_quantize_learnable_per_channel_affine_backward(
                g, x, sl.flatten(), zl.flatten(), 0, -128, 127, 1.0
            ),
            eager=lambda: lsq_backward_expr(g, x, sl, zl, -128, 127),
            compiled=compile_fn(
                lambda g, x, s, z: lsq_backward_expr(g, x, s, z, -128, 127), g, x, sl, zl
            ),
        )
    )
    return cases


def activation_cases() -> list[Case]:
    """64 x 1024 x 768 activations: per-tensor int8 fwd+bwd, fused observer, FP8."""
    x = torch.randn(64, 1024, 768)
    dst = torch.empty_like(x)
    g = torch.randn_like(x)
    s = torch.tensor(x.abs().max().item() / 127.5)
    s4 = s.reshape(1, 1, 1)
    zp4 = torch.zeros(1, 1, 1, dtype=torch.int32)
    xr = x.clone().requires_grad_(True)

    def ours_fwd_bwd() -> None:
        xr.grad = None
        OPS.fake_quantize_int(xr, s4, zp4, None, -128, 127).backward(g)

    def aten_fwd_bwd() -> None:
        xr.grad = None
        torch.fake_quantize_per_tensor_affine(xr, s, torch.tensor(0), -128, 127).backward(g)

    def ste(x: torch.Tensor, s: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
        q = torch.round(x / s) + zp
        mask = ((q >= -128) & (q <= 127)).float()
        y = (torch.clamp(q, -128, 127) - zp) * s
        return (y - x * mask).detach() + x * mask

    compiled_ste = torch.compile(ste, dynamic=False)

    def eager_fwd_bwd() -> None:
        xr.grad = None
        ste(xr, s4, zp4).backward(g)

    def compiled_fwd_bwd() -> None:
        xr.grad = None
        compiled_ste(xr, s4, zp4).backward(g)

    cases = [
        Case(
            "activation 64x1024x768 per-tensor int8 fwd+bwd fp32",
            x.numel(),
            20,
            "fwd: read x, write y; bwd: read grad and x, write grad_x",
            ours=ours_fwd_bwd,
            copy=lambda: dst.copy_(x),
            aten=aten_fwd_bwd,
            eager=eager_fwd_bwd,
            compiled=compiled_fwd_bwd,
        )
    ]

    on = torch.tensor([1], dtype=torch.uint8)
    a_rmin, a_rmax = torch.tensor(float("inf")), torch.tensor(float("-inf"))
    a_scale, a_zp = torch.ones(1), torch.zeros(1, dtype=torch.int32)

    def observe_fq(x: torch.Tensor, rmin: torch.Tensor, rmax: torch.Tensor) -> torch.Tensor:
        lo = torch.minimum(x.amin(), torch.zeros(()))
        hi = torch.maximum(x.amax(), torch.zeros(()))
        rmin.copy_(torch.where(rmin.isinf(), lo, 0.01 * lo + 0.99 * rmin))
        rmax.copy_(torch.where(rmax.isinf(), hi, 0.01 * hi + 0.99 * rmax))
        sc = torch.clamp_min(torch.maximum(-rmin, rmax) / 127.5, 1.1920929e-07)
        return torch.clamp(torch.round(x / sc), -128, 127) * sc

    # The fused op's arguments by name, with its state (built once: a call times the op).
    fused_kw = {
        "x": x,
        "observer_on": on,
        "fake_quant_on": on,
        "running_min": torch.full((1, 1, 1), float("inf")),
        "running_max": torch.full((1, 1, 1), float("-inf")),
        "scale": torch.ones(1, 1, 1),
        "zero_point": torch.zeros(1, 1, 1, dtype=torch.int32),
        "minval": torch.zeros(1, 1, 1),
        "block_size": [64, 1024, 768],
        "dtype": torch.int8,
        "quant_min": -128,
        "quant_max": 127,
        "symmetric": True,
        "use_minval": False,
        "e8m0": False,
        "method": "moving_average",
        "averaging_constant": 0.01,
        "range_min": None,
        "range_max": None,
    }

    def fused_observer_case(name: str, xt: torch.Tensor, kw: dict, note: str) -> Case:
        """Our fused call on xt against aten's fused observer and the eager / compiled
        expression, each with its own running range."""
        out = torch.empty_like(xt)
        e_range = (torch.tensor(float("inf")), torch.tensor(float("-inf")))
        c_range = (torch.tensor(float("inf")), torch.tensor(float("-inf")))
        return Case(
            name,
            xt.numel(),
            12,
            note,
            ours=lambda: OPS.fused_fake_quantize(**kw),
            copy=lambda: out.copy_(xt),
            aten=lambda: torch.fused_moving_avg_obs_fake_quant(
                xt, on, on, a_rmin, a_rmax, a_scale, a_zp, 0.01, -128, 127, 0, False, True
            ),
            eager=lambda: observe_fq(xt, *e_range),
            compiled=compile_fn(observe_fq, xt, *c_range),
        )

    cases.append(
        fused_observer_case(
            "activation 64x1024x768 fused observer (moving average) + int8 fwd fp32",
            x,
            fused_kw,
            "read x twice (observe, quantize), write y",
        )
    )
    # The same call on a channels_last activation of as many elements: the fused op keeps
    # the layout and runs in memory order (before, it made a contiguous copy first).
    xcl = x.reshape(64, 768, 32, 32).to(memory_format=torch.channels_last)
    cl_kw = dict(fused_kw, x=xcl, block_size=list(xcl.shape))
    for k in ("running_min", "running_max", "scale", "zero_point", "minval"):
        cl_kw[k] = fused_kw[k].clone().reshape(1, 1, 1, 1)
    cases.append(
        fused_observer_case(
            "activation 64x768x32x32 channels_last fused observer + int8 fwd fp32",
            xcl,
            cl_kw,
            "read x twice (observe, quantize), write y (channels_last)",
        )
    )
    s8 = torch.tensor(x.abs().max().item() / 448.0).reshape(1, 1, 1)
    cases.append(
        Case(
            "activation 64x1024x768 per-tensor FP8 e4m3 fwd fp32",
            x.numel(),
            8,
            "read x, write y",
            ours=lambda: OPS.fake_quantize_float(x, s8, torch.float8_e4m3fn),
            copy=lambda: dst.copy_(x),
            eager=lambda: fp8_expr(x, s8),
            compiled=compile_fn(fp8_expr, x, s8),
        )
    )
    return cases


def tiny_cases() -> list[Case]:
    """Per-call latency on 768 and 64 x 64 elements, per-tensor int8."""
    cases = []
    for shape in ((768,), (64, 64)):
        x = torch.randn(*shape)
        dst = torch.empty_like(x)
        s = torch.tensor(0.02)
        sr = s.reshape([1] * x.dim())
        zr = torch.zeros([1] * x.dim(), dtype=torch.int32)
        z0 = torch.tensor(0, dtype=torch.int32)
        cases.append(
            Case(
                f"tiny {'x'.join(map(str, shape))} per-tensor int8 fwd fp32 (latency)",
                x.numel(),
                8,
                "read x, write y",
                ours=lambda x=x, s=sr, z=zr: OPS.fake_quantize_int(x, s, z, None, -128, 127),
                copy=lambda x=x, d=dst: d.copy_(x),
                aten=lambda x=x, s=s, z=z0: torch.fake_quantize_per_tensor_affine(
                    x, s, z, -128, 127
                ),
                eager=lambda x=x, s=sr, z=zr: int_fq_expr(x, s, z, -128, 127),
                compiled=compile_fn(lambda x, s, z: int_fq_expr(x, s, z, -128, 127), x, sr, zr),
                large=False,
            )
        )
    return cases


def fmt_ms(t: float | None) -> str:
    """Milliseconds, or microseconds below 0.1 ms."""
    if t is None:
        return "n/a"
    return f"{t * 1e3:.2f} ms" if t >= 1e-4 else f"{t * 1e6:.1f} us"


def run(cases: list[Case], runs: int) -> list[str]:
    """Times every case and returns Markdown table rows (also printed)."""
    rows = []
    for c in cases:
        c.times = interleaved_medians(
            {k: f for k in CONTENDERS if (f := getattr(c, k)) is not None},
            runs,
            calls=1 if c.large else 100,
        )
        t = c.times
        gbs = c.bytes_per_element * c.numel / t["ours"] / 1e9
        # the copy reads and writes the input's bytes once each
        copy_gbs = 2 * c.numel * c.element_size / t["copy"] / 1e9
        ratio = gbs / copy_gbs

        def vs(key: str, t: dict[str, float] = t) -> str:
            return f"{t[key] / t['ours']:.2f}x" if key in t else "n/a"

        row = (
            f"| {c.name} | {fmt_ms(t['ours'])} | {gbs:.1f} | {copy_gbs:.1f} | {ratio:.2f} | "
            f"{fmt_ms(t.get('aten'))} ({vs('aten')}) | {fmt_ms(t.get('eager'))} ({vs('eager')}) | "
            f"{fmt_ms(t.get('compiled'))} ({vs('compiled')}) |"
        )
        print(row, flush=True)
        rows.append(row)
    return rows


TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def source_commit() -> str:
    """The checkout's commit (marked "+ local changes" when the tree is dirty), so each
    recorded run names the kernels it measured."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "csrc", "coreai_opt"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "commit unknown"
    if not sha:
        return "commit unknown"
    return f"commit {sha}" + (" + local changes" if dirty else "")


def main() -> None:
    """Runs the benchmark and appends the table to RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="substring filter on case names")
    parser.add_argument("--default-allocator", action="store_true")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args()
    if not args.default_allocator and os.environ.get("GLIBC_TUNABLES") != TUNABLES:
        os.environ["GLIBC_TUNABLES"] = TUNABLES
        os.execv(sys.executable, [sys.executable, *sys.argv])
    allocator = "glibc default" if args.default_allocator else f"GLIBC_TUNABLES={TUNABLES}"
    torch.set_num_threads(args.threads)
    cases = weight_cases() + activation_cases() + tiny_cases()
    cases = [c for c in cases if args.only in c.name]
    header = [
        "| case | ours | ours GB/s | copy GB/s | ours/copy | aten (aten/ours) | "
        "eager (eager/ours) | compiled (compiled/ours) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    rows = run(cases, args.runs)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    stamp = datetime.date.today().isoformat()
    commit = source_commit()
    notes = "\n".join(
        f"- {c.name}: {c.bytes_per_element:g} B/element ({c.bytes_note})" for c in cases
    )
    block = (
        f"\n## CPU, {stamp}, {commit}\n\n{cpu}, {args.threads} threads, "
        f"torch {torch.__version__}, "
        f"kernels {OPS.cpu_kernel_isa()}, median of {args.runs} interleaved rounds "
        f"(tiny cases: samples of 100 calls), "
        f"allocator: {allocator}.\n"
        f"Ratios in parentheses are peer time / our time (> 1: we are faster).\n\n"
        + "\n".join(header + rows)
        + f"\n\nBytes counted per element:\n{notes}\n"
    )
    if args.no_save:
        return
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Benchmark results\n\nAppended by `make bench` (benchmarks/ops_cpu.py).\n"
        )
    with RESULTS.open("a") as f:
        f.write(block)


if __name__ == "__main__":
    main()
