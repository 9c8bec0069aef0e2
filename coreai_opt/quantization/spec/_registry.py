"""Key → class registries for the pluggable parts of a quantization spec.

A registry root declares ``REGISTRY = OrderedDict()`` in its class body and may list
``BUILTIN_KEYS``: keys that a spec may name even before the class implementing them is
registered (the working implementations are registered under those keys by the
modules that define them). Validation therefore accepts a registered key, a
registered class, or a built-in key; it never creates placeholder classes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=type)


class RegistryMixin:
    """Adds ``register("key")`` and key/class lookup to a registry root class."""

    REGISTRY: ClassVar[OrderedDict[str, type]]
    BUILTIN_KEYS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def _registry_root(cls) -> type[RegistryMixin]:
        for klass in cls.__mro__:
            if "REGISTRY" in klass.__dict__:
                return klass  # type: ignore[return-value]
        raise TypeError(f"{cls.__name__} has no REGISTRY")

    @classmethod
    def register(cls, key: str) -> Callable[[T], T]:
        """Class decorator registering a subclass under *key*.

        Registering a key twice replaces the earlier class (with a logged warning).
        """
        root = cls._registry_root()
        if not isinstance(key, str) or not key:
            raise TypeError(f"{root.__name__}.register() needs a non-empty str key, got {key!r}")

        def decorator(klass: T) -> T:
            if not (isinstance(klass, type) and issubclass(klass, root)):
                raise TypeError(
                    f"{root.__name__}.register({key!r}) can only decorate subclasses of "
                    f"{root.__name__}, got {klass!r}"
                )
            if key in root.REGISTRY and root.REGISTRY[key] is not klass:
                logger.warning(
                    "%s: key %r was registered to %s; replacing it with %s",
                    root.__name__,
                    key,
                    root.REGISTRY[key].__qualname__,
                    klass.__qualname__,
                )
            root.REGISTRY[key] = klass
            type.__setattr__(klass, "__registry_key__", key)
            return klass

        return decorator

    @classmethod
    def available_keys(cls) -> list[str]:
        """Registered keys followed by built-in keys not registered yet."""
        root = cls._registry_root()
        keys = list(root.REGISTRY)
        keys += sorted(k for k in root.BUILTIN_KEYS if k not in root.REGISTRY)
        return keys

    @classmethod
    def resolve(cls, value: Any, field: str = "value") -> type | str:
        """Validate a registry reference: a key (str) or a registered class.

        Built-in keys (and classes registered under them) come back as the key, so a
        spec names built-in components by key whichever way it was given; other
        registered keys come back as their class. Unknown keys and unregistered classes raise
        ``ValueError``; other types ``TypeError``.
        """
        root = cls._registry_root()
        if isinstance(value, str):
            if value in root.BUILTIN_KEYS:
                return value
            if value in root.REGISTRY:
                return root.REGISTRY[value]
            raise ValueError(
                f"{field}: no class is registered with key {value!r} in the "
                f"{root.__name__} registry; available keys: {root.available_keys()}"
            )
        if isinstance(value, type):
            if value in root.REGISTRY.values():
                key = cls.key_of(value)
                return key if key in root.BUILTIN_KEYS else value
            raise ValueError(
                f"{field}: class {value.__qualname__} is not registered in the "
                f"{root.__name__} registry (register it with @{root.__name__}.register('key')); "
                f"available keys: {root.available_keys()}"
            )
        raise TypeError(
            f"{field} must be a registry key (str) or a registered {root.__name__} subclass, "
            f"got {type(value).__name__}: {value!r}"[:300]
        )

    @classmethod
    def key_of(cls, value: type | str) -> str:
        """Registry key of a registered class (a key is returned unchanged)."""
        if isinstance(value, str):
            return value
        key = value.__dict__.get("__registry_key__")
        root = cls._registry_root()
        if isinstance(key, str) and root.REGISTRY.get(key) is value:
            return key
        for k, klass in root.REGISTRY.items():
            if klass is value:
                return k
        raise ValueError(f"class {value.__qualname__} is not registered in {root.__name__}")
