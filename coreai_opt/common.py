"""Names the reference keeps in ``coreai_opt.common``: the export backends, the Core ML
export error and the compression types, importable from here unchanged."""

from __future__ import annotations

from coreai_opt._export_backend import CoreMLExportError, ExportBackend
from coreai_opt.config.spec.base import CompressionType

__all__ = ["CompressionType", "CoreMLExportError", "ExportBackend"]
