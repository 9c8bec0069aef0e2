"""The repository layout tells the truth: each op family is found by file name in every
device folder, and the Python package reaches the op library through ``_ops.py`` only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ["fake_quantize", "lsq", "observe", "qparams", "fused", "pack", "coreai_export"]
DEVICE_FOLDERS = ["ops", "cpu", "meta", "reference", "autograd"]


@pytest.mark.parametrize("folder", DEVICE_FOLDERS)
def test_every_family_has_a_file_in_every_device_folder(folder: str) -> None:
    """csrc/<folder>/<family>.cpp exists for each op family."""
    missing = [f for f in FAMILIES if not (ROOT / "csrc" / folder / f"{f}.cpp").is_file()]
    assert not missing, f"csrc/{folder} lacks {missing}"


@pytest.mark.parametrize("folder", ["cpu", "meta", "reference"])
def test_every_device_kernel_calls_the_shared_check(folder: str) -> None:
    """Each family's CPU, Meta and reference kernels start from ops/checks.h (autograd calls
    the op below autograd, whose kernels check)."""
    for family in FAMILIES:
        text = (ROOT / "csrc" / folder / f"{family}.cpp").read_text()
        assert re.search(r"ops::check_\w+\(", text), f"csrc/{folder}/{family}.cpp"


def test_python_reaches_the_op_library_through_ops_py() -> None:
    """No module of the package calls torch.ops.coreai_opt.<op>(...) but coreai_opt/_ops.py."""
    offenders = []
    for path in (ROOT / "coreai_opt").rglob("*.py"):
        if path.name == "_ops.py" and path.parent.name == "coreai_opt":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"torch\.ops\.coreai_opt\.\w+\(", line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}")
    assert not offenders, offenders
