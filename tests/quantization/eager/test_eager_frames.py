"""Module frames of eager mode (runtime.FramedForward, csrc/eager/frames_c_api.cpp).

Each hooked module's ``forward`` is replaced by a FramedForward that pushes the module's
frame, runs the module's own forward and pops the frame; hooks of the module run outside
it, as in the recording pass. The push and pop are C functions called through ctypes. They
cannot raise: a failed call returns 1 and leaves the frame stack and the interception
scope as they were, and FramedForward repeats it through the op, which raises the error
with its message.
"""

from __future__ import annotations

import copy
import inspect
import pickle

import pytest
import torch
from eager_helpers import assert_clean_eager_state, prepare_eager
from torch import nn

from coreai_opt import _ops
from coreai_opt.quantization._eager.runtime import get_runtime

PUSH_C, POP_C = _ops.eager_frame_c_calls()
PUSH_OP, POP_OP = _ops.eager_frame_ops()
UNKNOWN_HANDLE = 1 << 40


class Square(nn.Module):
    """x * x, recording the frame depth its forward runs at."""

    def __init__(self) -> None:
        super().__init__()
        self.depths: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.depths.append(_ops.eager_frame_depth())
        return torch.mul(x, x)


class SquareTimesInput(nn.Module):
    """sq(x) * x; ``hook=True`` adds a forward hook on sq that squares its output (an op
    of a quantized type that runs outside sq's forward)."""

    def __init__(self, hook: bool = False) -> None:
        super().__init__()
        self.sq = Square()
        if hook:
            self.sq.register_forward_hook(lambda module, args, out: torch.mul(out, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mul(self.sq(x), x)


def prepared_handle() -> tuple[nn.Module, int]:
    """A prepared :class:`SquareTimesInput` (bound by one forward; two hooked modules) and
    its program's handle."""
    _, model = prepare_eager(SquareTimesInput(), (torch.randn(2, 4),))
    model(torch.randn(2, 4))
    runtime = get_runtime(model)
    assert runtime is not None
    return model, runtime.handle


def test_push_and_pop_open_and_close_the_scope() -> None:
    """A successful push returns 0, opens the scope and adds a frame; the pop undoes both."""
    _model, handle = prepared_handle()  # held: the program lives as long as the model
    assert PUSH_C(handle, 1) == 0
    try:
        assert _ops.eager_frame_depth() == 1
        assert _ops.eager_scope_depth() == 1
        assert _ops.eager_key_state() == (True, False)
    finally:
        assert POP_C(handle, 1) == 0
    assert_clean_eager_state()


def test_unknown_handle_fails_without_changing_anything() -> None:
    """Push and pop on a handle no program has: 1, and the op raises the message."""
    assert PUSH_C(UNKNOWN_HANDLE, 0) == 1
    assert_clean_eager_state()
    with pytest.raises(RuntimeError, match="no EagerProgram with handle"):
        PUSH_OP(UNKNOWN_HANDLE, 0)
    assert POP_C(UNKNOWN_HANDLE, 0) == 1
    assert_clean_eager_state()


def test_pop_out_of_order_fails_and_keeps_the_stack() -> None:
    """Popping a frame that is not innermost returns 1 and keeps both frames."""
    _model, handle = prepared_handle()  # held: the program lives as long as the model
    assert PUSH_C(handle, 0) == 0
    assert PUSH_C(handle, 1) == 0
    try:
        assert POP_C(handle, 0) == 1
        assert _ops.eager_frame_depth() == 2
        with pytest.raises(RuntimeError, match="popped out of order"):
            POP_OP(handle, 0)
        assert _ops.eager_frame_depth() == 2
    finally:
        assert POP_C(handle, 1) == 0
        assert POP_C(handle, 0) == 0
    assert_clean_eager_state()
    assert POP_C(handle, 0) == 1  # empty stack


def test_forward_on_a_freed_program_raises_the_ops_error() -> None:
    """A FramedForward whose program handle is stale raises the op's error (not a silent
    no-op), and the model leaves no scope open."""
    model, _ = prepared_handle()
    runtime = get_runtime(model)
    assert runtime is not None
    runtime.handle = UNKNOWN_HANDLE  # as if the tables were freed after binding
    with pytest.raises(RuntimeError, match="no EagerProgram with handle"):
        model(torch.randn(2, 4))
    assert_clean_eager_state()


def test_calls_balance_frames() -> None:
    """Forward calls through the C path leave the stack empty and give the same output."""
    model, _ = prepared_handle()
    x = torch.randn(2, 4)
    first = model(x)
    assert_clean_eager_state()
    torch.testing.assert_close(model(x), first, rtol=0, atol=0)
    assert_clean_eager_state()


def test_forward_runs_inside_the_frame_and_hooks_outside() -> None:
    """The module's forward sees its own frame on top of its parent's; hooks added after
    prepare run in the parent's frame."""
    x = torch.randn(3, 4)
    _, model = prepare_eager(SquareTimesInput(), (x,))
    seen: list[tuple[str, int]] = []
    model.sq.register_forward_pre_hook(lambda m, a: seen.append(("pre", _ops.eager_frame_depth())))
    model.sq.register_forward_hook(lambda m, a, o: seen.append(("post", _ops.eager_frame_depth())))
    model.sq.depths.clear()
    model(x)
    assert model.sq.depths == [2]
    assert seen == [("pre", 1), ("post", 1)]
    assert_clean_eager_state()


def test_ops_of_a_hook_are_named_as_the_recording_named_them() -> None:
    """A forward hook's op is counted in the parent's frame both while recording and when
    the prepared model runs, so every op meets the fake-quantizers planned for it."""
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    quantizer, model = prepare_eager(SquareTimesInput(hook=True), (x,))
    fqs = {n for n, m in model.named_modules() if type(m).__name__ == "FakeQuantize"}
    assert {n.split("_quantize_")[0] for n in fqs} == {"sq.mul", "mul", "mul_1"}
    model.eval()
    quantizer.disable_observer()
    with torch.no_grad():
        got = model(x)

        def mul(owner: nn.Module, op: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            q = {
                n.split("_quantize_")[1]: m
                for n, m in owner.named_children()
                if n.startswith(f"{op}_quantize_")
            }
            return q["output_0"](q["input"](a) * q["other"](b))

        h = mul(model.sq, "mul", x, x)  # sq's own op
        h = mul(model, "mul", h, h)  # the hook's op, in the root's frame
        expected = mul(model, "mul_1", h, x)  # the root's op
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert_clean_eager_state()


def test_forward_keeps_the_signature_and_code_of_the_wrapped_one() -> None:
    """inspect.signature and ``__code__`` (which torch.export reads) see the module's own
    forward."""
    x = torch.randn(3, 4)
    _, model = prepare_eager(SquareTimesInput(), (x,))
    own = type(model.sq).forward
    assert inspect.signature(model.sq.forward) == inspect.signature(own.__get__(model.sq))
    assert model.sq.forward.__code__ is own.__code__
    assert model.sq.forward.__name__ == "forward"


def test_a_forward_set_on_the_instance_is_wrapped() -> None:
    """A forward the user set on the instance before prepare still runs, inside the frame."""
    x = torch.randn(3, 4)
    model = SquareTimesInput()
    depths: list[int] = []

    def cube(t: torch.Tensor) -> torch.Tensor:
        depths.append(_ops.eager_frame_depth())
        return t * t * t

    model.sq.forward = cube
    _, model = prepare_eager(model, (x,))
    depths.clear()
    model.eval()
    with torch.no_grad():
        model(x)
    assert depths == [2]
    assert model.sq.forward.inner is cube
    assert_clean_eager_state()


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_frame_their_own_modules(how: str) -> None:
    """Each copied module's forward wraps the copy, with the copy's runtime."""
    x = torch.randn(3, 4)
    _, model = prepare_eager(SquareTimesInput(), (x,))
    copied = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
    runtime = get_runtime(copied)
    assert runtime is not None and runtime is not get_runtime(model)
    for module in (copied, copied.sq):
        framed = module.__dict__["forward"]
        assert framed.module is module
        assert framed.runtime is runtime
    torch.testing.assert_close(copied(x), model(x), rtol=0, atol=0)
    assert_clean_eager_state()


def test_compiling_or_exporting_a_submodule_is_refused() -> None:
    """Every module's FramedForward refuses torch.compile and torch.export (the interception
    is not traced, so a compiled submodule would drop its fake-quantizers)."""
    x = torch.randn(3, 4)
    _, model = prepare_eager(SquareTimesInput(), (x,))
    before = model.sq(x)  # observers are off after prepare: the same output every call
    torch._dynamo.reset()
    try:
        with pytest.raises(Exception, match="execution_mode='graph'"):
            torch.compile(model.sq, backend="aot_eager")(x)
    finally:
        torch._dynamo.reset()
    assert_clean_eager_state()
    with pytest.raises(RuntimeError, match="execution_mode='graph'"):
        torch.export.export(model.sq, (x,))
    assert_clean_eager_state()
    assert torch.equal(model.sq(x), before)  # still runs, and quantizes, eagerly
