"""PT2 contract: tags, opcheck, torch.compile (aot_eager, one Inductor smoke) and torch.export."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch._dynamo.testing
from ops_cases import (
    TENSOR_OPS,
    FusedFormat,
    fresh_fused_state,
    fused_backward_kwargs,
    fused_kwargs,
    schema_args,
)
from torch._higher_order_ops.auto_functionalize import auto_functionalized, auto_functionalized_v2

ops = torch.ops.coreai_opt

OP_NAMES = [*TENSOR_OPS, "format_range"]

pt2_only = torch._dynamo.config.patch(only_allow_pt2_compliant_ops=True)


@pytest.mark.parametrize("name", OP_NAMES)
def test_every_op_is_pt2_compliant(name: str) -> None:
    overload = getattr(ops, name).default
    assert torch.Tag.pt2_compliant_tag in overload.tags


def test_op_list_is_complete() -> None:
    """Every op of the namespace is covered by this file."""
    registered = {
        n.split("::")[1]
        for n in torch._C._dispatch_get_all_op_names()
        if n.startswith("coreai_opt::")
    }
    # Not numerical ops: the ISA query, eager mode's interceptor plumbing (frames,
    # registration, and the two schemas whose kernels are Python functions), which never
    # appear in a traced graph (an eager-prepared model refuses torch.compile / export), and
    # the bound-arguments forms of fused_fake_quantize, which need a binding and have their
    # own opcheck and compile tests (test_ops_bound_fused.py).
    plumbing = {"cpu_kernel_isa", "_bind_fused_fake_quantize", "_fused_fake_quantize_bound"}
    plumbing |= {"_fused_fake_quantize_bound_traced", "_fused_fake_quantize_bound_cachemask"}
    plumbing |= {n for n in registered if n.startswith("_eager_")}
    assert registered - plumbing == set(OP_NAMES)


# ---- opcheck: one representative case per op ------------------------------------------------


def opcheck_cases() -> list:
    """(op, args) pairs; differentiable inputs require grad so the autograd tests run.

    E8M0 scales are left to the compile tests: opcheck's schema check cannot compare
    float8_e8m0fnu tensors ("mul_cpu_reduced_float" not implemented).
    """
    x = torch.randn(4, 12)
    xg = x.clone().requires_grad_()
    s = torch.rand(4, 1) + 0.05
    s_blk = torch.rand(4, 3) + 0.05
    zp = torch.randint(-8, 8, (4, 1), dtype=torch.int32)
    zp_f = (torch.rand(4, 1) * 15).requires_grad_()
    lo, hi = torch.aminmax(x, dim=1, keepdim=True)
    on = torch.tensor([True])
    return [
        pytest.param(ops.fake_quantize_int.default, (xg, s, zp, None, -8, 7), id="fq_int"),
        pytest.param(
            ops.fake_quantize_int_backward.default,
            (x, x, s_blk, None, -torch.rand(4, 3), 0, 15),
            id="fq_int_bw",
        ),
        pytest.param(
            ops.fake_quantize_float.default, (xg, s_blk, torch.float4_e2m1fn_x2), id="fq_float"
        ),
        pytest.param(
            ops.fake_quantize_float_backward.default,
            (x, x, s, torch.float8_e4m3fn),
            id="fq_float_bw",
        ),
        pytest.param(
            ops.fake_quantize_lsq.default,
            (xg, s.clone().requires_grad_(), zp_f, 0, 15, 0.5),
            id="lsq",
        ),
        pytest.param(
            ops.fake_quantize_lsq_backward.default,
            (x, x, s, zp_f.detach(), 0, 15, 0.5),
            id="lsq_bw",
        ),
        pytest.param(ops.minmax.default, (x, [1, 4]), id="minmax"),
        pytest.param(
            ops.update_range.default,
            (
                x,
                torch.full((4, 3), math.inf),
                torch.full((4, 3), -math.inf),
                [1, 4],
                "moving_average",
                0.1,
            ),
            id="update_range",
        ),
        pytest.param(
            ops.choose_qparams_int.default, (lo, hi, 0, 255, False, None, 4.0), id="qparams_int"
        ),
        pytest.param(
            ops.choose_qparams_float.default, (lo, hi, torch.float8_e5m2, True), id="qparams_float"
        ),
        pytest.param(
            ops.fused_fake_quantize.default,
            schema_args(
                ops.fused_fake_quantize.default,
                fused_kwargs(
                    xg,
                    on,
                    on,
                    fresh_fused_state([4, 1]),
                    [1, 12],
                    FusedFormat(torch.uint8, 0, 255, symmetric=False, use_minval=True),
                    "global_minmax",
                    0.01,
                    None,
                    None,
                ),
            ),
            id="fused",
        ),
        pytest.param(
            ops.fused_fake_quantize_backward.default,
            schema_args(
                ops.fused_fake_quantize_backward.default,
                fused_backward_kwargs(
                    x, x, on, (s, zp, torch.zeros(4, 1)), FusedFormat(torch.int4, -8, 7)
                ),
            ),
            id="fused_bw",
        ),
        pytest.param(
            ops.fused_fake_quantize_cachemask.default,
            schema_args(
                ops.fused_fake_quantize_cachemask.default,
                fused_kwargs(
                    x,
                    on,
                    on,
                    fresh_fused_state([4, 1]),
                    [1, 12],
                    FusedFormat(torch.int8, -128, 127),
                    "moving_average",
                    0.01,
                    None,
                    None,
                ),
            ),
            id="fused_cachemask",
        ),
        pytest.param(ops.fake_quantize_mask_backward.default, (x, x > 0), id="mask_bw"),
        pytest.param(
            ops.fake_quantize_mask_backward_.default, (x.clone(), x > 0), id="mask_bw_inplace"
        ),
        pytest.param(
            ops.channel_scale_shift.default,
            (
                torch.randn(2, 4, 3, 5, requires_grad=True),
                torch.rand(4, requires_grad=True),
                torch.randn(4, requires_grad=True),
            ),
            id="channel_scale_shift",
        ),
        pytest.param(
            ops.channel_scale_shift_backward.default,
            (torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5), torch.rand(4)),
            id="channel_scale_shift_bw",
        ),
        pytest.param(
            ops.pack.default,
            (torch.randint(-8, 8, (4, 6), dtype=torch.int8), torch.int4),
            id="pack",
        ),
        pytest.param(
            ops.unpack.default,
            (torch.randint(0, 256, (4, 3), dtype=torch.uint8), torch.uint2),
            id="unpack",
        ),
    ]


@pytest.mark.parametrize(("op", "args"), opcheck_cases())
def test_opcheck(op: torch._ops.OpOverload, args: tuple) -> None:
    torch.library.opcheck(op, args)


# ---- torch.compile ------------------------------------------------------------------------


def compiled(fn: Callable, **kw: object) -> Callable:
    """fullgraph aot_eager compile of fn."""
    return torch.compile(fn, backend="aot_eager", fullgraph=True, **kw)


def fq_mix(x: torch.Tensor, s: torch.Tensor, zp: torch.Tensor, e8: torch.Tensor) -> torch.Tensor:
    """Integer and float fake-quantize in one graph."""
    a = ops.fake_quantize_int(x, s, zp, None, -128, 127)
    b = ops.fake_quantize_float(x, e8, torch.float8_e4m3fn)
    return a * 2 + b


def test_compile_fake_quantize_forward_backward() -> None:
    x = torch.randn(6, 32) * 4
    s = torch.rand(6, 1) * 0.05 + 0.01
    zp = torch.randint(-5, 5, (6, 1), dtype=torch.int32)
    e8 = torch.full((6, 4), 2.0**-4).to(torch.float8_e8m0fnu)
    g = torch.randn(6, 32)
    xe = x.clone().requires_grad_()
    ye = fq_mix(xe, s, zp, e8)
    ye.backward(g)
    xc = x.clone().requires_grad_()
    with pt2_only:
        yc = compiled(fq_mix)(xc, s, zp, e8)
    yc.backward(g)
    assert torch.equal(yc, ye)
    assert torch.equal(xc.grad, xe.grad)


def test_compile_lsq() -> None:
    def f(x: torch.Tensor, s: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
        return ops.fake_quantize_lsq(x, s, zp, -8, 7, 0.5).square().sum()

    x = torch.randn(5, 16)
    s, zp = torch.rand(5, 1) * 0.1 + 0.05, torch.rand(5, 1) * 4 - 2
    eager = [t.clone().requires_grad_() for t in (x, s, zp)]
    comp = [t.clone().requires_grad_() for t in (x, s, zp)]
    f(*eager).backward()
    with pt2_only:
        compiled(f)(*comp).backward()
    for a, b in zip(comp, eager, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-6)


class FakeQuant(torch.nn.Module):
    """A FakeQuantize-like module: its forward is one fused op call, no Python branch."""

    def __init__(self, q: list[int], block: list[int], dtype: torch.dtype = torch.int8) -> None:
        super().__init__()
        for name, t in zip(
            ("running_min", "running_max", "scale", "zero_point", "minval"),
            fresh_fused_state(q),
            strict=True,
        ):
            self.register_buffer(name, t)
        self.register_buffer("observer_on", torch.tensor([1], dtype=torch.uint8))
        self.register_buffer("fake_quant_on", torch.tensor([1], dtype=torch.uint8))
        self.block = block
        self.fmt = FusedFormat(dtype, -128, 127, symmetric=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Observe and fake-quantize x."""
        state = (self.running_min, self.running_max, self.scale, self.zero_point, self.minval)
        return ops.fused_fake_quantize(
            **fused_kwargs(
                x,
                self.observer_on,
                self.fake_quant_on,
                state,
                self.block,
                self.fmt,
                "moving_average",
                0.1,
            )
        )


def test_compile_fused_module_mutates_state() -> None:
    eager, comp = FakeQuant([4, 1], [1, 16]), FakeQuant([4, 1], [1, 16])
    with pt2_only:
        step = compiled(comp)
        for i in range(3):
            x = torch.randn(4, 16) * (i + 1)
            if i == 2:
                comp.observer_on.zero_()
                eager.observer_on.zero_()
            xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
            ye, yc = eager(xe), step(xc)
            assert torch.equal(yc, ye)
            for name, buf in eager.named_buffers():
                assert torch.equal(getattr(comp, name), buf), name
            g = torch.randn(4, 16)
            ye.backward(g)
            yc.backward(g)
            assert torch.equal(xc.grad, xe.grad)


def test_compile_observe_and_pack() -> None:
    def f(x: torch.Tensor, rmin: torch.Tensor, rmax: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lo, hi = ops.minmax(x, [1, 8])
        ops.update_range(x, rmin, rmax, [1, 8], "global_minmax")
        s, zp, mv = ops.choose_qparams_int(rmin, rmax, -8, 7, True)
        e = ops.choose_qparams_float(lo, hi, torch.float4_e2m1fn_x2, True)
        q = torch.clamp(torch.round(x / s), -8, 7).to(torch.int8)
        packed = ops.pack(q, torch.int4)
        return lo, hi, s, zp, mv, e, packed, ops.unpack(packed, torch.int4)

    x = torch.randn(3, 8)
    state_e = [torch.full((3, 1), math.inf), torch.full((3, 1), -math.inf)]
    state_c = [t.clone() for t in state_e]
    want = f(x, *state_e)
    with pt2_only:
        got = compiled(f)(x, *state_c)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(state_c[0], state_e[0]) and torch.equal(state_c[1], state_e[1])


def test_compile_dynamic_shapes() -> None:
    """SymInt-safe Meta kernels: one graph serves several sizes (blocks follow x's shape)."""

    def f(x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lo, hi = ops.minmax(x, [1, x.shape[1] // s.shape[1]])
        return ops.fake_quantize_int(x, s, None, None, -8, 7), lo, hi

    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    fc = torch.compile(f, backend=cnt, fullgraph=True, dynamic=True)
    with pt2_only:
        for rows, cols in ((5, 32), (6, 64), (9, 96)):
            x, s = torch.randn(rows, cols), torch.rand(rows, 4) + 0.1
            for a, b in zip(fc(x, s), f(x, s), strict=True):
                assert torch.equal(a, b)
    assert cnt.frame_count == 1


def test_inductor_smoke() -> None:
    def f(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        y = ops.fake_quantize_int(x * 2, s, None, None, -8, 7)
        return ops.fake_quantize_float(y + 1, s, torch.float8_e5m2)

    x, s = torch.randn(4, 33), torch.rand(4, 1) + 0.1
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(4, 33)
    ye = f(xe, s)
    ye.backward(g)
    with pt2_only:
        yc = torch.compile(f, fullgraph=True)(xc, s)
    yc.backward(g)
    assert torch.equal(yc, ye)
    assert torch.equal(xc.grad, xe.grad)


# ---- torch.export: every op is one node -----------------------------------------------------


def count_op_nodes(gm: torch.fx.GraphModule, overload: torch._ops.OpOverload) -> int:
    """call_function nodes calling overload, directly or through auto_functionalized."""
    n = 0
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is overload:
            n += 1
        elif node.target in (auto_functionalized, auto_functionalized_v2):
            n += node.args[0] is overload
    return n


class CallOp(torch.nn.Module):
    """Calls one op on its input; the remaining arguments are fixed (tensors as buffers)."""

    def __init__(self, fn: Callable[..., object], **buffers: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        for k, v in buffers.items():
            self.register_buffer(k, v)

    def forward(self, x: torch.Tensor) -> object:
        """fn(self, x)."""
        return self.fn(self, x)


def export_cases() -> list:
    """(op, module) pairs."""
    s = torch.rand(4, 1) + 0.05
    zp = torch.zeros(4, 1, dtype=torch.int32)
    mv = torch.zeros(4, 1)
    on = torch.tensor([True])
    st = dict(zip(("rmin", "rmax", "s", "zp", "mv"), fresh_fused_state([4, 1]), strict=True))
    return [
        pytest.param(
            ops.fake_quantize_int.default,
            CallOp(lambda m, x: ops.fake_quantize_int(x, m.s, m.zp, None, -8, 7), s=s, zp=zp),
            id="fq_int",
        ),
        pytest.param(
            ops.fake_quantize_int_backward.default,
            CallOp(
                lambda m, x: ops.fake_quantize_int_backward(x, x, m.s, None, m.mv, 0, 7), s=s, mv=mv
            ),
            id="fq_int_bw",
        ),
        pytest.param(
            ops.fake_quantize_float.default,
            CallOp(lambda m, x: ops.fake_quantize_float(x, m.s, torch.float8_e4m3fn), s=s),
            id="fq_float",
        ),
        pytest.param(
            ops.fake_quantize_float_backward.default,
            CallOp(
                lambda m, x: ops.fake_quantize_float_backward(x, x, m.s, torch.float8_e5m2), s=s
            ),
            id="fq_float_bw",
        ),
        pytest.param(
            ops.fake_quantize_lsq.default,
            CallOp(lambda m, x: ops.fake_quantize_lsq(x, m.s, m.mv, 0, 15, 1.0), s=s, mv=mv),
            id="lsq",
        ),
        pytest.param(
            ops.fake_quantize_lsq_backward.default,
            CallOp(
                lambda m, x: ops.fake_quantize_lsq_backward(x, x, m.s, m.mv, 0, 15, 1.0), s=s, mv=mv
            ),
            id="lsq_bw",
        ),
        pytest.param(ops.minmax.default, CallOp(lambda m, x: ops.minmax(x, [1, 8])), id="minmax"),
        pytest.param(
            ops.update_range.default,
            CallOp(lambda m, x: ops.update_range(x, m.rmin, m.rmax, [1, 8], "static") or x, **st),
            id="update_range",
        ),
        pytest.param(
            ops.choose_qparams_int.default,
            CallOp(lambda m, x: ops.choose_qparams_int(x, x, -8, 7, True)),
            id="qparams_int",
        ),
        pytest.param(
            ops.choose_qparams_float.default,
            CallOp(lambda m, x: ops.choose_qparams_float(x, x, torch.float8_e4m3fn, True)),
            id="qparams_float",
        ),
        pytest.param(
            ops.fused_fake_quantize.default,
            CallOp(
                lambda m, x: ops.fused_fake_quantize(
                    **fused_kwargs(
                        x,
                        m.on,
                        m.on,
                        (m.rmin, m.rmax, m.s, m.zp, m.mv),
                        [1, 8],
                        FusedFormat(torch.int8, -128, 127, symmetric=True),
                        "static",
                    )
                ),
                on=on,
                **st,
            ),
            id="fused",
        ),
        pytest.param(
            ops.fused_fake_quantize_backward.default,
            CallOp(
                lambda m, x: ops.fused_fake_quantize_backward(
                    **fused_backward_kwargs(
                        x, x, m.on, (m.s, m.zp, m.mv), FusedFormat(torch.int8, -128, 127)
                    )
                ),
                on=on,
                s=s,
                zp=zp,
                mv=mv,
            ),
            id="fused_bw",
        ),
        pytest.param(
            ops.pack.default,
            CallOp(lambda m, x: ops.pack(x, torch.float4_e2m1fn_x2)),
            id="pack",
        ),
        pytest.param(
            ops.unpack.default,
            CallOp(lambda m, x: ops.unpack(x.to(torch.uint8), torch.int2)),
            id="unpack",
        ),
    ]


@pytest.mark.parametrize(("overload", "module"), export_cases())
def test_export_single_node(overload: torch._ops.OpOverload, module: torch.nn.Module) -> None:
    x = torch.randn(4, 8)
    ep = torch.export.export(module, (x,))
    assert count_op_nodes(ep.graph_module, overload) == 1, ep.graph_module.code
    others = [
        n.target
        for n in ep.graph.nodes
        if n.op == "call_function"
        and isinstance(n.target, torch._ops.OpOverload)
        and n.target.namespace == "coreai_opt"
        and n.target is not overload
    ]
    assert others == []
    # The core-ATen IR keeps the op whole too (mutating ops through auto_functionalized).
    decomposed = ep.run_decompositions()
    assert count_op_nodes(decomposed.graph_module, overload) == 1, decomposed.graph_module.code
