"""The shorter read of parametrized weights (``_eager/weight_access.py``): same values and
gradients as torch's parametrization property, and torch's property wherever a hook, a
``parametrize.cached()`` context, a second parametrization or a trace could tell."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from eager_helpers import prepare_eager
from torch import nn
from torch.nn.utils import parametrize

from coreai_opt.quantization._eager.weight_access import _MARK


class Net(nn.Module):
    """A conv and a linear: two parametrized weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def _prepared() -> nn.Module:
    torch.manual_seed(0)
    _, model = prepare_eager(Net(), (torch.randn(2, 3, 4, 4),))
    model.train()
    return model


def _slow_read(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """torch's own property, kept by the fast one."""
    fast = type(module).__dict__[name]
    return getattr(fast.fget, _MARK).fget(module)


def _is_fast(module: nn.Module, name: str = "weight") -> bool:
    prop = type(module).__dict__.get(name)
    return isinstance(prop, property) and hasattr(prop.fget, _MARK)


def test_every_weight_gets_the_fast_read() -> None:
    model = _prepared()
    assert _is_fast(model.conv) and _is_fast(model.fc)


@pytest.mark.parametrize("name", ["conv", "fc"])
def test_values_and_gradients_match_torchs_property(name: str) -> None:
    model = _prepared()
    module = getattr(model, name)
    original = module.parametrizations.weight.original
    fq = module.parametrizations.weight[0]
    fq.disable_observer()  # both reads see the same qparams
    fast = module.weight
    slow = _slow_read(module)
    assert torch.equal(fast, slow)
    assert torch.equal(fast, fq(original))
    g = torch.randn_like(fast)
    (gf,) = torch.autograd.grad(fast, original, g)
    (gs,) = torch.autograd.grad(slow, original, g)
    assert torch.equal(gf, gs)


def test_a_hook_on_the_fake_quantizer_is_called() -> None:
    model = _prepared()
    calls: list[str] = []
    fq = model.conv.parametrizations.weight[0]
    handle = fq.register_forward_hook(lambda *_: calls.append("fq"))
    _ = model.conv.weight
    handle.remove()
    _ = model.conv.weight
    assert calls == ["fq"]


def test_a_hook_on_the_parametrization_list_is_called() -> None:
    model = _prepared()
    calls: list[str] = []
    plist = model.fc.parametrizations.weight
    handle = plist.register_forward_pre_hook(lambda *_: calls.append("list"))
    _ = model.fc.weight
    handle.remove()
    assert calls == ["list"]


def test_a_global_module_hook_is_called() -> None:
    model = _prepared()
    seen: list[type] = []
    handle = nn.modules.module.register_module_forward_hook(lambda m, *_: seen.append(type(m)))
    try:
        _ = model.fc.weight
    finally:
        handle.remove()
    assert nn.utils.parametrize.ParametrizationList in seen


def test_cached_context_reads_once() -> None:
    model = _prepared()
    with parametrize.cached():
        assert model.conv.weight is model.conv.weight


def test_a_second_parametrization_is_applied() -> None:
    model = _prepared()
    model.fc.parametrizations.weight[0].disable_observer()

    class Double(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    quantized = model.fc.weight.detach().clone()
    parametrize.register_parametrization(model.fc, "weight", Double())
    assert torch.equal(model.fc.weight, 2 * quantized)


@pytest.mark.parametrize("how", ["deepcopy", "torch.save"])
def test_copies_keep_the_fast_read(how: str) -> None:
    model = _prepared()
    x = torch.randn(2, 3, 4, 4)
    if how == "deepcopy":
        other = copy.deepcopy(model)
    else:
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        other = torch.load(buffer, weights_only=False)
    assert _is_fast(other.conv) and _is_fast(other.fc)
    model.eval()
    other.eval()
    with torch.no_grad():
        assert torch.equal(other(x), model(x))
