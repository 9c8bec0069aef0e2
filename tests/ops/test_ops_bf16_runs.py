"""bfloat16 fake-quantize where one scale covers a whole run of elements.

On AVX2 these runs use shuffle-free bfloat16 loads and stores and a rounding without a NaN
blend (csrc/cpu/kernels/vec_io.h). These tests pin the exact bits of that path: every
finite lane, the sign of zero, NaN and infinity lanes, run tails that are not a multiple of
the vector width, and the fallback taken when a float offset is NaN.
"""

from __future__ import annotations

import pytest
import reference as ref
import torch
from ops_cases import assert_same_bits

ops = torch.ops.coreai_opt

# (x shape, scale shape): per-tensor, per-channel rows (long and with a tail), blocks of 32
# and 64, a short row shorter than one vector pair, a row with a scalar tail.
RUN_LAYOUTS = [
    ((37, 1000), (1, 1)),
    ((48, 4101), (48, 1)),
    ((64, 256), (64, 8)),
    ((16, 512), (16, 8)),
    ((40, 15), (40, 1)),
    ((9, 23), (9, 1)),
]


def special_input(shape: tuple[int, ...], scale: torch.Tensor) -> torch.Tensor:
    """Random bfloat16 values around the range, with NaN, +-inf, +-0 and exact ties."""
    s = ref.expand_qparam(scale, shape)
    x = (torch.randn(shape) * 40.0 * s).to(torch.bfloat16)
    flat = x.view(-1)
    n = flat.numel()
    picks = torch.randperm(n)[: max(6, n // 50)]
    specials = torch.tensor(
        [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -float("nan")],
        dtype=torch.bfloat16,
    )
    flat[picks] = specials.repeat(len(picks) // len(specials) + 1)[: len(picks)]
    return x


def pow2_scale(q_shape: tuple[int, ...]) -> torch.Tensor:
    """Power-of-two scales, so bfloat16 inputs hit exact x / s ties."""
    return torch.exp2(torch.randint(-6, 2, q_shape).to(torch.float32))


@pytest.mark.parametrize(("x_shape", "q_shape"), RUN_LAYOUTS)
@pytest.mark.parametrize("form", ["zp_int32", "zp_float", "minval", "none"])
@pytest.mark.parametrize("scales", ["random", "pow2"])
def test_forward_and_backward_bits(
    x_shape: tuple[int, ...], q_shape: tuple[int, ...], form: str, scales: str
) -> None:
    torch.manual_seed(hash((x_shape, form, scales)) % 2**31)
    scale = pow2_scale(q_shape) if scales == "pow2" else torch.rand(q_shape) * 0.1 + 1e-3
    zp = mv = None
    if form == "zp_int32":
        zp = torch.randint(-8, 8, q_shape, dtype=torch.int32)
    elif form == "zp_float":
        zp = torch.randint(-8, 8, q_shape).to(torch.float32)
    elif form == "minval":
        mv = -torch.rand(q_shape)
    x = special_input(x_shape, scale)
    y = ops.fake_quantize_int(x, scale, zp, mv, -128, 127)
    assert_same_bits(y, ref.fake_quantize_int(x, scale, zp, mv, -128, 127))

    g = special_input(x_shape, scale)
    gx = ops.fake_quantize_int_backward(g, x, scale, zp, mv, -128, 127)
    assert_same_bits(gx, ref.ste_grad(g, ref.int_mask(x, scale, zp, mv, -128, 127), torch.bfloat16))


def test_round_half_even_into_bfloat16() -> None:
    """Outputs that fall between two bfloat16 values round to the even one, as torch does."""
    scale = torch.tensor([[1.0 + 2.0**-9], [1.0 + 3 * 2.0**-9]])  # k * s has 9+ mantissa bits
    k = torch.arange(-120, 120, dtype=torch.float32)
    x = (k * scale).to(torch.bfloat16)
    y = ops.fake_quantize_int(x, scale, None, None, -128, 127)
    assert_same_bits(y, ref.fake_quantize_int(x, scale, None, None, -128, 127))


@pytest.mark.parametrize("form", ["zp_float", "minval"])
def test_nan_offset_takes_the_checked_path(form: str) -> None:
    """A NaN float offset with a full payload still gives NaN lanes, never inf or -0."""
    q_shape = (8, 1)
    scale = torch.rand(q_shape) + 0.01
    bad = torch.tensor([0x7FFFFFFF], dtype=torch.int32).view(torch.float32)
    off = torch.zeros(q_shape)
    off[3] = bad
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    zp, mv = (off, None) if form == "zp_float" else (None, off)
    y = ops.fake_quantize_int(x, scale, zp, mv, -128, 127)
    want = ref.fake_quantize_int(x, scale, zp, mv, -128, 127)
    assert_same_bits(y, want)
    assert y[3].isnan().all()


def test_lanes_keep_their_order() -> None:
    """Each output lands where its input was: distinct values survive a per-channel pass."""
    x = torch.arange(-128, 128, dtype=torch.float32).repeat(8, 1).to(torch.bfloat16)
    x = x * torch.arange(1, 9, dtype=torch.bfloat16)[:, None]
    scale = torch.arange(1, 9, dtype=torch.float32)[:, None]
    y = ops.fake_quantize_int(x, scale, None, None, -128, 127)
    assert torch.equal(y, x)
