"""Helpers shared by the inspection tests: the names and source locations a summary shows.

Each helper takes what it describes (a class, a function, a file path) as an argument, so
it reports the caller's classes and file, not this module's.
"""

from __future__ import annotations

import inspect
import os


def qualname(cls: type) -> str:
    """The module-qualified class name the inspector reports as a module type."""
    return f"{cls.__module__}.{cls.__qualname__}"


def line_of(function: object, text: str) -> int:
    """The line number, in *function*'s own source file, of the first line of *function*
    that contains *text*."""
    lines, start = inspect.getsourcelines(function)  # type: ignore[arg-type]
    return start + next(i for i, line in enumerate(lines) if text in line)


def shown_path(path: str) -> str:
    """*path* as the summary shows it: relative to the working directory when it lies
    below it, else unchanged. Callers pass their own ``__file__`` (this module's would be
    the wrong file)."""
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative
