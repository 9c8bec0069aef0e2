"""Shared setup of the op tests: loads the op library and puts reference.py on the path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))


def _load_ops() -> None:
    """Imports coreai_opt, which registers torch.ops.coreai_opt.*.

    The op tests need only the op library: an ImportError raised by the Python layers
    after the library loaded (the package is edited concurrently) does not stop them.
    """
    try:
        import coreai_opt  # noqa: F401
    except ImportError:
        if not torch._C._dispatch_has_kernel_for_dispatch_key(
            "coreai_opt::fake_quantize_int", "CPU"
        ):
            raise


_load_ops()


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same random state."""
    torch.manual_seed(0)
