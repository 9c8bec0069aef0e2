"""coreai_opt: PyTorch quantization whose numerics run as C++ dispatcher ops.

Importing the package warns (``UntestedTorchVersionWarning``) when the running torch is
outside the tested range, then loads the op library (``torch.ops.coreai_opt.*``) after
checking it was built for the running torch; typed wrappers live in ``coreai_opt._ops``.
"""

from coreai_opt._dependencies import (
    DependencyVersionWarning,
    UntestedTorchVersionWarning,
    warn_if_untested_torch,
)

warn_if_untested_torch()

from coreai_opt._loader import load_library as _load_library  # noqa: E402

_LIBRARY_PATH = _load_library()

from coreai_opt import _ops, common, config, quantization  # noqa: E402, F401  (subpackages bound as attributes)
from coreai_opt._export_backend import CoreMLExportError, ExportBackend  # noqa: E402
from coreai_opt._version import __version__  # noqa: E402

__all__ = [
    "CoreMLExportError",
    "DependencyVersionWarning",
    "ExportBackend",
    "UntestedTorchVersionWarning",
    "__version__",
]
