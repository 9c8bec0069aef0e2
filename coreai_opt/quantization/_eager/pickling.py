"""Pickling (``torch.save`` of a whole model) for modules with weight parametrizations.

``torch.nn.utils.parametrize`` gives each parametrized module a class created on the fly
whose ``__getstate__`` refuses to pickle. Eager mode keeps the reference's layout (weight
fake-quantizers are parametrizations), so it teaches those classes to pickle: the module
is rebuilt from its original class, the parametrized class and its properties are created
again the way ``parametrize`` creates them, and the state (parametrizations included)
is restored by pickle afterwards, which keeps reference cycles (hooks → runtime → model)
intact.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.utils import parametrize

from coreai_opt.quantization._eager.weight_access import install_fast_read

__all__ = ["make_module_picklable"]


def _reduce_ex(self: nn.Module, protocol: int) -> tuple[Any, ...]:
    base = type(self).__bases__[0]
    names = tuple(self.parametrizations.keys())  # type: ignore[union-attr]
    return (_new_parametrized, (base, names), nn.Module.__getstate__(self))


def _new_parametrized(base: type[nn.Module], names: tuple[str, ...]) -> nn.Module:
    module = base.__new__(base)
    parametrize._inject_new_class(module)
    for name in names:
        parametrize._inject_property(module, name)
        install_fast_read(type(module), name)
    type(module).__reduce_ex__ = _reduce_ex  # type: ignore[method-assign,assignment]
    type(module).__setstate__ = nn.Module.__setstate__  # type: ignore[method-assign]
    return module


def make_module_picklable(module: nn.Module) -> None:
    """Let *module* be pickled (and so ``torch.save`` d) if it is parametrized; its
    submodules are not visited (prepare walks the model once for every per-module step)."""
    if parametrize.is_parametrized(module):
        type(module).__reduce_ex__ = _reduce_ex  # type: ignore[method-assign,assignment]
