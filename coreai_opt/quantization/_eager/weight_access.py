"""A shorter read of parametrized weights for eager-prepared models.

Eager mode keeps the reference's layout: a weight fake-quantizer is a parametrization, so
reading ``module.weight`` runs torch's property, the ``ParametrizationList`` module call
(whose forward probes for a second parametrization with a failing ``hasattr``) and the
fake-quantizer's module call: about 5 µs of Python per weight read, paid on every forward.
:func:`install_module_fast_weight_access` replaces the property of each parametrized tensor with
one that calls the single fake-quantizer's ``forward`` on the original directly whenever
nothing could observe the difference (no hooks on the list or the fake-quantizer, no global
module hooks, no ``parametrize.cached()`` context, no TorchScript trace), and otherwise
falls back to torch's property, which it keeps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize

__all__ = ["install_fast_read", "install_module_fast_weight_access"]

_MARK = "_coreai_opt_fast_read"


def _global_hooks() -> bool:
    return bool(
        _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )


def _fast_property(name: str, slow: property) -> property:
    slow_get = slow.fget
    assert slow_get is not None

    def get(module: nn.Module) -> Any:
        plist = module._modules["parametrizations"]._modules[name]  # type: ignore[union-attr]
        chain = plist._modules  # type: ignore[union-attr]
        if (
            len(chain) != 1
            or not plist.is_tensor  # type: ignore[union-attr]
            or parametrize._cache_enabled
            or plist._forward_hooks  # type: ignore[union-attr]
            or plist._forward_pre_hooks  # type: ignore[union-attr]
            or _global_hooks()
            or torch._C._get_tracing_state() is not None
        ):
            return slow_get(module)
        fq = chain["0"]
        if fq._forward_hooks or fq._forward_pre_hooks:  # type: ignore[union-attr]
            return slow_get(module)
        original = plist._parameters.get("original")  # type: ignore[union-attr]
        if original is None:
            original = plist._buffers["original"]  # type: ignore[union-attr]
        return fq.forward(original)  # type: ignore[union-attr]

    prop = property(get, slow.fset, slow.fdel, slow.__doc__)
    setattr(prop.fget, _MARK, slow)
    return prop


def install_fast_read(cls: type[nn.Module], name: str) -> None:
    """Replace torch's property for parametrized tensor *name* on the parametrized class
    *cls* by the shorter read (once; torch's property stays the fallback)."""
    current = cls.__dict__.get(name)
    fresh = isinstance(current, property) and not hasattr(current.fget, _MARK)
    if fresh and current.fget is not None:
        setattr(cls, name, _fast_property(name, current))


def install_module_fast_weight_access(module: nn.Module) -> None:
    """Give every parametrized tensor of *module* the shorter read described in the module
    docstring; its submodules are not visited (prepare walks the model once for every
    per-module step)."""
    if parametrize.is_parametrized(module):
        for name in module.parametrizations:  # type: ignore[union-attr]
            install_fast_read(type(module), name)
