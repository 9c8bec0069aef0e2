"""The pitfalls of intercepting ops in the dispatcher (DESIGN.md, "Eager mode"), one test each.

no_grad and inference_mode (which force-sets the dispatch-key TLS), backward passes on other
threads and activation-checkpoint recompute, torch.compile / torch.export of a prepared
model, in-place overloads, wrapped numbers (``x + 1``), a module called twice, a foreign
fallback on the intercept key, exceptions inside forward, and Python dispatch modes.
Every test also checks that the thread's interception scope is closed afterwards.
"""

from __future__ import annotations

import copy
import textwrap
import threading

import pytest
import torch
import torch.nn.functional as F
from eager_helpers import assert_clean_eager_state, fq_paths, prepare_eager, run_json_script
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint

from coreai_opt import _ops
from coreai_opt.quantization import Quantizer


class Block(nn.Module):
    """linear → relu → linear, plus a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x))) + x


class Net(nn.Module):
    """A block (optionally activation-checkpointed) and a head."""

    def __init__(self, use_checkpoint: bool = False) -> None:
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(6, 3)
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = checkpoint(self.block, x, use_reentrant=False) if self.use_checkpoint else self.block(x)
        return self.head(h)


def net_by_hand(model: Net, x: torch.Tensor) -> torch.Tensor:
    """:class:`Net`'s forward with its fake-quantizers applied by hand."""

    def linear(fc: nn.Module, h: torch.Tensor) -> torch.Tensor:
        h = F.linear(fc.linear_quantize_input(h), fc.weight, fc.bias)
        return fc.linear_quantize_output_0(h)

    block = model.block
    h = linear(block.fc2, F.relu(linear(block.fc1, x)))
    h = block.add_quantize_output_0(block.add_quantize_input(h) + block.add_quantize_other(x))
    return linear(model.head, h)


def prepared_net(use_checkpoint: bool = False, seed: int = 0) -> tuple[Quantizer, Net]:
    """A prepared :class:`Net` (same weights for the same seed)."""
    torch.manual_seed(seed)
    model = Net(use_checkpoint)
    quantizer, _ = prepare_eager(model, (torch.randn(4, 6),))
    return quantizer, model


def test_no_grad_forward_equals_grad_forward() -> None:
    """Under no_grad the fake-quantizers apply exactly as with gradients."""
    _, model = prepared_net()
    x = torch.randn(4, 6)
    y = model(x)
    assert y.requires_grad
    with torch.no_grad():
        y_no_grad = model(x)
        expected = net_by_hand(model, x)
    assert torch.equal(y.detach(), y_no_grad) and torch.equal(y_no_grad, expected)
    assert_clean_eager_state()


def test_inference_mode_outside_and_nested() -> None:
    """inference_mode force-sets the dispatch-key TLS: around the model, nested with
    inference_mode(False), and inside a forward, interception still works and the key's
    TLS bits are restored afterwards."""
    _, model = prepared_net()
    x = torch.randn(4, 6)
    with torch.no_grad():
        expected = net_by_hand(model, x)
    with torch.inference_mode():
        assert torch.equal(model(x), expected)
        assert _ops.eager_key_state() == (False, True) and _ops.eager_scope_depth() == 0
        with torch.inference_mode(False):
            assert torch.equal(model(x), expected)
        assert torch.equal(model(x), expected)
    assert_clean_eager_state()

    class InferenceInside(nn.Module):
        def __init__(self, net: Net) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                y = self.net(x)
            return y.clone()

    torch.manual_seed(0)
    wrapper = InferenceInside(Net())
    prepare_eager(wrapper, (torch.randn(4, 6),))
    # The fake-quantizer state observed inside inference_mode are inference tensors: the
    # hand-written forward must run there too.
    with torch.inference_mode():
        expected = net_by_hand(wrapper.net, x)
    assert torch.equal(wrapper(x), expected)
    assert_clean_eager_state()


def test_prepare_inside_inference_mode() -> None:
    """A model prepared inside inference_mode works there and, afterwards, outside it
    (no_grad inference and a QAT step)."""
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(4, 6)
    with torch.inference_mode():
        quantizer, _ = prepare_eager(model, (x,))
        inside = model(x)
    assert_clean_eager_state()
    with torch.no_grad():
        assert torch.equal(model(x), inside)
        assert torch.equal(net_by_hand(model, x), inside)
    with quantizer.training_mode():
        model(x).sum().backward()
    assert model.head.parametrizations.weight.original.grad is not None


def test_checkpoint_recompute_reapplies_fake_quant_and_never_observes() -> None:
    """Activation checkpointing (use_reentrant=False) recomputes the block during backward:
    fake-quant is re-applied (gradients equal the model without checkpointing, bit for
    bit) and the recompute observes nothing (observer state unchanged by backward)."""
    q_plain, plain = prepared_net(False)
    q_ckpt, ckpt = prepared_net(True)
    assert fq_paths(plain) == fq_paths(ckpt)
    x = torch.randn(4, 6) * 2
    for quantizer, model in ((q_plain, plain), (q_ckpt, ckpt)):
        with quantizer.training_mode():
            loss = model(x).square().sum()
            before = {k: v.clone() for k, v in model.state_dict().items()}
            loss.backward()
            after = model.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before)
    for (name, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert p.grad is not None and torch.equal(p.grad, q.grad), name
    plain_state, ckpt_state = plain.state_dict(), ckpt.state_dict()
    assert all(torch.equal(plain_state[k], ckpt_state[k]) for k in plain_state)
    assert_clean_eager_state()


def test_backward_on_another_thread() -> None:
    """A backward (with a checkpoint recompute) run on another thread re-applies
    fake-quant there, never observes, and leaves both threads' scopes closed."""
    q_plain, plain = prepared_net(False)
    q_ckpt, ckpt = prepared_net(True)
    x = torch.randn(4, 6)
    with q_plain.training_mode():
        plain(x).sum().backward()
    thread_state: dict[str, object] = {}
    with q_ckpt.training_mode():
        loss = ckpt(x).sum()
        before = {k: v.clone() for k, v in ckpt.state_dict().items()}

        def run() -> None:
            loss.backward()
            thread_state["scope"] = (_ops.eager_key_state(), _ops.eager_scope_depth())

        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
        after = ckpt.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    assert thread_state["scope"] == ((False, True), 0)
    for (name, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
    assert_clean_eager_state()


def test_forward_on_another_thread() -> None:
    """Module frames and the scope are per thread: a forward on a worker thread is
    quantized as on the main thread."""
    _, model = prepared_net()
    x = torch.randn(4, 6)
    with torch.no_grad():
        expected = net_by_hand(model, x)
    out: dict[str, torch.Tensor] = {}

    def run() -> None:
        with torch.no_grad():
            out["y"] = model(x)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert torch.equal(out["y"], expected)
    assert_clean_eager_state()


_COMPILE_SCRIPT = textwrap.dedent(
    """
    import json, torch
    from torch import nn
    from coreai_opt import _ops
    from coreai_opt.quantization import Quantizer, QuantizerConfig

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) + x

    results = {}
    for warm in (False, True):
        torch._dynamo.reset()
        model = Small()
        x = torch.randn(2, 4)
        Quantizer(model, QuantizerConfig(execution_mode="eager")).prepare((x,))
        if warm:
            model(x)
        try:
            torch.compile(model, backend="aot_eager")(x)
            error = None
        except Exception as exc:
            error = str(exc)
        results[str(warm)] = {
            "error": error,
            "state": [list(_ops.eager_key_state()), _ops.eager_scope_depth(),
                      _ops.eager_frame_depth()],
        }
    print(json.dumps(results))
    """
)


def test_torch_compile_raises_clear_error() -> None:
    """torch.compile(prepared)(x) raises a RuntimeError that points to graph mode, whether
    or not the model ran before, and leaves no scope or frame open (run in a subprocess:
    a failure here must not leak frames into this process)."""
    results = run_json_script(_COMPILE_SCRIPT, timeout=240)
    for warm, result in results.items():
        assert result["error"] is not None, f"warm={warm}: compiled without error"
        assert "execution_mode='graph'" in result["error"], warm
        assert result["state"] == [[False, True], 0, 0], warm


def test_torch_export_raises_clear_error() -> None:
    """torch.export.export(prepared) refuses with a message that names graph mode."""
    _, model = prepared_net()
    x = torch.randn(4, 6)
    with pytest.raises(RuntimeError, match="execution_mode='graph'"):
        torch.export.export(model, (x,))
    assert_clean_eager_state()
    with torch.no_grad():
        assert torch.equal(model(x), net_by_hand(model, x))


class InPlace(nn.Module):
    """``x += y``, ``x.add_(y)``, ``x.mul_(2)`` on a fresh tensor; returns it and its alias."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = x * 1.5
        alias = z
        z += y
        same_after_iadd = z is alias
        z.add_(y)
        z.mul_(2)
        flag = torch.tensor(same_after_iadd and z is alias)
        return z, alias, flag


def test_in_place_ops_keep_alias_semantics() -> None:
    """In-place overloads fake-quantize their first argument in place: the caller's tensor
    holds the (quantized) result, and the values are the hand-computed ones."""
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    model = InPlace()
    prepare_eager(model, (x, y))
    assert {
        "add__quantize_input",
        "add__quantize_other",
        "add__quantize_output_0",
        "add__1_quantize_input",
        "add__1_quantize_other",
        "mul__quantize_input",
        "mul__quantize_output_0",
    } <= fq_paths(model)
    assert "mul__quantize_other" not in fq_paths(model)  # the 2 is a wrapped number
    m = model
    with torch.no_grad():
        z, alias, flag = model(x, y)
        assert bool(flag) and z is alias
        h = m.mul_quantize_output_0(m.mul_quantize_input(x) * 1.5)
        h = m.add__quantize_output_0(m.add__quantize_input(h) + m.add__quantize_other(y))
        h = m.add__1_quantize_output_0(m.add__1_quantize_input(h) + m.add__1_quantize_other(y))
        h = m.mul__quantize_output_0(m.mul__quantize_input(h) * 2)
        assert torch.equal(z, h)
    assert_clean_eager_state()


class Residual(nn.Module):
    """conv → batch norm, then ``out += x`` (torchvision's BasicBlock pattern), relu."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        out += x
        return F.relu(out)


def test_in_place_ops_backward() -> None:
    """QAT through ``out += x`` (torchvision's BasicBlock): the in-place op's fake-quantized
    operands never invalidate what autograd saved, and the gradients equal a hand-written
    re-execution on a deep copy, bit for bit."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5)
    model = Residual()
    quantizer, _ = prepare_eager(model, (x,))
    assert {"add__quantize_input", "add__quantize_other", "add__quantize_output_0"} <= fq_paths(
        model
    )
    twin = copy.deepcopy(model)
    twin_quantizer = Quantizer(twin, quantizer.config)
    with quantizer.training_mode():
        model(x).square().sum().backward()
    with twin_quantizer.training_mode():
        c = twin.conv
        h = c.conv2d_quantize_output_0(
            F.conv2d(c.conv2d_quantize_input(x), c.weight, c.bias, padding=1)
        )
        h = twin.bn(h)
        h = twin.add__quantize_output_0(twin.add__quantize_input(h) + twin.add__quantize_other(x))
        F.relu(h).square().sum().backward()
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        assert p.grad is not None and torch.equal(p.grad, q.grad), name
    assert_clean_eager_state()


class ScalarOperands(nn.Module):
    """``x + 1``, ``x * 0.5`` and an add of a one-element tensor."""

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return ((x + 1) * 0.5) - s


def test_wrapped_number_is_never_quantized() -> None:
    """``x + 1`` reaches the dispatcher with a wrapped-number tensor: never quantized (nor
    a one-element tensor); the op still counts and its tensor input and output are."""
    x, s = torch.randn(8), torch.tensor([0.25])
    model = ScalarOperands()
    prepare_eager(model, (x, s))
    assert fq_paths(model) == {
        "add_quantize_input",
        "add_quantize_output_0",
        "mul_quantize_input",
        "mul_quantize_output_0",
        "sub_quantize_input",
        "sub_quantize_output_0",
    }
    m = model
    with torch.no_grad():
        h = m.add_quantize_output_0(m.add_quantize_input(x) + 1)
        h = m.mul_quantize_output_0(m.mul_quantize_input(h) * 0.5)
        assert torch.equal(model(x, s), m.sub_quantize_output_0(m.sub_quantize_input(h) - s))


class Twice(nn.Module):
    """One TwoAdd-style submodule called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.inner(x))


def test_module_called_twice_same_fake_quantizers_and_names() -> None:
    """A module called twice has one set of fake-quantizers, named once (counters restart
    per module call), applied on both calls."""
    torch.manual_seed(0)
    model = Twice()
    x = torch.randn(4, 6)
    prepare_eager(model, (x,))
    assert Quantizer.get_compressible_op_names(model, "eager") == {
        "inner.fc1.linear",
        "inner.fc2.linear",
        "inner.relu",
        "inner.add",
    }
    paths = fq_paths(model)
    assert "inner.add_quantize_input" in paths
    assert not any("add_1" in p or "linear_1" in p for p in paths)
    inner = model.inner

    def block(h: torch.Tensor) -> torch.Tensor:
        def linear(fc: nn.Module, v: torch.Tensor) -> torch.Tensor:
            v = F.linear(fc.linear_quantize_input(v), fc.weight, fc.bias)
            return fc.linear_quantize_output_0(v)

        out = linear(inner.fc2, F.relu(linear(inner.fc1, h)))
        return inner.add_quantize_output_0(
            inner.add_quantize_input(out) + inner.add_quantize_other(h)
        )

    with torch.no_grad():
        assert torch.equal(model(x), block(block(x)))


_FALLBACK_SCRIPT = textwrap.dedent(
    """
    import json, torch
    from torch import nn
    from coreai_opt import _ops
    from coreai_opt.quantization import Quantizer, QuantizerConfig

    # What a PrivateUse1 backend with autocast support does: a fallback on the key.
    lib = torch.library.Library("_", "IMPL")
    key = torch._C.DispatchKey.AutocastPrivateUse1

    def fallback(op, keyset, *args, **kwargs):
        return op.redispatch(keyset.remove(key), *args, **kwargs)

    lib.fallback(fallback, dispatch_key="AutocastPrivateUse1", with_keyset=True)
    errors = []
    for _ in range(2):
        model = nn.Sequential(nn.Linear(4, 4))
        try:
            Quantizer(model, QuantizerConfig(execution_mode="eager")).prepare((torch.randn(2, 4),))
            errors.append(None)
        except Exception as exc:
            errors.append([type(exc).__name__, str(exc)])
    state = [list(_ops.eager_key_state()), _ops.eager_scope_depth(), _ops.eager_frame_depth()]
    print(json.dumps({"errors": errors, "state": state}))
    """
)


def test_existing_fallback_on_intercept_key_is_a_clear_error() -> None:
    """With a fallback already registered for AutocastPrivateUse1 (a PrivateUse1 backend
    with AMP), prepare raises a RuntimeError naming the key and graph mode, every time,
    and leaves the scope closed (simulated in a subprocess: the fallback is process-wide)."""
    result = run_json_script(_FALLBACK_SCRIPT, timeout=120)
    assert len(result["errors"]) == 2
    for error in result["errors"]:
        assert error is not None
        kind, message = error
        assert kind == "RuntimeError"
        assert "AutocastPrivateUse1" in message
        assert "execution_mode='graph'" in message
    assert result["state"] == [[False, True], 0, 0]


class Raising(nn.Module):
    """A block whose forward raises after running intercepted ops, inside a parent."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Block()
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor, fail: bool = False) -> torch.Tensor:
        h = self.inner(x)
        if fail:
            raise ValueError("boom inside forward")
        return self.head(h) * 2


def test_exception_inside_forward_restores_scope() -> None:
    """A Python exception in a forward, or an op failing inside an intercepted call,
    leaves scope depth 0, no frame, the key's TLS restored, and the model usable."""
    torch.manual_seed(0)
    model = Raising()
    x = torch.randn(4, 6)
    prepare_eager(model, (x,))
    with torch.no_grad():
        y = model(x)
        with pytest.raises(ValueError, match="boom"):
            model(x, True)
        assert_clean_eager_state()
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
            model(torch.randn(4, 5))
        assert_clean_eager_state()
        assert torch.equal(model(x), y)


class _Passthrough(TorchDispatchMode):
    """A TorchDispatchMode that only forwards every op (as profilers / counters do)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        return func(*args, **(kwargs or {}))


def test_python_dispatch_mode_does_not_disable_interception() -> None:
    """A TorchDispatchMode around the model (FlopCounterMode, debug modes) must not switch
    interception off: the output equals the hand-computed quantized forward."""
    _, model = prepared_net()
    x = torch.randn(4, 6)
    with torch.no_grad():
        expected = net_by_hand(model, x)
        with _Passthrough():
            y = model(x)
    assert_clean_eager_state()
    assert torch.equal(y, expected)
