"""The demo: quantize small models on a bundled data set and compare the configs.

``python -m coreai_opt.demo`` (``make demo``) trains a small CNN (conv-bn-relu blocks) and
a small transformer (the rows of an 8x8 image as tokens) on scikit-learn's handwritten
digits, quantizes each with :class:`~coreai_opt.quantization.Quantizer` in eager and in
graph mode (W8, W4 per-block, W8A8 calibrated, W4A8 with QAT, FP8, MXFP4 on Linear
layers), prints a rich table (accuracy, agreement with the float model, packed weight
size, the size of the Core AI-finalized model, dropped fake-quantizers, timings; one row
per model, config and mode), runs :func:`coreai_opt.inspection.layer_sensitivity` on the
CNN and writes ``demo_results.md`` with PNG charts to ``--out`` (default ``docs/demo``).

Public: :func:`run_demo`, :class:`DemoSettings`, :class:`DemoReport`, :class:`DemoRow`,
:class:`RunResult`, :func:`weight_bytes` / :class:`WeightBytes` (the packed-size count),
:func:`state_bytes` / :class:`StateBytes` (what a finalized model stores) and
:func:`write_outputs` / :func:`print_report`. Needs scikit-learn and matplotlib.
"""

from __future__ import annotations

from coreai_opt.demo.finalized import StateBytes, state_bytes
from coreai_opt.demo.report import print_report, write_outputs
from coreai_opt.demo.run import DemoReport, DemoRow, DemoSettings, RunResult, run_demo
from coreai_opt.demo.weight_bytes import WeightBytes, weight_bytes

__all__ = [
    "DemoReport",
    "DemoRow",
    "DemoSettings",
    "RunResult",
    "StateBytes",
    "WeightBytes",
    "print_report",
    "run_demo",
    "state_bytes",
    "weight_bytes",
    "write_outputs",
]
