"""coreai_opt.fused_fake_quantize (observe + qparams + fake-quantize, state mutated in place)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import reference as ref
import torch
from ops_cases import (
    FusedFormat,
    block_size_of,
    fresh_fused_state,
    fused_backward_kwargs,
    fused_kwargs,
    schema_args,
)

ops = torch.ops.coreai_opt


def assert_bitexact(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same dtype, shape and bits (NaN equals NaN; +0 equals -0)."""
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


FORMATS = [
    pytest.param(FusedFormat(torch.int8, -128, 127, True), id="int8-sym"),
    pytest.param(FusedFormat(torch.int8, -127, 127, True), id="int8-symclip"),
    pytest.param(FusedFormat(torch.uint8, 0, 255, False), id="uint8-asym"),
    pytest.param(FusedFormat(torch.uint8, 0, 255, False, use_minval=True), id="uint8-asym-minval"),
    pytest.param(FusedFormat(torch.int4, -8, 7, True, use_minval=True), id="int4-sym-minval"),
    pytest.param(FusedFormat(torch.uint4, 0, 15, True), id="uint4-sym"),
    pytest.param(FusedFormat(torch.int2, -2, 1, False), id="int2-asym"),
    pytest.param(FusedFormat(torch.uint2, 0, 3, False, use_minval=True), id="uint2-asym-minval"),
    pytest.param(FusedFormat(torch.float8_e4m3fn), id="e4m3"),
    pytest.param(FusedFormat(torch.float8_e5m2, e8m0=True), id="e5m2-e8m0"),
    pytest.param(FusedFormat(torch.float4_e2m1fn_x2, e8m0=True), id="fp4-e8m0"),
    pytest.param(FusedFormat(torch.float4_e2m1fn_x2), id="fp4-fp32scale"),
]

SHAPES = [
    pytest.param((6, 40), (6, 1), id="channel"),
    pytest.param((4, 64), (4, 2), id="block"),
    pytest.param((5, 7), (), id="tensor"),
]


@dataclass
class State:
    """The mutable buffers of a FakeQuantize module."""

    running_min: torch.Tensor
    running_max: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    minval: torch.Tensor

    @staticmethod
    def fresh(q_shape: list[int]) -> State:
        """Uninitialised running range (±inf) and placeholder qparams."""
        return State(*fresh_fused_state(q_shape))

    def clone(self) -> State:
        """Deep copy."""
        return State(*(t.clone() for t in self.tensors()))

    def to(self, device: str) -> State:
        """Copies on *device*."""
        return State(*(t.to(device) for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The buffers in schema order."""
        return (self.running_min, self.running_max, self.scale, self.zero_point, self.minval)


def call_fused(
    x: torch.Tensor,
    observer_on: torch.Tensor,
    fake_quant_on: torch.Tensor,
    st: State,
    block: list[int],
    f: FusedFormat,
    method: str,
    c: float = 0.01,
    range_min: float | None = None,
    range_max: float | None = None,
) -> torch.Tensor:
    """The op with a State."""
    return ops.fused_fake_quantize(
        **fused_kwargs(
            x, observer_on, fake_quant_on, st.tensors(), block, f, method, c, range_min, range_max
        )
    )


def fused_reference(
    x: torch.Tensor,
    observe: bool,
    quantize: bool,
    st: State,
    block: list[int],
    f: FusedFormat,
    method: str,
    c: float = 0.01,
    range_min: float | None = None,
    range_max: float | None = None,
) -> tuple[torch.Tensor, State]:
    """(y, new state) composed from the reference functions."""
    st = st.clone()
    if observe:
        if range_min is None or range_max is None:
            st.running_min, st.running_max = ref.update_range(
                x, st.running_min, st.running_max, block, method, c
            )
        if f.is_float:
            st.scale = ref.choose_qparams_float(
                st.running_min, st.running_max, f.dtype, f.e8m0, range_min, range_max
            )
        else:
            st.scale, st.zero_point, st.minval = ref.choose_qparams_int(
                st.running_min,
                st.running_max,
                f.quant_min,
                f.quant_max,
                f.symmetric,
                range_min,
                range_max,
            )
    if not quantize:
        return x.clone(), st
    if f.is_float:
        return ref.fake_quantize_float(x, st.scale, f.dtype), st
    if f.use_minval:
        return ref.fake_quantize_int(x, st.scale, None, st.minval, f.quant_min, f.quant_max), st
    return ref.fake_quantize_int(x, st.scale, st.zero_point, None, f.quant_min, f.quant_max), st


def assert_state(got: State, want: State) -> None:
    """Every buffer bit-exact."""
    for g, w in zip(got.tensors(), want.tensors(), strict=True):
        assert_bitexact(g, w)


def on(v: bool, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """A one-element switch tensor."""
    return torch.tensor([v], dtype=dtype)


@pytest.mark.parametrize("method", ["static", "moving_average", "global_minmax"])
@pytest.mark.parametrize(("x_shape", "q_shape"), SHAPES)
@pytest.mark.parametrize("f", FORMATS)
def test_steps(
    f: FusedFormat, x_shape: tuple[int, ...], q_shape: tuple[int, ...], method: str
) -> None:
    """Four steps with the switches toggled; y and every buffer match the composition."""
    block = block_size_of(x_shape, q_shape)
    q = [xs // b for xs, b in zip(x_shape, block, strict=True)]
    st = State.fresh(q)
    want = st.clone()
    ptrs = [t.data_ptr() for t in st.tensors()]
    for step, (obs, fq) in enumerate([(True, True), (True, False), (False, True), (True, True)]):
        x = torch.randn(x_shape) * (step + 1) + 0.5 * step
        y = call_fused(x, on(obs), on(fq, torch.uint8), st, block, f, method, 0.25)
        wy, want = fused_reference(x, obs, fq, want, block, f, method, 0.25)
        assert_bitexact(y, wy)
        assert_state(st, want)
        if not fq:
            assert y.data_ptr() != x.data_ptr()
    assert [t.data_ptr() for t in st.tensors()] == ptrs


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("f", [FORMATS[2], FORMATS[8]])
def test_input_dtypes(f: FusedFormat, dtype: torch.dtype) -> None:
    x = (torch.randn(6, 40) * 3).to(dtype)
    st = State.fresh([6, 1])
    y = call_fused(x, on(True), on(True), st, [1, 40], f, "static")
    wy, want = fused_reference(x, True, True, State.fresh([6, 1]), [1, 40], f, "static")
    assert y.dtype == dtype
    assert_bitexact(y, wy)
    assert_state(st, want)


@pytest.mark.parametrize("f", [FORMATS[0], FORMATS[2], FORMATS[9]])
def test_float_range_fixes_qparams(f: FusedFormat) -> None:
    """Both float_range ends given: no observation (running range untouched), fixed qparams."""
    st = State.fresh([3, 1])
    for _ in range(2):
        x = torch.randn(3, 16) * 10
        y = call_fused(x, on(True), on(True), st, [1, 16], f, "moving_average", 0.01, -1.0, 2.0)
    assert torch.all(st.running_min == math.inf) and torch.all(st.running_max == -math.inf)
    wy, want = fused_reference(
        x, True, True, State.fresh([3, 1]), [1, 16], f, "moving_average", 0.01, -1.0, 2.0
    )
    assert_bitexact(y, wy)
    assert_state(st, want)


@pytest.mark.parametrize("switch_dtype", [torch.bool, torch.uint8, torch.int64, torch.float32])
def test_switch_dtypes(switch_dtype: torch.dtype) -> None:
    f = FusedFormat(torch.int8, -128, 127, True)
    x = torch.randn(4, 8)
    st = State.fresh([4, 1])
    y = call_fused(x, on(False, switch_dtype), on(False, switch_dtype), st, [1, 8], f, "static")
    assert torch.equal(y, x)
    assert_state(st, State.fresh([4, 1]))
    y = call_fused(x, on(True, switch_dtype), on(True, switch_dtype), st, [1, 8], f, "static")
    wy, want = fused_reference(x, True, True, State.fresh([4, 1]), [1, 8], f, "static")
    assert_bitexact(y, wy)
    assert_state(st, want)


def test_zero_dim_switches() -> None:
    f = FusedFormat(torch.float8_e4m3fn)
    x = torch.randn(4, 8)
    st = State.fresh([1, 1])
    y = call_fused(x, torch.tensor(True), torch.tensor(1), st, [4, 8], f, "static")
    wy, want = fused_reference(x, True, True, State.fresh([1, 1]), [4, 8], f, "static")
    assert_bitexact(y, wy)
    assert_state(st, want)


def test_non_contiguous_input() -> None:
    f = FusedFormat(torch.uint8, 0, 255, False)
    x = torch.randn(40, 6).t()
    st = State.fresh([6, 1])
    y = call_fused(x, on(True), on(True), st, [1, 40], f, "global_minmax")
    wy, want = fused_reference(
        x.contiguous(), True, True, State.fresh([6, 1]), [1, 40], f, "global_minmax"
    )
    assert_bitexact(y, wy)
    assert_state(st, want)


# ---- backward -----------------------------------------------------------------------------


@pytest.mark.parametrize("fq", [True, False], ids=["fq_on", "fq_off"])
@pytest.mark.parametrize("f", FORMATS)
def test_backward(f: FusedFormat, fq: bool) -> None:
    x = torch.randn(6, 40) * 3
    x[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e4])
    st = State.fresh([6, 1])
    call_fused(x.nan_to_num(0.0, 0.0, 0.0), on(True), on(False), st, [1, 40], f, "static")
    g = torch.randn(6, 40, dtype=torch.float64)
    gx = ops.fused_fake_quantize_backward(
        **fused_backward_kwargs(g, x, on(fq), (st.scale, st.zero_point, st.minval), f)
    )
    if not fq:
        want = g.to(torch.float32)
    elif f.is_float:
        want = ref.ste_grad(g, ref.float_mask(x, st.scale, f.dtype), x.dtype)
    else:
        zp, mv = (None, st.minval) if f.use_minval else (st.zero_point, None)
        mask = ref.int_mask(x, st.scale, zp, mv, f.quant_min, f.quant_max)
        want = ref.ste_grad(g, mask, x.dtype)
    assert_bitexact(gx, want)
    if fq:
        assert gx[0, :3].tolist() == [0.0, 0.0, 0.0]


class _CountClones(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts aten.clone calls (the autograd layer's copies when a mode is active)."""

    def __init__(self) -> None:
        super().__init__()
        self.clones = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten.clone.default:
            self.clones += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("mode", [False, True], ids=["plain", "dispatch-mode"])
@pytest.mark.parametrize("f", FORMATS)
def test_autograd_uses_the_qparams_of_its_own_call(
    f: FusedFormat, mode: bool, dtype: torch.dtype
) -> None:
    """Two observing calls before one backward: each gradient uses the switch and qparams
    its own call saw, though the second call overwrote the state. A float32 CPU call's node
    keeps the mask its forward wrote, under a dispatch mode too (what torch.compile traces);
    other dtypes keep copies of the switch and qparams (direct copies for plain CPU
    tensors, aten.clone under a dispatch mode)."""
    st = State.fresh([6, 1])
    x1 = (torch.randn(6, 40) * 3).to(dtype).requires_grad_()
    x2 = (torch.randn(6, 40) * 0.2).to(dtype).requires_grad_()
    counter = _CountClones()
    with counter if mode else contextlib.nullcontext():
        y1 = call_fused(x1, on(True), on(True), st, [1, 40], f, "static")
    after1 = st.clone()
    with counter if mode else contextlib.nullcontext():
        y2 = call_fused(x2, on(True), on(True), st, [1, 40], f, "static")
    after2 = st.clone()
    assert (counter.clones > 0) == (mode and dtype != torch.float32)
    g1, g2 = torch.randn(6, 40).to(dtype), torch.randn(6, 40).to(dtype)
    gx1, gx2 = torch.autograd.grad((y1, y2), (x1, x2), (g1, g2))
    for gx, g, x, after in ((gx1, g1, x1, after1), (gx2, g2, x2, after2)):
        want = ops.fused_fake_quantize_backward(
            **fused_backward_kwargs(
                g, x.detach(), on(True), (after.scale, after.zero_point, after.minval), f
            )
        )
        assert_bitexact(gx, want)
    assert not torch.equal(after1.scale, after2.scale)


@pytest.mark.parametrize("transposed", [False, True], ids=["contiguous", "transposed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_autograd_saves_a_mask_for_float32(dtype: torch.dtype, transposed: bool) -> None:
    """For float32 CPU tensors (any layout, not traced) the node saves one bool mask (a byte
    per element) and not x, which can then be freed; other dtypes save x."""
    x = (torch.randn(40, 6) * 3).t() if transposed else torch.randn(6, 40) * 3
    x = x.to(dtype).requires_grad_()
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        call_fused(
            x, on(True), on(True), State.fresh([6, 1]), [1, 40], FORMATS[0].values[0], "static"
        )
    if dtype == torch.float32:
        assert [(t.dtype, tuple(t.shape)) for t in saved] == [(torch.bool, (6, 40))]
    else:
        assert any(t is x for t in saved)


@pytest.mark.parametrize(("range_min", "range_max"), [(-0.5, None), (None, 0.25)])
@pytest.mark.parametrize("f", [FORMATS[2], FORMATS[8]])
def test_one_float_range_end(
    f: FusedFormat, range_min: float | None, range_max: float | None
) -> None:
    """One float_range end: still observes; that end replaces the observed one."""
    st, want = State.fresh([3, 1]), State.fresh([3, 1])
    for step in range(2):
        x = torch.randn(3, 16) * (step + 2)
        y = call_fused(
            x, on(True), on(True), st, [1, 16], f, "moving_average", 0.5, range_min, range_max
        )
        wy, want = fused_reference(
            x, True, True, want, [1, 16], f, "moving_average", 0.5, range_min, range_max
        )
        assert_bitexact(y, wy)
        assert_state(st, want)
    assert torch.isfinite(st.running_min).all() and torch.isfinite(st.running_max).all()


# ---- layout: y and grad_x have x's layout --------------------------------------------------

LAYOUTS = [
    # (x, block size, qparam shape) with x channels_last or transposed
    pytest.param("cl", [32, 8, 6, 5], (1, 1, 1, 1), id="cl-tensor"),
    pytest.param("cl", [32, 1, 6, 5], (1, 8, 1, 1), id="cl-channel"),
    pytest.param("cl", [32, 2, 6, 5], (1, 4, 1, 1), id="cl-blocks-one-dim"),
    pytest.param("cl", [16, 2, 6, 5], (2, 4, 1, 1), id="cl-blocks-two-dims"),
    pytest.param("t", [1, 40], (6, 1), id="transposed-channel"),
    pytest.param("t", [6, 8], (1, 5), id="transposed-blocks"),
]


def _strided_x(kind: str) -> torch.Tensor:
    if kind == "cl":
        return (torch.randn(32, 8, 6, 5) * 2).to(memory_format=torch.channels_last)
    return (torch.randn(40, 6) * 2).t()


@pytest.mark.parametrize("quantize", [True, False], ids=["fq_on", "fq_off"])
@pytest.mark.parametrize(("kind", "block", "q_shape"), LAYOUTS)
@pytest.mark.parametrize("f", [FORMATS[0], FORMATS[3], FORMATS[8]])
def test_output_keeps_the_input_layout(
    f: FusedFormat, kind: str, block: list[int], q_shape: tuple[int, ...], quantize: bool
) -> None:
    """A channels_last or transposed x gives y (and grad_x) of x's layout, with the values
    and state of the same call on a contiguous copy; Meta agrees on the strides."""
    x = _strided_x(kind)
    assert not x.is_contiguous()
    st, st_c = State.fresh(list(q_shape)), State.fresh(list(q_shape))
    y = call_fused(x, on(True), on(quantize), st, block, f, "moving_average")
    y_c = call_fused(x.contiguous(), on(True), on(quantize), st_c, block, f, "moving_average")
    assert y.stride() == x.stride()
    assert_bitexact(y, y_c)
    assert_state(st, st_c)
    meta = call_fused(
        x.to("meta"),
        on(True).to("meta"),
        on(quantize).to("meta"),
        st.to("meta"),
        block,
        f,
        "moving_average",
    )
    assert meta.stride() == x.stride()

    g = torch.randn(x.shape)  # contiguous, unlike x
    kw = fused_backward_kwargs(g, x, on(quantize), (st.scale, st.zero_point, st.minval), f)
    gx = ops.fused_fake_quantize_backward(**kw)
    kw_c = fused_backward_kwargs(
        g, x.contiguous(), on(quantize), (st.scale, st.zero_point, st.minval), f
    )
    assert gx.stride() == x.stride()
    assert_bitexact(gx, ops.fused_fake_quantize_backward(**kw_c))
    kw_meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    assert ops.fused_fake_quantize_backward(**kw_meta).stride() == x.stride()


@pytest.mark.parametrize("reference", [False, True], ids=["cpu", "reference"])
def test_an_input_with_gaps_gives_contiguous_outputs(reference: bool) -> None:
    """A view with gaps (what Inductor may hand a flexible_layout op): y, the mask and grad_x
    are contiguous, as Meta says, with the values and state of a contiguous copy's call."""
    f = FORMATS[0].values[0]
    x = (torch.randn(32, 8, 6, 10) * 2)[..., ::2]
    st, st_c = State.fresh([1, 8, 1, 1]), State.fresh([1, 8, 1, 1])
    y, mask = _cachemask(x, True, st, [32, 1, 6, 5], f, reference=reference)
    y_c, mask_c = _cachemask(x.contiguous(), True, st_c, [32, 1, 6, 5], f, reference=False)
    assert y.is_contiguous() and mask.is_contiguous()
    assert_bitexact(y, y_c)
    assert torch.equal(mask, mask_c)
    assert_state(st, st_c)
    meta_y, meta_mask = _cachemask(
        x.to("meta"), True, State.fresh([1, 8, 1, 1]).to("meta"), [32, 1, 6, 5], f, False
    )
    assert meta_y.is_contiguous() and meta_mask.is_contiguous()
    g = torch.randn(x.shape)
    qparams = (st.scale, st.zero_point, st.minval)
    op = ops.fused_fake_quantize_backward.default
    kw = fused_backward_kwargs(g, x, on(True), qparams, f)
    gx = op.redispatch(_REFERENCE, *schema_args(op, kw)) if reference else op(**kw)
    assert gx.is_contiguous()
    want = ops.fused_fake_quantize_backward(
        **fused_backward_kwargs(g, x.contiguous(), on(True), qparams, f)
    )
    assert_bitexact(gx, want)


# ---- fused_fake_quantize_cachemask / fake_quantize_mask_backward ------------------------------

_REFERENCE = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)


def _cachemask(
    x: torch.Tensor,
    quantize: bool,
    st: State,
    block: list[int],
    f: FusedFormat,
    reference: bool,
    observe: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    kw = fused_kwargs(x, on(observe), on(quantize), st.tensors(), block, f, "moving_average")
    op = ops.fused_fake_quantize_cachemask.default
    args = schema_args(op, kw)
    return op.redispatch(_REFERENCE, *args) if reference else op(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("quantize", [True, False], ids=["fq_on", "fq_off"])
@pytest.mark.parametrize(("x_shape", "q_shape"), SHAPES)
@pytest.mark.parametrize("f", FORMATS)
def test_cachemask_is_the_fused_op_and_its_ste_mask(
    f: FusedFormat,
    x_shape: tuple[int, ...],
    q_shape: tuple[int, ...],
    quantize: bool,
    dtype: torch.dtype,
) -> None:
    """y and the state equal fused_fake_quantize's bit for bit; the mask is where the
    straight-through gradient passes (fused_fake_quantize_backward of ones), on CPU and the
    reference; fake_quantize_mask_backward equals fused_fake_quantize_backward."""
    x = (torch.randn(x_shape) * 3).to(dtype)
    q = list(q_shape) or [1] * len(x_shape)
    block = block_size_of(x_shape, q)
    st_fused, st_cpu, st_ref = State.fresh(q), State.fresh(q), State.fresh(q)
    # An observing call each (the qparams come from x), then one more without observing on
    # x with non-finite and out-of-range values (a NaN could not be observed).
    y_fused = call_fused(x, on(True), on(quantize), st_fused, block, f, "moving_average")
    y, mask = _cachemask(x, quantize, st_cpu, block, f, reference=False)
    y_ref, mask_ref = _cachemask(x, quantize, st_ref, block, f, reference=True)
    assert_bitexact(y, y_fused)
    assert_bitexact(y_ref, y_fused)
    assert_state(st_cpu, st_fused)
    assert_state(st_ref, st_fused)
    assert torch.equal(mask, mask_ref)
    x = x.clone()
    x.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), 1e4]).to(dtype)
    y_fused = call_fused(x, on(False), on(quantize), st_fused, block, f, "moving_average")
    y, mask = _cachemask(x, quantize, st_cpu, block, f, reference=False, observe=False)
    y_ref, mask_ref = _cachemask(x, quantize, st_ref, block, f, reference=True, observe=False)
    assert_bitexact(y, y_fused)
    assert_bitexact(y_ref, y_fused)
    assert mask.dtype == torch.bool and mask.shape == x.shape
    assert torch.equal(mask, mask_ref)
    qparams = (st_cpu.scale, st_cpu.zero_point, st_cpu.minval)
    ones = torch.ones_like(x)
    ste = ops.fused_fake_quantize_backward(
        **fused_backward_kwargs(ones, x, on(quantize), qparams, f)
    )
    assert torch.equal(mask, ste != 0)
    g = torch.randn(x_shape).to(dtype)
    g.view(-1)[3] = float("nan")
    want = ops.fused_fake_quantize_backward(**fused_backward_kwargs(g, x, on(quantize), qparams, f))
    assert_bitexact(ops.fake_quantize_mask_backward(g, mask), want)
    assert_bitexact(ops.fake_quantize_mask_backward.default.redispatch(_REFERENCE, g, mask), want)


@pytest.mark.parametrize(("kind", "block", "q_shape"), LAYOUTS)
@pytest.mark.parametrize("f", [FORMATS[0], FORMATS[3], FORMATS[8]])
def test_cachemask_keeps_the_input_layout(
    f: FusedFormat, kind: str, block: list[int], q_shape: tuple[int, ...]
) -> None:
    """y and the mask have x's layout (CPU, reference and Meta), with the values of the
    contiguous call; the masked backward of a contiguous gradient has the mask's layout."""
    x = _strided_x(kind)
    y, mask = _cachemask(x, True, State.fresh(list(q_shape)), block, f, reference=False)
    y_c, mask_c = _cachemask(
        x.contiguous(), True, State.fresh(list(q_shape)), block, f, reference=False
    )
    _, mask_ref = _cachemask(x, True, State.fresh(list(q_shape)), block, f, reference=True)
    assert y.stride() == x.stride() and mask.stride() == x.stride()
    assert mask_ref.stride() == x.stride()
    assert_bitexact(y, y_c)
    assert torch.equal(mask, mask_c) and torch.equal(mask_ref, mask_c)
    meta_st = State.fresh(list(q_shape)).to("meta")
    kw = fused_kwargs(
        x.to("meta"),
        on(True).to("meta"),
        on(True).to("meta"),
        meta_st.tensors(),
        block,
        f,
        "moving_average",
    )
    op = ops.fused_fake_quantize_cachemask.default
    meta_y, meta_mask = op(*schema_args(op, kw))
    assert meta_y.stride() == x.stride() and meta_mask.stride() == x.stride()
    g = torch.randn(x.shape)  # contiguous, unlike the mask
    want = ops.fake_quantize_mask_backward(g, mask_c)
    gx = ops.fake_quantize_mask_backward(g, mask)
    assert gx.stride() == x.stride()
    assert_bitexact(gx, want)
    g_like = torch.empty_like(x).copy_(g)  # laid out as the mask: no copy of grad
    assert_bitexact(ops.fake_quantize_mask_backward(g_like, mask), want)
    # A mask with gaps (every other row) takes the ATen product, with the same values.
    sliced = mask[::2]
    assert_bitexact(ops.fake_quantize_mask_backward(g[::2], sliced), want[::2])


def _masked_pair(shape: tuple[int, ...] = (6, 40)) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y = fused fake-quantize of x) on the float32 CPU form, x needing a gradient; a
    third of x lies outside the range, so the mask has zeros."""
    x = (torch.randn(shape) * 3).requires_grad_()
    y = call_fused(
        x,
        on(True),
        on(True),
        State.fresh([shape[0], 1]),
        [1, shape[1]],
        FORMATS[0].values[0],
        "static",
    )
    return x, y


def _mask_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The straight-through mask of y's call, from its backward with a gradient of ones."""
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y), retain_graph=True)
    return g


def _mask_backward_ops(run: Callable[[], None]) -> list[str]:
    """The mask backward ops *run* dispatches (the profiler records op names, no tensors)."""
    with torch.profiler.profile() as prof:
        run()
    return [e.name for e in prof.events() if e.name.startswith("coreai_opt::fake_quantize_mask")]


def test_backward_writes_into_a_gradient_nothing_else_holds() -> None:
    """When the incoming gradient has no other owner, the backward multiplies it in place
    (fake_quantize_mask_backward_); with a hook on it (Python code can keep it), out of
    place. Both give grad * mask."""
    x, y = _masked_pair()
    mask = _mask_of(x, y)
    ran = _mask_backward_ops(lambda: (y * 2.0).sum().backward())
    assert ran == ["coreai_opt::fake_quantize_mask_backward_"]
    assert torch.equal(x.grad, 2.0 * mask)
    x, y = _masked_pair()
    mask = _mask_of(x, y)
    y.register_hook(lambda g: None)
    ran = _mask_backward_ops(lambda: (y * 2.0).sum().backward())
    assert ran == ["coreai_opt::fake_quantize_mask_backward"]
    assert torch.equal(x.grad, 2.0 * mask)


def test_backward_leaves_a_shared_gradient_alone() -> None:
    """A gradient someone else can see (retained on y, kept by a hook, handed to two
    fake-quantizers, the caller's own) is not written: every observer sees its value."""
    torch.manual_seed(0)
    # retained on y
    x, y = _masked_pair()
    mask = _mask_of(x, y)
    y.retain_grad()
    w = torch.randn_like(y)
    (y * w).sum().backward()
    assert torch.equal(y.grad, w)
    assert torch.equal(x.grad, w * mask)
    # kept by a hook
    x, y = _masked_pair()
    mask = _mask_of(x, y)
    kept: list[torch.Tensor] = []
    y.register_hook(lambda g: kept.append(g))
    (y * w).sum().backward()
    assert torch.equal(kept[0], w)
    assert torch.equal(x.grad, w * mask)
    # one gradient tensor for two fake-quantizers (an add's backward hands out the same one)
    x1, y1 = _masked_pair()
    x2, y2 = _masked_pair()
    m1, m2 = _mask_of(x1, y1), _mask_of(x2, y2)
    ((y1 + y2) * w).sum().backward()
    assert torch.equal(x1.grad, w * m1)
    assert torch.equal(x2.grad, w * m2)
    # the caller's own gradient
    x, y = _masked_pair()
    mask = _mask_of(x, y)
    g = torch.randn_like(y)
    g_before = g.clone()
    y.backward(g)
    assert torch.equal(g, g_before)
    assert torch.equal(x.grad, g * mask)


def test_backward_twice_needs_retain_graph() -> None:
    _x, y = _masked_pair()
    loss = (y * 2.0).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_traced_float32_call_saves_the_mask() -> None:
    """Under AOTAutograd (what torch.compile runs) a float32 CPU call traces
    fused_fake_quantize_cachemask forward and fake_quantize_mask_backward backward, so the
    backward keeps the one-byte mask, not x; the state is written and the gradient is the
    uncompiled one."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    torch._dynamo.reset()
    traced: list[set[object]] = []

    def capture(gm: torch.fx.GraphModule, _inputs: object) -> object:
        # An op that writes its arguments is traced inside auto_functionalized(op, ...).
        calls = [n for n in gm.graph.nodes if n.op == "call_function"]
        traced.append(
            {n.args[0] if "auto_functionalized" in str(n.target) else n.target for n in calls}
        )
        return make_boxed_func(gm.forward)

    f = FORMATS[0].values[0]
    compiled_state, eager_state = State.fresh([6, 1]), State.fresh([6, 1])

    def run(x: torch.Tensor, st: State) -> torch.Tensor:
        return call_fused(x, on(True), on(True), st, [1, 40], f, "static")

    compiled = torch.compile(run, backend=aot_autograd(fw_compiler=capture, bw_compiler=capture))
    x = (torch.randn(6, 40) * 3).requires_grad_()
    g = torch.randn(6, 40)
    (gx_compiled,) = torch.autograd.grad(compiled(x, compiled_state), x, g)
    (gx_eager,) = torch.autograd.grad(run(x, eager_state), x, g)
    forward, backward = traced
    assert ops.fused_fake_quantize_cachemask.default in forward
    assert ops.fake_quantize_mask_backward.default in backward
    assert ops.fused_fake_quantize_backward.default not in backward
    assert_bitexact(gx_compiled, gx_eager)
    assert_bitexact(compiled_state.scale, eager_state.scale)
