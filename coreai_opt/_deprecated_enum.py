"""String enums whose renamed members keep working, with a deprecation warning.

``StrEnum`` only exists from Python 3.11, so :class:`StrEnumBase` provides the same
behaviour (members are ``str`` instances, ``str(member)`` is the value) on every
supported interpreter.

An enum that uses :class:`DeprecatedAliasEnumMeta` may declare
``__deprecated_aliases__ = {"OLD": "NEW"}``. Then ``Enum.OLD``, ``Enum["OLD"]`` and
``Enum("old")`` (the old member's value, case-insensitive) all return ``Enum.NEW`` and
emit a :class:`DeprecationWarning`. Value lookup is case-insensitive for every member.
"""

from __future__ import annotations

import enum
import sys
import warnings
from typing import Any

_SKIPPED_FILES = frozenset({enum.__file__, __file__})


def _caller_stacklevel() -> int:
    """``stacklevel`` pointing at the first frame outside this module and :mod:`enum`."""
    level = 1
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in _SKIPPED_FILES:
        frame = frame.f_back
        level += 1
    return level


class DeprecatedAliasEnumMeta(enum.EnumMeta):
    """Enum metaclass that resolves names listed in ``__deprecated_aliases__``."""

    def _deprecated_aliases(cls) -> dict[str, str]:
        aliases = cls.__dict__.get("__deprecated_aliases__", {})
        return dict(aliases) if isinstance(aliases, dict) else {}

    def _resolve_alias(cls, name: str, value: str | None = None) -> Any:
        """The member alias *name* stands for, with a DeprecationWarning.

        The text names what the caller wrote: the attribute ``X.OLD`` or, when *value*
        is given, the value lookup ``X('old')``.
        """
        target = cls._deprecated_aliases()[name]
        member = cls._member_map_[target]
        if value is None:
            text = (
                f"{cls.__name__}.{name} is deprecated, use {cls.__name__}.{target} instead; "
                f"the alias will be removed in a future release."
            )
        else:
            text = (
                f"{cls.__name__}({value!r}) is deprecated, use {cls.__name__}("
                f"{member.value!r}) or {cls.__name__}.{target} instead; the value {value!r} "
                f"will stop resolving in a future release."
            )
        warnings.warn(text, DeprecationWarning, stacklevel=_caller_stacklevel())
        return member

    def __getattr__(cls, name: str) -> Any:
        """Resolve a deprecated alias on attribute access (``Enum.OLD``)."""
        if not name.startswith("__") and name in cls._deprecated_aliases():
            return cls._resolve_alias(name)
        raise AttributeError(f"type object {cls.__name__!r} has no attribute {name!r}")

    def __getitem__(cls, name: str) -> Any:
        """Resolve a deprecated alias on item access (``Enum["OLD"]``)."""
        if isinstance(name, str) and name in cls._deprecated_aliases():
            return cls._resolve_alias(name)
        return super().__getitem__(name)

    def alias_for_value(cls, value: str) -> Any:
        """Return the member a deprecated alias *value* stands for (with a warning).

        The alias value of ``OLD`` is ``"old"``; the comparison is case-insensitive. The
        warning names the value lookup (``Enum('old')``). Returns None when *value*
        names no alias.
        """
        folded = value.casefold()
        for alias in cls._deprecated_aliases():
            if alias.casefold() == folded:
                return cls._resolve_alias(alias, value=value)
        return None


class StrEnumBase(str, enum.Enum, metaclass=DeprecatedAliasEnumMeta):
    """``str`` enum with case-insensitive value lookup and deprecated aliases.

    ``auto()`` produces the lower-cased member name. ``str(member)`` and
    ``format(member)`` give the value, as with :class:`enum.StrEnum`.
    """

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> str:
        return name.lower()

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        folded = value.casefold()
        for member in cls:
            if str(member.value).casefold() == folded:
                return member
        member = type(cls).alias_for_value(cls, value)
        if member is None:
            raise ValueError(
                f"{value!r} is not a valid {cls.__name__}; allowed values: "
                f"{cls.allowed_values()} (case-insensitive)"
            )
        return member

    @classmethod
    def allowed_values(cls) -> list[str]:
        """Values accepted by lookup (deprecated aliases excluded)."""
        return [str(m.value) for m in cls]
