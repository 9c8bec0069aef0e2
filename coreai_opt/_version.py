"""Package version (kept in one place so that setup and runtime agree)."""

__version__ = "0.2.0"
