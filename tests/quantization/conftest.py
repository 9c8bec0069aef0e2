"""Shared test setup: the plain-PyTorch formulas of ``core/core_formulas.py`` are importable
as ``core_formulas`` from every quantization test directory."""

from __future__ import annotations

import sys
from pathlib import Path

_CORE = str(Path(__file__).resolve().parent / "core")
if _CORE not in sys.path:
    sys.path.insert(0, _CORE)
