"""Inspection tests: the shared helpers are importable as ``inspection_helpers``."""

from __future__ import annotations

import sys
from pathlib import Path

# pytest's default (prepend) import mode already puts this folder on sys.path for the
# test modules; adding it here keeps ``from inspection_helpers import ...`` working under
# --import-mode=importlib too, as the graph and finalize test folders do.
_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
