"""Key → class registries for the pluggable parts of a quantization spec.

A registry is an ordered ``{key: class}`` table (:class:`ClassRegistry`). The tables of
the three component families live here, in the data layer, so that
``QuantizationSpec`` can validate ``fake_quantize_cls`` / ``qparam_calculator_cls`` /
``range_calculator_cls`` without importing the ``nn.Module`` implementations:

* :data:`FAKE_QUANTIZE_REGISTRY` (root class ``FakeQuantizeImplBase``),
* :data:`QPARAMS_CALCULATOR_REGISTRY` (root class ``QParamsCalculatorBase``),
* :data:`RANGE_CALCULATOR_REGISTRY` (root class ``RangeCalculatorBase``).

The root classes bind these tables as their ``REGISTRY`` and every implementation
registers itself (``@Root.register("key")``) when its module is imported. A registry
also knows which module defines each built-in key; the first lookup of a built-in key
imports that module (so the key resolves to its class), which keeps those imports out of
import time.
"""

from __future__ import annotations

import importlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=type)

_SPEC_PACKAGE = "coreai_opt.quantization.spec"


class ClassRegistry(OrderedDict[str, type]):
    """Ordered ``key → class`` table of one component family.

    Attributes:
        name: name of the family's root class (used in messages).
        builtin_modules: built-in key → module that registers it on import.
    """

    def __init__(self, name: str, builtin_modules: Mapping[str, str] | None = None) -> None:
        """Create an empty registry called *name* with its built-in key table."""
        super().__init__()
        self.name = name
        self.builtin_modules: dict[str, str] = dict(builtin_modules or {})

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as name, built-in table and entries (OrderedDict's default drops the name)."""
        return (type(self), (self.name, self.builtin_modules), None, None, iter(self.items()))

    def load_builtins(self) -> None:
        """Import every module that defines a built-in key (registers them all)."""
        for module in dict.fromkeys(self.builtin_modules.values()):
            importlib.import_module(module)

    def lookup(self, key: str) -> type | None:
        """The class registered under *key*, importing its module for a built-in key.

        Returns None for a key that is neither registered nor built in.
        """
        if key not in self and key in self.builtin_modules:
            importlib.import_module(self.builtin_modules[key])
        return self.get(key)

    def keys_for_message(self) -> list[str]:
        """Registered keys followed by the built-in keys whose module is not loaded yet."""
        keys = list(self)
        keys += [k for k in self.builtin_modules if k not in self]
        return keys

    def resolve(self, value: object, field: str = "value") -> type:
        """The registered class that *value* (a key or a registered class) stands for.

        Raises ``ValueError`` for an unknown key, an unregistered class and any other
        value, naming the registry and its keys.
        """
        if isinstance(value, str):
            klass = self.lookup(value)
            if klass is None:
                raise ValueError(
                    f"{field}: no class is registered with key {value!r} in the {self.name} "
                    f"registry; available keys: {self.keys_for_message()}"
                )
            return klass
        if isinstance(value, type):
            if any(klass is value for klass in self.values()):
                return value
            raise ValueError(
                f"{field}: class {value.__qualname__} is not registered in the {self.name} "
                f"registry (register it with @{self.name}.register('key')); available keys: "
                f"{self.keys_for_message()}"
            )
        raise ValueError(
            f"{field} must be a key of the {self.name} registry or a class registered there, "
            f"got {type(value).__name__}: {value!r}"[:300]
            + f"; available keys: {self.keys_for_message()}"
        )

    def key_of(self, value: type | str) -> str:
        """Registry key of a registered class (a key is returned unchanged)."""
        if isinstance(value, str):
            return value
        key = value.__dict__.get("__registry_key__")
        if isinstance(key, str) and self.get(key) is value:
            return key
        for k, klass in self.items():
            if klass is value:
                return k
        raise ValueError(
            f"class {value.__qualname__} is not registered in the {self.name} registry; "
            f"available keys: {self.keys_for_message()}"
        )


FAKE_QUANTIZE_REGISTRY = ClassRegistry(
    "FakeQuantizeImplBase",
    {"default": f"{_SPEC_PACKAGE}.fake_quantize", "lsq": f"{_SPEC_PACKAGE}.fake_quantize"},
)
"""Fake-quantize implementations (``fake_quantize_cls``)."""

QPARAMS_CALCULATOR_REGISTRY = ClassRegistry(
    "QParamsCalculatorBase",
    {
        key: f"{_SPEC_PACKAGE}.qparams_calculator"
        for key in ("default", "static", "moving_average", "global_minmax", "dynamic")
    },
)
"""Qparam calculators (``qparam_calculator_cls``)."""

RANGE_CALCULATOR_REGISTRY = ClassRegistry(
    "RangeCalculatorBase", {"minmax": f"{_SPEC_PACKAGE}.range_calculator"}
)
"""Range calculators (``range_calculator_cls``)."""


class RegistryMixin:
    """Adds ``register("key")`` and key/class lookup to a registry root class.

    The root declares ``REGISTRY`` (a :class:`ClassRegistry`) in its class body;
    subclasses share it.
    """

    REGISTRY: ClassVar[ClassRegistry]

    @classmethod
    def _registry_root(cls) -> type[RegistryMixin]:
        for klass in cls.__mro__:
            if "REGISTRY" in klass.__dict__:
                return klass  # type: ignore[return-value]
        raise TypeError(f"{cls.__name__} has no REGISTRY")

    @classmethod
    def _table(cls) -> ClassRegistry:
        root = cls._registry_root()
        table = root.REGISTRY
        if not isinstance(table, ClassRegistry):
            raise TypeError(
                f"{root.__name__}.REGISTRY must be a ClassRegistry, got {type(table).__name__}"
            )
        return table

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
            table = cls._table()
            if key in table and table[key] is not klass:
                logger.warning(
                    "%s: key %r was registered to %s; replacing it with %s",
                    root.__name__,
                    key,
                    table[key].__qualname__,
                    klass.__qualname__,
                )
            table[key] = klass
            type.__setattr__(klass, "__registry_key__", key)
            return klass

        return decorator

    @classmethod
    def available_keys(cls) -> list[str]:
        """Registered keys followed by built-in keys whose module is not loaded yet."""
        return cls._table().keys_for_message()

    @classmethod
    def resolve(cls, value: Any, field: str = "value") -> type:
        """The registered class for a key (str) or a registered class.

        Built-in keys load the module that defines them. Anything else (unknown key,
        unregistered class, other type) raises ``ValueError`` naming the registry and
        its keys.
        """
        return cls._table().resolve(value, field)

    @classmethod
    def key_of(cls, value: type | str) -> str:
        """Registry key of a registered class (a key is returned unchanged)."""
        return cls._table().key_of(value)

    @classmethod
    def get_class(cls, key: str) -> type:
        """The class registered under *key* (``ValueError`` listing the keys otherwise)."""
        return cls.resolve(key, "key")

    @classmethod
    def list_registry_keys(cls) -> set[str]:
        """Keys registered so far (built-in keys included once their module is loaded)."""
        table = cls._table()
        table.load_builtins()
        return set(table)

    @classmethod
    def list_registry_values(cls) -> set[type]:
        """Classes registered so far (the built-in ones included)."""
        table = cls._table()
        table.load_builtins()
        return set(table.values())
