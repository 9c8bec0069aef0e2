"""The module-frame push / pop that forward hooks call through ctypes (csrc/eager/frames_c_api.cpp).

The C functions cannot raise: a failed call returns 1 and leaves the frame stack and the
interception scope as they were, and the hook repeats it through the op, which raises the
error with its message. These tests drive both functions directly and through a prepared
model's hooks.
"""

from __future__ import annotations

import pytest
import torch
from eager_helpers import assert_clean_eager_state, prepare_eager
from torch import nn

from coreai_opt import _ops
from coreai_opt.quantization._eager.runtime import get_runtime

PUSH_C, POP_C = _ops.eager_frame_c_calls()
PUSH_OP, POP_OP = _ops.eager_frame_ops()
UNKNOWN_HANDLE = 1 << 40


class TwoLinears(nn.Module):
    """fc1 → fc2: three hooked modules (the root and both linears)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


def prepared_handle() -> tuple[nn.Module, int]:
    """A prepared :class:`TwoLinears` (bound by one forward) and its program's handle."""
    _, model = prepare_eager(TwoLinears(), (torch.randn(2, 4),))
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


# The post hooks (always_call) fail the same way; torch reports theirs as a warning.
@pytest.mark.filterwarnings("ignore:module forward hook with ``always_call=True``")
def test_hook_on_a_freed_program_raises_the_ops_error() -> None:
    """A hook whose program handle is stale raises the op's error (not a silent no-op),
    and the model leaves no scope open."""
    model, _ = prepared_handle()
    runtime = get_runtime(model)
    assert runtime is not None
    runtime.handle = UNKNOWN_HANDLE  # as if the tables were freed after binding
    with pytest.raises(RuntimeError, match="no EagerProgram with handle"):
        model(torch.randn(2, 4))
    assert_clean_eager_state()


def test_hooks_balance_frames_across_calls() -> None:
    """Forward calls through the C path leave the stack empty and give the same output."""
    model, _ = prepared_handle()
    x = torch.randn(2, 4)
    first = model(x)
    assert_clean_eager_state()
    torch.testing.assert_close(model(x), first, rtol=0, atol=0)
    assert_clean_eager_state()
