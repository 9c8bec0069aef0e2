"""Base classes shared by the compression techniques' configs and specs.

``CompressionConfig`` → ``ModuleCompressionConfig`` → ``OpCompressionConfig`` form the
config hierarchy; ``CompressionSpec`` describes one tensor's compression.
"""

from coreai_opt.config.compression_config import (
    CompressionConfig,
    ModuleCompressionConfig,
    OpCompressionConfig,
    WeightOnlyModuleValidationMixin,
    WeightOnlyOpValidationMixin,
)
from coreai_opt.config.spec import CompressionSpec, CompressionType

__all__ = [
    "CompressionConfig",
    "CompressionSpec",
    "CompressionType",
    "ModuleCompressionConfig",
    "OpCompressionConfig",
    "WeightOnlyModuleValidationMixin",
    "WeightOnlyOpValidationMixin",
]
