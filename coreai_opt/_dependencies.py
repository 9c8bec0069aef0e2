"""Warnings for dependencies whose installed version this release was not tested with.

Importing :mod:`coreai_opt` calls :func:`warn_if_untested_torch`: a torch outside
:data:`TESTED_TORCH_RANGE` (major.minor, both ends included) still imports, with an
:class:`UntestedTorchVersionWarning`. coreai_opt does not use torchao, so the
reference's torch/torchao compatibility warning has no counterpart here.
"""

from __future__ import annotations

import re
import warnings

__all__ = [
    "TESTED_TORCH_RANGE",
    "DependencyVersionWarning",
    "UntestedTorchVersionWarning",
    "torch_version_is_tested",
    "warn_if_untested_torch",
]

TESTED_TORCH_RANGE: tuple[tuple[int, int], tuple[int, int]] = ((2, 8), (2, 14))
"""Oldest and newest torch ``(major, minor)`` this release is tested with (inclusive)."""

_MAJOR_MINOR = re.compile(r"\s*(\d+)\.(\d+)")


class DependencyVersionWarning(UserWarning):
    """An installed dependency has a version this release of coreai_opt was not tested with."""


class UntestedTorchVersionWarning(DependencyVersionWarning):
    """The running torch is outside the range of versions coreai_opt is tested with."""


def _major_minor(version: str) -> tuple[int, int] | None:
    match = _MAJOR_MINOR.match(version)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def torch_version_is_tested(version: str) -> bool:
    """True when torch *version* (e.g. ``"2.13.0+cpu"``) lies in :data:`TESTED_TORCH_RANGE`.

    Only major.minor counts: local labels (``+cpu``), patch releases and pre-release
    tags of a tested minor version are tested too. An unparsable version is untested.
    """
    parsed = _major_minor(version)
    if parsed is None:
        return False
    low, high = TESTED_TORCH_RANGE
    return low <= parsed <= high


def warn_if_untested_torch(version: str | None = None) -> bool:
    """Warn (:class:`UntestedTorchVersionWarning`) when torch *version* is untested.

    *version* defaults to the running ``torch.__version__``. Returns True when the
    version is tested (no warning).
    """
    if version is None:
        import torch

        version = str(torch.__version__)
    if torch_version_is_tested(version):
        return True
    (low_major, low_minor), (high_major, high_minor) = TESTED_TORCH_RANGE
    warnings.warn(
        f"coreai_opt is tested with torch {low_major}.{low_minor} through "
        f"{high_major}.{high_minor}, but torch {version} is installed; it may work, but "
        f"results and errors are not covered by the tests. Install a torch version in that "
        f"range to silence this warning.",
        UntestedTorchVersionWarning,
        stacklevel=2,
    )
    return False
