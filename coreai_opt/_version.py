"""Package version (kept in one place: pyproject.toml reads it), the coreai-opt release
whose API this package implements (0.3.0, behaviour.md §12)."""

__version__ = "0.3.0"
