"""The Autograd-key wrappers record a graph node only when a gradient is needed."""

from __future__ import annotations

import torch
from ops_cases import FusedFormat, fresh_fused_state, fused_kwargs

ops = torch.ops.coreai_opt


def test_no_graph_node_without_grad() -> None:
    """No input requires grad, or grad mode is off: plain output, same values."""
    x = torch.randn(4, 8)
    s = torch.full((4, 1), 0.05)
    plain = ops.fake_quantize_int(x, s, None, None, -8, 7)
    assert plain.grad_fn is None and not plain.requires_grad
    xr = x.clone().requires_grad_(True)
    with torch.no_grad():
        off = ops.fake_quantize_int(xr, s, None, None, -8, 7)
    assert off.grad_fn is None
    assert torch.equal(off, plain)
    assert ops.fake_quantize_float(xr.detach(), s, torch.float8_e4m3fn).grad_fn is None
    zp = torch.zeros(4, 1)
    assert ops.fake_quantize_lsq(x, s, zp, -8, 7, 1.0).grad_fn is None


def test_graph_node_when_grad_is_needed() -> None:
    """An input that requires grad gets the STE node and matching values."""
    x = torch.randn(4, 8, requires_grad=True)
    s = torch.full((4, 1), 0.05)
    y = ops.fake_quantize_int(x, s, None, None, -8, 7)
    assert y.grad_fn is not None
    assert torch.equal(y.detach(), ops.fake_quantize_int(x.detach(), s, None, None, -8, 7))
    scale = s.clone().requires_grad_(True)
    assert ops.fake_quantize_lsq(x.detach(), scale, torch.zeros(4, 1), -8, 7, 1.0).grad_fn


def test_fused_bumps_state_versions_on_both_paths() -> None:
    """The written state's version counters move whether or not autograd records the call."""
    for requires_grad in (False, True):
        x = torch.randn(4, 8, requires_grad=requires_grad)
        state = fresh_fused_state((1, 1))
        before = [t._version for t in state]
        on = torch.ones(1, dtype=torch.uint8)
        fmt = FusedFormat(torch.int8, -128, 127, symmetric=True)
        ops.fused_fake_quantize(**fused_kwargs(x, on, on, state, [4, 8], fmt, "static"))
        assert all(t._version > v for t, v in zip(state, before, strict=True))
