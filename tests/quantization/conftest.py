"""Shared test setup: the plain-PyTorch formulas of ``core/core_formulas.py`` and the
graph-mode models of ``graph/models.py`` are importable (as ``core_formulas`` and
``models``) from every quantization test directory."""

from __future__ import annotations

import sys
from pathlib import Path

for _dir in ("core", "graph"):
    _path = str(Path(__file__).resolve().parent / _dir)
    if _path not in sys.path:
        sys.path.insert(0, _path)
