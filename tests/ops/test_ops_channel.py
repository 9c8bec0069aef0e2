"""channel_scale_shift (graph mode's conv-bn QAT rescale) and its backward: the CPU kernels
against the aten product and sum they replace, in every layout they walk and in those they
hand to the composite; the reference and Meta kernels; autograd."""

from __future__ import annotations

import pytest
import torch
from torch._C import DispatchKey, DispatchKeySet

ops = torch.ops.coreai_opt
_REFERENCE = DispatchKeySet(DispatchKey.CompositeExplicitAutograd)


def _view(x: torch.Tensor) -> list[int]:
    return [1, -1] + [1] * (x.dim() - 2)


def _aten(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    y = x * scale.view(_view(x))
    return y if shift is None else y + shift.view(_view(x))


def _inputs(shape: tuple[int, ...], layout: str, dtype: torch.dtype = torch.float32) -> dict:
    torch.manual_seed(sum(shape))
    x = torch.randn(shape, dtype=dtype) * 3
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "channels_last_3d":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    elif layout == "sliced":  # a gap after every row: neither walk applies
        x = (torch.randn(*shape[:-1], shape[-1] + 3, dtype=dtype) * 3)[..., : shape[-1]]
    c = shape[1]
    return {
        "x": x,
        "scale": (torch.rand(c) + 0.25).to(dtype),
        "shift": torch.randn(c).to(dtype),
    }


# (shape, layout): NCHW planes with tails past the 16 sum lanes and past one 1024-element
# flush, 2-D and channels_last rows (channels innermost), 5-D in both forms, and layouts the
# kernels leave to the composite.
CASES = [
    pytest.param((32, 32, 16, 16), "contiguous", id="nchw"),
    pytest.param((3, 5, 7, 9), "contiguous", id="nchw_tails"),
    pytest.param((2, 3, 1100), "contiguous", id="ncl_long_planes"),
    pytest.param((50, 37), "contiguous", id="rows_2d"),
    pytest.param((4, 37, 3, 5), "channels_last", id="channels_last"),
    pytest.param((2, 19, 3, 4, 5), "contiguous", id="ncdhw"),
    pytest.param((2, 19, 3, 4, 5), "channels_last_3d", id="channels_last_3d"),
    pytest.param((4, 6, 5, 7), "sliced", id="sliced_composite"),
]


@pytest.mark.parametrize(("shape", "layout"), CASES)
@pytest.mark.parametrize("with_shift", [True, False], ids=["shift", "no_shift"])
def test_forward_is_the_aten_product_and_sum(
    shape: tuple[int, ...], layout: str, with_shift: bool
) -> None:
    """Bit for bit the aten ops (product rounded before the sum), in x's layout, on the CPU
    kernels and the reference alike."""
    a = _inputs(shape, layout)
    shift = a["shift"] if with_shift else None
    want = _aten(a["x"], a["scale"], shift)
    for got in (
        ops.channel_scale_shift(a["x"], a["scale"], shift),
        ops.channel_scale_shift.default.redispatch(_REFERENCE, a["x"], a["scale"], shift),
    ):
        assert torch.equal(got, want)
        assert got.stride() == torch.empty_like(a["x"]).stride()


@pytest.mark.parametrize(("shape", "layout"), CASES)
def test_backward_matches_aten_autograd(shape: tuple[int, ...], layout: str) -> None:
    """grad_x bit for bit; the per-channel sums within float32 rounding of aten's."""
    a = _inputs(shape, layout)
    g = torch.randn(shape)
    ours = {k: v.clone().requires_grad_() for k, v in a.items()}
    ops.channel_scale_shift(ours["x"], ours["scale"], ours["shift"]).backward(g)
    theirs = {k: v.clone().requires_grad_() for k, v in a.items()}
    _aten(theirs["x"], theirs["scale"], theirs["shift"]).backward(g)
    assert torch.equal(ours["x"].grad, theirs["x"].grad)
    for key in ("scale", "shift"):
        torch.testing.assert_close(ours[key].grad, theirs[key].grad, rtol=2e-5, atol=2e-4)


def test_backward_grad_in_another_layout() -> None:
    """A grad laid out unlike x (NCHW against channels_last x) gives the same gradients."""
    a = _inputs((4, 37, 3, 5), "channels_last")
    g = torch.randn(4, 37, 3, 5)
    gx, gs, gb = ops.channel_scale_shift_backward(g, a["x"], a["scale"])
    gx2, gs2, gb2 = ops.channel_scale_shift_backward(
        g.contiguous(memory_format=torch.channels_last), a["x"], a["scale"]
    )
    assert torch.equal(gx, gx2) and torch.equal(gs, gs2) and torch.equal(gb, gb2)
    assert gx.is_contiguous(memory_format=torch.channels_last)


def test_backward_without_shift_gives_no_shift_gradient() -> None:
    a = _inputs((2, 4, 3, 3), "contiguous")
    x, s = a["x"].requires_grad_(), a["scale"].requires_grad_()
    ops.channel_scale_shift(x, s).sum().backward()
    torch.testing.assert_close(s.grad, a["x"].detach().sum((0, 2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, s.detach().view(1, -1, 1, 1).expand(2, 4, 3, 3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_dtypes_take_the_composite(dtype: torch.dtype) -> None:
    """Half inputs: the aten bits forward; sums accumulated in float32, returned in x's dtype."""
    a = _inputs((2, 5, 4, 4), "contiguous", dtype)
    assert torch.equal(ops.channel_scale_shift(a["x"], a["scale"], a["shift"]), _aten(**a))
    g = torch.randn(2, 5, 4, 4, dtype=dtype)
    gx, gs, gb = ops.channel_scale_shift_backward(g, a["x"], a["scale"])
    assert torch.equal(gx, g * a["scale"].view(1, -1, 1, 1))
    assert gs.dtype == gb.dtype == dtype
    want = (g.float() * a["x"].float()).sum((0, 2, 3)).to(dtype)
    torch.testing.assert_close(gs, want)


def test_meta_shapes_and_layouts() -> None:
    a = _inputs((4, 6, 5, 7), "channels_last")
    meta = {k: v.to("meta") for k, v in a.items()}
    y = ops.channel_scale_shift(meta["x"], meta["scale"], meta["shift"])
    assert y.shape == a["x"].shape and y.stride() == a["x"].stride()
    gx, gs, gb = ops.channel_scale_shift_backward(meta["x"], meta["x"], meta["scale"])
    assert gx.stride() == a["x"].stride() and gs.shape == gb.shape == (6,)


def test_empty_batch() -> None:
    x = torch.empty(0, 3, 4, 4)
    y = ops.channel_scale_shift(x, torch.ones(3), torch.zeros(3))
    assert y.shape == x.shape
    gx, gs, gb = ops.channel_scale_shift_backward(x, x, torch.ones(3))
    assert gx.shape == x.shape and torch.equal(gs, torch.zeros(3)) and torch.equal(gb, gs)


def test_error_names_the_argument_and_the_allowed_shape() -> None:
    with pytest.raises(ValueError, match=r"scale has 3 entries but x has 4 channels"):
        ops.channel_scale_shift(torch.ones(2, 4, 3), torch.ones(3), None)
