"""The C++ benchmark harness (build/cmake/coreai_opt_bench): its table on the tiny cases and
its messages for bad case files.

`make test` builds the binary (cpp-bench-smoke) before pytest runs. A tree where it was never
built (a build without libfmt-dev / libyaml-cpp-dev, the GPU machine's make test-gpu) skips
these tests; a binary older than its sources fails them rather than test stale code.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "build" / "cmake" / "coreai_opt_bench"
CASES = ROOT / "benchmarks" / "cases"
INVALID = CASES / "invalid"


@pytest.fixture(scope="module")
def bench() -> Path:
    """The built harness, refused when older than any of its sources."""
    if not BENCH.exists():
        pytest.skip(f"{BENCH} is not built (make cpp-bench-smoke builds it)")
    built = BENCH.stat().st_mtime
    stale = [p.name for p in (ROOT / "csrc" / "bench").iterdir() if p.stat().st_mtime > built]
    if stale:
        pytest.fail(f"{BENCH} is older than {', '.join(stale)}: run make cpp-bench-smoke")
    return BENCH


def run(bench: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Runs the harness from the repository root (messages name files as given)."""
    return subprocess.run(
        [str(bench), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by case name: the cells of every `| ...` line after the separator."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    assert len(lines) >= 2 and set(lines[1]) <= set("|-:"), stdout
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(header), line
        rows[cells[0]] = cells
    return rows


def test_tiny_cases_table(bench: Path) -> None:
    cases = yaml.safe_load((CASES / "tiny.yaml").read_text())["cases"]
    proc = run(bench, "--threads", "2", "benchmarks/cases/tiny.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "kernels " in proc.stdout and "torch " in proc.stdout
    rows = table_rows(proc.stdout)
    assert list(rows) == [c["name"] for c in cases]
    for case in cases:
        ours_median, ours_min, ours_gbps, aten_median, aten_ratio = rows[case["name"]][1:6]
        assert ours_median.endswith(("us", "ms")) and ours_min.endswith(("us", "ms"))
        assert float(ours_gbps) > 0
        # ATen has integer fake-quantize (per-tensor, per-channel) and the fused observer for
        # integers; nothing for float formats.
        has_aten = not case["format"].startswith("float")
        assert (aten_median != "-") == has_aten, rows[case["name"]]
        assert (aten_ratio != "-") == has_aten, rows[case["name"]]
    assert "ATen has no float4_e2m1fn_x2 fake-quantize" in proc.stdout


def test_results_file_is_appended(bench: Path, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# before\n")
    proc = run(bench, "--results", results, "--commit", "commit abc1234", CASES / "tiny.yaml")
    assert proc.returncode == 0, proc.stderr
    text = results.read_text()
    assert text.startswith("# before\n")
    assert "## C++ harness (coreai_opt_bench), CPU, " in text and "commit abc1234" in text
    assert len(table_rows(text)) == 3


@pytest.mark.parametrize(
    ("name", "line", "key", "also"),
    [
        ("bad_format.yaml", 18, "key 'format'", "allowed: int8, uint8, int4, uint4, int2, uint2"),
        (
            "bad_granularity.yaml",
            9,
            "key 'granularity.type'",
            "allowed: per_tensor, per_channel, per_block",
        ),
        ("missing_key.yaml", 3, "key 'shape'", "missing key"),
        ("syntax_error.yaml", 7, "YAML syntax error", "end of sequence flow not found"),
    ],
)
def test_bad_case_file_names_file_line_and_key(
    bench: Path, name: str, line: int, key: str, also: str
) -> None:
    path = f"benchmarks/cases/invalid/{name}"
    proc = run(bench, path)
    assert proc.returncode == 2
    assert proc.stdout == ""  # refused before anything ran
    message = proc.stderr.strip()
    assert message.startswith(f"coreai_opt_bench: {path}:{line}:"), message
    assert key in message and also in message, message


def test_bad_file_among_good_ones_runs_nothing(bench: Path) -> None:
    proc = run(bench, CASES / "tiny.yaml", INVALID / "bad_format.yaml")
    assert proc.returncode == 2 and proc.stdout == ""


def test_cuda_refused_without_a_device(bench: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    cases = yaml.safe_load((CASES / "tiny.yaml").read_text())
    cases["cases"] = cases["cases"][:1]
    cases["cases"][0]["device"] = "cuda"
    path = tmp_path / "cuda.yaml"
    path.write_text(yaml.safe_dump(cases, sort_keys=False))
    proc = run(bench, path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"{path}:2: case " in proc.stderr and "key 'device': cuda is not available" in (
        proc.stderr
    )
