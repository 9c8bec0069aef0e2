"""Base classes shared by every compression technique's spec layer.

A *spec* says how one tensor is compressed (pure data, :mod:`.base`); a *simulator* is
the ``nn.Module`` that applies it during training/calibration
(:mod:`.compression_simulator`); a *component factory* builds simulators from specs
(:mod:`.factory`, which also holds :class:`CompressionTargetTensor`).
"""

from coreai_opt.config.spec.base import CompressionSpec, CompressionType
from coreai_opt.config.spec.compression_simulator import CompressionSimulatorBase
from coreai_opt.config.spec.factory import (
    CompressionComponentFactoryBase,
    CompressionTargetTensor,
)

__all__ = [
    "CompressionComponentFactoryBase",
    "CompressionSimulatorBase",
    "CompressionSpec",
    "CompressionTargetTensor",
    "CompressionType",
]
