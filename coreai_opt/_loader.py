"""Loads the compiled op library (coreai_opt/_C.so) after checking it matches this torch.

The dispatcher's key layout changes between torch minor versions, so a library built for
one torch must never be loaded into another: we compare the version recorded at build time
with the running one and refuse with instructions instead of crashing.
"""

from __future__ import annotations

from pathlib import Path

import torch

_PACKAGE_DIR = Path(__file__).resolve().parent
_REBUILD = "pip install --no-build-isolation -e . (or `make build`) in the coreai_opt checkout"


def _library_path() -> Path:
    """Path of the built library; raises ImportError when there is none."""
    candidates = sorted(_PACKAGE_DIR.glob("_C*.so"))
    if not candidates:
        raise ImportError(
            f"coreai_opt: the compiled op library (_C*.so) is missing from {_PACKAGE_DIR}. "
            f"Build it with: {_REBUILD}"
        )
    return candidates[0]


def check_torch_version(built_for: str, running: str) -> None:
    """Raises ImportError when the library was built for another torch than the running one."""
    if built_for != running:
        raise ImportError(
            f"coreai_opt: the op library was built for torch {built_for}, but torch {running} "
            f"is running. A build is tied to one torch version; rebuild with: {_REBUILD}"
        )


def load_library() -> Path:
    """Checks the build's torch version, loads _C.so once and returns its path."""
    try:
        from coreai_opt._build_info import TORCH_VERSION
    except ImportError as err:
        raise ImportError(
            f"coreai_opt: coreai_opt/_build_info.py is missing, so the op library was never "
            f"built here. Build it with: {_REBUILD}"
        ) from err
    check_torch_version(TORCH_VERSION, torch.__version__)
    path = _library_path()
    torch.ops.load_library(str(path))
    return path
