"""Every fake-quantize op returns x's layout (torch.empty_like(x)) on every path — the CPU
kernels (which run in the memory order of a channels_last or transposed x without copying
it), the Meta kernels and the CompositeExplicitAutograd reference — with the values of the
same call on a contiguous copy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from ops_cases import TENSOR_OPS
from torch._C import DispatchKey, DispatchKeySet

ops = torch.ops.coreai_opt
_REFERENCE = DispatchKeySet(DispatchKey.CompositeExplicitAutograd)

# (x maker, qparam shape): channels_last or transposed x, with per-tensor, per-channel,
# blocks along one dimension, and blocks along two (which the CPU kernels run in the
# logical order and copy into x's layout).
LAYOUTS = [
    pytest.param("cl", (1, 1, 1, 1), id="cl-tensor"),
    pytest.param("cl", (1, 8, 1, 1), id="cl-channel"),
    pytest.param("cl", (1, 4, 1, 1), id="cl-blocks-one-dim"),
    pytest.param("cl", (2, 4, 1, 1), id="cl-blocks-two-dims"),
    pytest.param("t", (6, 1), id="transposed-channel"),
    pytest.param("t", (1, 5), id="transposed-blocks"),
]


def _x(kind: str) -> torch.Tensor:
    if kind == "cl":
        return (torch.randn(32, 8, 6, 5) * 2).to(memory_format=torch.channels_last)
    return (torch.randn(40, 6) * 2).t()


def _calls(x: torch.Tensor, q_shape: tuple[int, ...]) -> dict[str, Callable[..., object]]:
    """Each op as a function of (x, grad) with qparams of q_shape."""
    s = torch.rand(q_shape) * 0.05 + 0.02
    zp = torch.randint(-3, 4, q_shape, dtype=torch.int32)
    zp_f = zp.float() + 0.3
    mv = -torch.rand(q_shape)
    return {
        "fake_quantize_int": lambda x, g: (ops.fake_quantize_int.default, (x, s, zp, None, -8, 7)),
        "fake_quantize_int minval": lambda x, g: (
            ops.fake_quantize_int.default,
            (x, s, None, mv, 0, 15),
        ),
        "fake_quantize_int_backward": lambda x, g: (
            ops.fake_quantize_int_backward.default,
            (g, x, s, zp, None, -8, 7),
        ),
        "fake_quantize_float": lambda x, g: (
            ops.fake_quantize_float.default,
            (x, s, torch.float8_e4m3fn),
        ),
        "fake_quantize_float_backward": lambda x, g: (
            ops.fake_quantize_float_backward.default,
            (g, x, s * 0.01, torch.float8_e4m3fn),
        ),
        "fake_quantize_lsq": lambda x, g: (ops.fake_quantize_lsq.default, (x, s, zp_f, -8, 7, 1.0)),
        "fake_quantize_lsq_backward": lambda x, g: (
            ops.fake_quantize_lsq_backward.default,
            (g, x, s, zp_f, -8, 7, 0.5),
        ),
    }


def _first(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # type: ignore[return-value]


@pytest.mark.parametrize("path", ["cpu", "reference", "meta"])
@pytest.mark.parametrize(("kind", "q_shape"), LAYOUTS)
def test_outputs_take_the_input_layout(kind: str, q_shape: tuple[int, ...], path: str) -> None:
    x = _x(kind)
    assert not x.is_contiguous()
    g = torch.randn(x.shape)  # contiguous: grad may be laid out unlike x
    for name, make in _calls(x, q_shape).items():
        overload, args = make(x, g)
        _, args_c = make(x.contiguous(), g)
        if path == "meta":
            meta = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)
            assert _first(overload(*meta)).stride() == x.stride(), name
            continue
        call = overload if path == "cpu" else lambda *a, o=overload: o.redispatch(_REFERENCE, *a)
        got, want = call(*args), overload(*args_c)
        assert _first(got).stride() == x.stride(), name
        got_t = got if isinstance(got, tuple) else (got,)
        want_t = want if isinstance(want, tuple) else (want,)
        for a, b in zip(got_t, want_t, strict=True):
            # The LSQ qparam gradients are sums: the memory order changes their order.
            exact = a.shape == x.shape
            tol = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-4, "atol": 1e-5}
            torch.testing.assert_close(a, b, equal_nan=True, **tol, msg=name)


@pytest.mark.parametrize("x_cl", [True, False], ids=["x-channels-last", "grad-channels-last"])
def test_grad_laid_out_unlike_x(x_cl: bool) -> None:
    """A grad whose layout differs from x's (NCHW against channels_last, either way) is
    copied into x's memory order in 16 x 16 tiles with ragged edges (37 channels, 5 x 7
    pixels): the backward ops, and the mask backward with a mask laid out as x, give the
    values of the all-contiguous call."""
    x = torch.randn(3, 37, 5, 7) * 2
    g = torch.randn(x.shape)
    cl = torch.channels_last
    x_in, g_in = (x.to(memory_format=cl), g) if x_cl else (x, g.to(memory_format=cl))
    for q_shape in ((1, 1, 1, 1), (1, 37, 1, 1)):
        for name, make in _calls(x_in, q_shape).items():
            if "backward" not in name:
                continue
            overload, args = make(x_in, g_in)
            _, want_args = make(x, g)
            got, want = overload(*args), overload(*want_args)
            got_t = got if isinstance(got, tuple) else (got,)
            want_t = want if isinstance(want, tuple) else (want,)
            for a, b in zip(got_t, want_t, strict=True):
                exact = a.shape == x.shape
                tol = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-4, "atol": 1e-5}
                torch.testing.assert_close(a, b, **tol, msg=name)
    mask = torch.empty_like(x_in, dtype=torch.bool).copy_(x > 0)  # laid out as x
    got = ops.fake_quantize_mask_backward(g_in, mask)
    assert got.stride() == x_in.stride()
    assert torch.equal(got, ops.fake_quantize_mask_backward(g, x > 0))


@pytest.mark.parametrize("path", ["cpu", "reference", "meta"])
def test_an_input_with_gaps_gives_a_contiguous_output(path: str) -> None:
    """Inductor may hand a flexible_layout op a view with gaps (a slice of a buffer): the
    outputs are contiguous (torch.empty_like's rule) on every path, with the values of the
    same call on a contiguous copy."""
    x = (torch.randn(32, 8, 6, 10) * 2)[..., ::2]
    assert not x.is_contiguous() and x.stride()[-1] == 2
    g = torch.randn(x.shape)
    for name, make in _calls(x, (1, 8, 1, 1)).items():
        overload, args = make(x, g)
        _, args_c = make(x.contiguous(), g)
        if path == "meta":
            meta = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)
            assert _first(overload(*meta)).is_contiguous(), name
            continue
        call = overload if path == "cpu" else lambda *a, o=overload: o.redispatch(_REFERENCE, *a)
        got = _first(call(*args))
        assert got.is_contiguous(), name
        torch.testing.assert_close(got, _first(overload(*args_c)), rtol=0, atol=0, msg=name)


# The ops whose outputs of x's shape take x's layout (the fake-quantize ops and their backward
# ops). The forward ops are tagged flexible_layout, so Inductor hands them the layout it
# picked for x (channels_last after a conv) instead of converting x to the traced strides
# and the result back; the tests above are what makes the tag safe. The backward ops are
# tagged needs_fixed_stride_order, so Inductor writes grad in the order traced for it (x's)
# rather than leave it to the op to transpose.
# (fake_quantize_mask_backward_ writes into its grad argument: its output is that tensor.)
LAYOUT_PRESERVING = {
    name for name in TENSOR_OPS if "fake_quantize" in name and not name.endswith("_")
}
LAYOUT_PRESERVING_BACKWARD = {name for name in LAYOUT_PRESERVING if name.endswith("_backward")}


def test_the_layout_preserving_ops_carry_their_inductor_layout_tags() -> None:
    assert len(LAYOUT_PRESERVING) == 10
    assert len(LAYOUT_PRESERVING_BACKWARD) == 5

    def tagged(tag: torch.Tag) -> set[str]:
        return {name for name in TENSOR_OPS if tag in getattr(ops, name).default.tags}

    assert tagged(torch.Tag.flexible_layout) == LAYOUT_PRESERVING - LAYOUT_PRESERVING_BACKWARD
    assert tagged(torch.Tag.needs_fixed_stride_order) == LAYOUT_PRESERVING_BACKWARD
