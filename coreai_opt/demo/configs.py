"""The quantization configs the demo compares, one row of the results table per mode each.

Every config is a ``QuantizerConfig`` built from the presets of
:mod:`coreai_opt.quantization.config` and run in each execution mode of :data:`MODES`
(:meth:`DemoConfig.quantizer_config` sets ``execution_mode``):

=================  ==========================================================  ===========
row                config                                                      procedure
=================  ==========================================================  ===========
W8                 ``presets.w8()``: int8 weights, symmetric, per output channel  weights only
W4 per-block       ``presets.w4_per_block(block_size=32)``: int4, blocks of 32    weights only
                   along the input channels
W8A8               ``presets.w8a8()``: W8 + int8 per-tensor activations           calibration
W4A8 QAT           ``presets.w4a8()`` + a ``QATSchedule``: int4 per-channel       QAT
                   weights, int8 activations
FP8 e4m3           ``presets.fp8()``: float8_e4m3fn weights (per channel) and     calibration
                   activations (per tensor)
MXFP4 Linear       ``presets.mxfp4().only_for(nn.Linear)``: float4_e2m1 weights,  weights only
                   blocks of 32 with E8M0 scales, Linear layers only
=================  ==========================================================  ===========
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from coreai_opt.quantization import QuantizerConfig
from coreai_opt.quantization.config import QATSchedule

__all__ = ["DEMO_CONFIGS", "MODES", "DemoConfig", "Procedure", "qat_schedule"]

MODES: tuple[str, ...] = ("eager", "graph")
"""The execution modes every config runs in, in table order (``ExecutionMode`` values)."""


class Procedure(enum.Enum):
    """What runs between ``prepare`` and evaluation."""

    WEIGHTS_ONLY = "weights only"
    CALIBRATE = "calibration"
    QAT = "QAT"


@dataclass(frozen=True)
class DemoConfig:
    """One quantization config of the demo.

    Attributes:
        key: short identifier (``--configs`` on the command line).
        label: the row label in the results table.
        description: what is quantized and how.
        procedure: calibration, QAT or nothing after prepare.
        build: returns the config (graph mode, the presets' default); QAT configs take the
            number of QAT steps (for the schedule), the others ignore it.
    """

    key: str
    label: str
    description: str
    procedure: Procedure
    build: Callable[[int], QuantizerConfig]

    def quantizer_config(self, total_steps: int, mode: str) -> QuantizerConfig:
        """:attr:`build`'s config in execution mode *mode* (``"eager"`` or ``"graph"``)."""
        config = self.build(total_steps)
        config.execution_mode = mode  # type: ignore[assignment]  # validated: parsed to the enum
        return config


def qat_schedule(total_steps: int) -> QATSchedule:
    """Observers from step 0; fake-quant after a tenth of the steps (the activation ranges
    settle first); observers off for the last quarter (qparams frozen while the weights
    finish adapting)."""
    total_steps = max(total_steps, 4)
    enable_fq = total_steps // 10
    disable_obs = max(enable_fq + 1, (3 * total_steps) // 4)
    return QATSchedule(enable_observer=0, enable_fake_quant=enable_fq, disable_observer=disable_obs)


def _w4a8_qat(total_steps: int) -> QuantizerConfig:
    config = QuantizerConfig.presets.w4a8()
    assert config.global_config is not None
    config.global_config.qat_schedule = qat_schedule(total_steps)
    return config


DEMO_CONFIGS: tuple[DemoConfig, ...] = (
    DemoConfig(
        "w8",
        "W8",
        "int8 weights, symmetric, per output channel",
        Procedure.WEIGHTS_ONLY,
        lambda _: QuantizerConfig.presets.w8(),
    ),
    DemoConfig(
        "w4_block",
        "W4 per-block 32",
        "int4 weights, symmetric, blocks of 32 input channels",
        Procedure.WEIGHTS_ONLY,
        lambda _: QuantizerConfig.presets.w4_per_block(block_size=32),
    ),
    DemoConfig(
        "w8a8",
        "W8A8",
        "int8 weights per channel, int8 activations per tensor, calibrated",
        Procedure.CALIBRATE,
        lambda _: QuantizerConfig.presets.w8a8(),
    ),
    DemoConfig(
        "w4a8_qat",
        "W4A8 QAT",
        "int4 weights per channel, int8 activations, QAT with a QATSchedule",
        Procedure.QAT,
        _w4a8_qat,
    ),
    DemoConfig(
        "fp8",
        "FP8 e4m3",
        "float8_e4m3fn weights per channel and activations per tensor, calibrated",
        Procedure.CALIBRATE,
        lambda _: QuantizerConfig.presets.fp8(),
    ),
    DemoConfig(
        "mxfp4",
        "MXFP4 Linear",
        "float4_e2m1 weights of Linear layers, blocks of 32 with E8M0 scales",
        Procedure.WEIGHTS_ONLY,
        lambda _: QuantizerConfig.presets.mxfp4().only_for(nn.Linear),
    ),
)
"""The rows after ``float``, in table order."""
