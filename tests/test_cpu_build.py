"""The CPU build: one OpenMP runtime, real parallelism, per-ISA kernels that agree, and the
torch-version guard of the loader."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import coreai_opt  # noqa: F401
from coreai_opt._loader import check_torch_version

OPS = torch.ops.coreai_opt


def _openmp_libraries() -> set[str]:
    """Real paths of the OpenMP runtimes mapped into this process."""
    found = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if re.search(r"lib(g|i|)omp[^/]*\.so", os.path.basename(path)):
            found.add(os.path.realpath(path))
    return found


def test_one_openmp_runtime_is_loaded() -> None:
    """The library binds to the OpenMP runtime torch ships; a second one would oversubscribe."""
    libs = _openmp_libraries()
    assert len(libs) == 1, f"expected one OpenMP runtime, found {sorted(libs)}"


def _best_wall_time(fn, repeats: int = 5) -> float:
    """Fastest of several runs (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPU cores")
def test_two_threads_beat_one_on_a_large_tensor() -> None:
    """at::parallel_for really runs in parallel (the kernels are compiled with OpenMP).

    A compute-heavy case (FP4 rounding of float64 input, the scalar path) so that memory
    bandwidth, which two threads may share, does not decide the outcome.
    """
    x = torch.randn(1 << 21, dtype=torch.float64)
    scale = torch.tensor(0.05)

    def run() -> None:
        OPS.fake_quantize_float(x, scale, torch.float4_e2m1fn_x2)

    old = torch.get_num_threads()
    try:
        run()
        torch.set_num_threads(1)
        one = _best_wall_time(run)
        torch.set_num_threads(2)
        two = _best_wall_time(run)
    finally:
        torch.set_num_threads(old)
    assert two < 0.85 * one, f"1 thread {one * 1e3:.1f} ms, 2 threads {two * 1e3:.1f} ms"


_DEFAULT_ISA_SCRIPT = """
import sys, torch, coreai_opt
ops = torch.ops.coreai_opt
inputs = torch.load(sys.argv[1])
out = {"isa": ops.cpu_kernel_isa()}
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    x = inputs["x"].to(dtype)
    key = str(dtype)
    out[key + "int"] = ops.fake_quantize_int(x, inputs["s"], inputs["zp"], None, -8, 7)
    out[key + "minval"] = ops.fake_quantize_int(x, inputs["s"], None, inputs["mv"], -8, 7)
    out[key + "bw"] = ops.fake_quantize_int_backward(x, x, inputs["s"], inputs["zp"], None, -8, 7)
    for fmt in (torch.float8_e4m3fn, torch.float8_e5m2, torch.float4_e2m1fn_x2):
        out[key + str(fmt)] = ops.fake_quantize_float(x, inputs["s"], fmt)
    out[key + "minmax"] = ops.minmax(x, [1, 37])
    out[key + "lsq"] = ops.fake_quantize_lsq_backward(
        x, x, inputs["s"], inputs["zp"].float(), -8, 7, 1.0
    )
torch.save(out, sys.argv[2])
"""


def _kernel_outputs(isa: str | None, tmp_path: Path) -> dict:
    """Runs the script in a subprocess, optionally forcing ATen's CPU capability."""
    torch.manual_seed(0)
    x = torch.randn(24, 37 * 3) * 3
    x[0, :5] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0])
    inputs = {
        "x": x,
        "s": torch.rand(24, 3) * 0.5 + 0.01,
        "zp": torch.randint(-3, 3, (24, 3), dtype=torch.int32),
        "mv": -torch.rand(24, 3),
    }
    src, dst = tmp_path / f"in_{isa}.pt", tmp_path / f"out_{isa}.pt"
    torch.save(inputs, src)
    env = dict(os.environ)
    if isa is not None:
        env["ATEN_CPU_CAPABILITY"] = isa
    subprocess.run(
        [sys.executable, "-c", _DEFAULT_ISA_SCRIPT, str(src), str(dst)], env=env, check=True
    )
    return torch.load(dst)


def test_portable_kernels_match_the_vector_kernels(tmp_path: Path) -> None:
    """The DEFAULT build (scalar at::vec) gives the same bits as the machine's best ISA."""
    best = _kernel_outputs(None, tmp_path)
    portable = _kernel_outputs("default", tmp_path)
    assert portable.pop("isa") == "DEFAULT"
    best.pop("isa")
    for key, value in best.items():
        got = portable[key]
        pairs = zip(value, got, strict=True) if isinstance(value, tuple) else [(value, got)]
        for a, b in pairs:
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=key)


def test_library_refuses_another_torch() -> None:
    """A build made for another torch is refused before loading, with the fix in the text."""
    with pytest.raises(ImportError) as info:
        check_torch_version("2.99.0", torch.__version__)
    text = str(info.value)
    assert "2.99.0" in text and torch.__version__ in text
    assert "pip install --no-build-isolation -e ." in text


def test_library_accepts_its_own_torch() -> None:
    """The recorded version of this build is the running torch."""
    from coreai_opt._build_info import TORCH_VERSION

    check_torch_version(TORCH_VERSION, torch.__version__)
