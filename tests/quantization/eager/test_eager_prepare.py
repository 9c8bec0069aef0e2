"""Eager prepare end to end: numerics against a Python re-execution, fake-quant off, QAT,
weights per version, dynamic control flow, repeated modules, and the public op-type
registration (``register_eager_op_type``).

The reference for numerics is always a hand-written forward that applies the prepared
model's own fake-quantizer submodules and parametrized weights outside any eager scope, so
the dispatcher path (native C++ slots and Python slots) must give the same bits.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from eager_helpers import assert_clean_eager_state, eager_config, fq_paths, prepare_eager
from torch import nn

from coreai_opt.quantization import ModuleQuantizerConfig, QuantizationSpec, Quantizer
from coreai_opt.quantization._eager.op_registry import (
    register_eager_op_type,
    registered_op_types,
)
from coreai_opt.quantization.spec import _state_epoch


class ConvBnReluLinear(nn.Module):
    """conv → batch norm → relu → flatten → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def cbrl_by_hand(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`ConvBnReluLinear`'s forward with its fake-quantizers applied by hand."""
    conv, fc = model.conv, model.fc
    h = conv.conv2d_quantize_input(x)
    h = conv.conv2d_quantize_output_0(F.conv2d(h, conv.weight, conv.bias))
    h = F.relu(model.bn(h)).flatten(1)
    h = fc.linear_quantize_input(h)
    return fc.linear_quantize_output_0(F.linear(h, fc.weight, fc.bias))


def make_cbrl(seed: int = 0) -> ConvBnReluLinear:
    """A :class:`ConvBnReluLinear` with non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    model = ConvBnReluLinear()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
    return model.eval()


ACTIVATION_SPECS = {
    "int8": None,
    "uint8-asym": QuantizationSpec(dtype="uint8", qscheme="asymmetric"),
    "fp8": QuantizationSpec(dtype=torch.float8_e4m3fn),
    "lsq (Python slot)": QuantizationSpec(fake_quantize_cls="lsq"),
}


def activation_config(spec: QuantizationSpec | None) -> object:
    """W8 weights and *spec* activations (None: the defaults)."""
    if spec is None:
        return eager_config()
    return eager_config(
        ModuleQuantizerConfig(op_input_spec={"*": spec}, op_output_spec={"*": spec})
    )


@pytest.mark.parametrize("spec", list(ACTIVATION_SPECS.values()), ids=list(ACTIVATION_SPECS))
def test_forward_equals_python_reexecution(spec: QuantizationSpec | None) -> None:
    """Eval forward of the prepared model == the hand-written forward, bit for bit."""
    model = make_cbrl()
    x = torch.randn(2, 3, 8, 8)
    prepare_eager(model, (x,), activation_config(spec))
    assert fq_paths(model) == {
        "conv.conv2d_quantize_input",
        "conv.conv2d_quantize_output_0",
        "conv.parametrizations.weight.0",
        "fc.linear_quantize_input",
        "fc.linear_quantize_output_0",
        "fc.parametrizations.weight.0",
    }
    x2 = torch.randn(2, 3, 8, 8) * 1.5
    with torch.no_grad():
        y = model(x2)
        expected = cbrl_by_hand(model, x2)
        plain = F.linear(
            F.relu(model.bn(F.conv2d(x2, model.conv.weight, model.conv.bias))).flatten(1),
            model.fc.weight,
            model.fc.bias,
        )
    assert torch.equal(y, expected)
    assert not torch.equal(y, plain), "activation fake-quant must change the output"
    assert_clean_eager_state()


def test_fake_quant_off_equals_float_model() -> None:
    """With every fake-quantizer off (observers off too) the prepared model computes
    exactly what the float model does; switching back on restores the quantized output."""
    model = make_cbrl()
    float_model = copy.deepcopy(model)
    x = torch.randn(2, 3, 8, 8)
    quantizer, _ = prepare_eager(model, (x,))
    with torch.no_grad():
        quantized = model(x)
        quantizer.disable_fake_quant()
        assert torch.equal(model(x), float_model(x))
        quantizer.enable_fake_quant()
        assert torch.equal(model(x), quantized)
        assert not torch.equal(quantized, float_model(x))


@pytest.mark.parametrize("spec", list(ACTIVATION_SPECS.values()), ids=list(ACTIVATION_SPECS))
def test_qat_gradients_equal_python_reexecution(spec: QuantizationSpec | None) -> None:
    """In training_mode the prepared model's loss gradients (weights, biases, batch norm,
    learnable qparams) and its observer updates equal a hand-written re-execution on a
    deep copy, bit for bit."""
    model = make_cbrl().train()
    x = torch.randn(2, 3, 8, 8)
    quantizer, _ = prepare_eager(model, (x,), activation_config(spec))
    twin = copy.deepcopy(model)
    twin_quantizer = Quantizer(twin, activation_config(spec))
    x2 = torch.randn(2, 3, 8, 8) * 2
    with quantizer.training_mode():
        out = model(x2)
        out.square().sum().backward()
        state = {k: v.clone() for k, v in model.state_dict().items()}
    with twin_quantizer.training_mode():
        twin_out = cbrl_by_hand(twin, x2)
        twin_out.square().sum().backward()
        twin_state = {k: v.clone() for k, v in twin.state_dict().items()}
    assert torch.equal(out, twin_out)
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        assert p.grad is not None and q.grad is not None, name
        assert torch.equal(p.grad, q.grad), name
    assert model.conv.parametrizations.weight.original.grad.abs().sum() > 0
    assert set(state) == set(twin_state)
    for key in state:
        assert torch.equal(state[key], twin_state[key]), key
    assert_clean_eager_state()


def test_qat_two_forwards_two_backwards_without_step() -> None:
    """Two forward + backward passes with no optimizer step in between work (a weight's
    fake-quantized value is never reused across backward passes) and accumulate twice the
    gradient of one pass when nothing observes."""
    model = make_cbrl()
    x = torch.randn(2, 3, 8, 8)
    quantizer, _ = prepare_eager(model, (x,))
    weight = model.fc.parametrizations.weight.original
    with quantizer.training_mode():
        quantizer.disable_observer()
        model.bn.eval()
        model(x).sum().backward()
        once = weight.grad.clone()
        model(x).sum().backward()
    assert once.abs().sum() > 0
    assert torch.equal(weight.grad, 2 * once)


class ReusedLinear(nn.Module):
    """One linear applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc(x))


def test_weight_fake_quantized_once_per_version() -> None:
    """Inference reads a weight through its parametrization on every module call; the
    fake-quantize runs once per weight version (the second read returns the same result
    object), again after the weight changes, and gives the uncached result."""
    torch.manual_seed(0)
    model = ReusedLinear()
    x = torch.randn(3, 5)
    prepare_eager(model, (x,))
    fc = model.fc
    fq = fc.parametrizations.weight[0]
    original = fc.parametrizations.weight.original
    results: list[torch.Tensor] = []
    fq.register_forward_hook(lambda module, args, out: results.append(out))

    def once(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        h = F.linear(fc.linear_quantize_input(h), weight, fc.bias)
        return fc.linear_quantize_output_0(h)

    with torch.no_grad():
        expected = once(once(x, fq(original)), fq(original))
        results.clear()
        y = model(x)
        assert torch.equal(y, expected)
        assert len(results) == 2 and results[1] is results[0]
        assert torch.equal(model(x), expected)
        assert len(results) == 4 and all(r is results[0] for r in results)
        original.add_(0.25)
        changed = model(x)
        assert len(results) == 6 and results[4] is not results[0] and results[5] is results[4]
        fq.enable_version_cache(False)
        uncached = fq(original)
        fq.enable_version_cache(True)
        assert torch.equal(results[4], uncached)
        assert not torch.equal(changed, expected)
        # `param.data = new` keeps the parameter's id and version: the storage tells.
        model(x)  # caches the current weight again (re-enabling emptied the cache)
        original.data = original.data * 2
        model(x)
        read = results[-1]
        fq.enable_version_cache(False)
        doubled = fq(original)
        fq.enable_version_cache(True)
        assert torch.equal(read, doubled)
        # A qparam changed in place (a distributed sync, an edit by hand) moves its version
        # and so invalidates the cached weight, with no state epoch bump.
        model(x)
        before = results[-1]
        epoch = _state_epoch.EPOCH[0]
        fq.qparams_calculator.scale.mul_(2)
        model(x)
        assert _state_epoch.EPOCH[0] == epoch
        read = results[-1]
        fq.enable_version_cache(False)
        rescaled = fq(original)
        fq.enable_version_cache(True)
        assert read is not before and torch.equal(read, rescaled)
    # With gradients the fake-quantized weight is recomputed on every read: a cached
    # autograd graph would be freed by the first backward.
    results.clear()
    model(x).sum().backward()
    model(x).sum().backward()
    assert len(results) == 4 and results[0] is not results[2]


def test_module_called_twice_shares_fake_quantizers() -> None:
    """A module called twice keeps one set of fake-quantizers and names; both calls apply
    them (counters restart per module call)."""
    torch.manual_seed(0)
    model = ReusedLinear()
    x = torch.randn(3, 5)
    prepare_eager(model, (x,))
    assert fq_paths(model) == {
        "fc.linear_quantize_input",
        "fc.linear_quantize_output_0",
        "fc.parametrizations.weight.0",
    }
    assert Quantizer.get_compressible_op_names(model, "eager") == {"fc.linear"}
    fc = model.fc

    def once(h: torch.Tensor) -> torch.Tensor:
        return fc.linear_quantize_output_0(
            F.linear(fc.linear_quantize_input(h), fc.weight, fc.bias)
        )

    with torch.no_grad():
        assert torch.equal(model(x), once(once(x)))


class Branchy(nn.Module):
    """A multiply only when ``flag`` is set, then an add and a sub."""

    def forward(self, x: torch.Tensor, flag: bool) -> torch.Tensor:
        if flag:
            x = x * 3
        x = x + 1
        return x - 2


def test_branch_not_taken_at_prepare_runs_unquantized() -> None:
    """Ops of a branch not taken while preparing get no fake-quantizers, run float when the
    branch is taken later, and do not shift the names of the other ops."""
    x = torch.randn(8)
    model = Branchy()
    prepare_eager(model, (x, False))
    assert fq_paths(model) == {
        "add_quantize_input",
        "add_quantize_output_0",
        "sub_quantize_input",
        "sub_quantize_output_0",
    }
    assert Quantizer.get_compressible_op_names(model, "eager") == {"add", "sub"}
    m = model
    with torch.no_grad():
        taken = model(x, True)
        h = m.add_quantize_output_0(m.add_quantize_input(x * 3) + 1)
        assert torch.equal(taken, m.sub_quantize_output_0(m.sub_quantize_input(h) - 2))
        skipped = model(x, False)
        h = m.add_quantize_output_0(m.add_quantize_input(x) + 1)
        assert torch.equal(skipped, m.sub_quantize_output_0(m.sub_quantize_input(h) - 2))


def test_branch_taken_at_prepare_is_quantized() -> None:
    """The same model prepared with the branch taken quantizes the multiply too."""
    x = torch.randn(8)
    model = Branchy()
    prepare_eager(model, (x, True))
    assert {"mul_quantize_input", "mul_quantize_output_0"} <= fq_paths(model)
    assert Quantizer.get_compressible_op_names(model, "eager") == {"mul", "add", "sub"}
    m = model
    with torch.no_grad():
        h = m.mul_quantize_output_0(m.mul_quantize_input(x) * 3)
        h = m.add_quantize_output_0(m.add_quantize_input(h) + 1)
        assert torch.equal(model(x, True), m.sub_quantize_output_0(m.sub_quantize_input(h) - 2))


class Looped(nn.Module):
    """``n`` multiplies, then an add."""

    def forward(self, x: torch.Tensor, n: int) -> torch.Tensor:
        for _ in range(n):
            x = x * 2
        return x + 1


def test_loop_with_varying_trip_count() -> None:
    """Calls beyond the prepared trip count run float; fewer calls use the first FQs."""
    x = torch.randn(8)
    model = Looped()
    prepare_eager(model, (x, 2))
    assert fq_paths(model) == {
        "mul_quantize_input",
        "mul_quantize_output_0",
        "mul_1_quantize_input",
        "mul_1_quantize_output_0",
        "add_quantize_input",
        "add_quantize_output_0",
    }
    m = model
    with torch.no_grad():
        h = m.mul_quantize_output_0(m.mul_quantize_input(x) * 2)
        h = m.mul_1_quantize_output_0(m.mul_1_quantize_input(h) * 2)
        h = m.add_quantize_output_0(m.add_quantize_input(h * 2) + 1)
        assert torch.equal(model(x, 3), h)
        h = m.mul_quantize_output_0(m.mul_quantize_input(x) * 2)
        assert torch.equal(model(x, 1), m.add_quantize_output_0(m.add_quantize_input(h) + 1))
        assert torch.equal(model(x, 0), m.add_quantize_output_0(m.add_quantize_input(x) + 1))


class Hardswish(nn.Module):
    """A linear followed by F.hardswish (not in the default registry)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardswish(self.fc(x))


def _mixed_flags(model: nn.Module) -> dict[str, bool]:
    """Train the model but put its batch norm in eval: prepare must keep exactly this."""
    model.train()
    model.bn.eval()
    return {path: m.training for path, m in model.named_modules()}


def test_prepare_keeps_train_eval_flags() -> None:
    """prepare runs its recording and calibration forwards in eval mode and restores every
    module's own flag afterwards (fake-quantizers added by prepare excluded)."""
    model = make_cbrl()
    flags = _mixed_flags(model)
    prepare_eager(model, (torch.randn(2, 3, 8, 8),))
    after = {path: m.training for path, m in model.named_modules() if path in flags}
    assert after == flags


def test_recording_restores_train_eval_flags_when_the_forward_raises() -> None:
    """The recording pass restores the flags also when the model's forward fails."""
    from coreai_opt.quantization._eager.recording import record

    model = make_cbrl()
    flags = _mixed_flags(model)
    with pytest.raises(RuntimeError):
        record(model, (torch.randn(2, 5, 8, 8),))  # 5 channels: the conv refuses
    assert {path: m.training for path, m in model.named_modules()} == flags


def test_public_registration_path() -> None:
    """``coreai_opt.quantization.eager_ops`` re-exports the registry functions."""
    from coreai_opt.quantization import eager_ops

    assert eager_ops.register_eager_op_type is register_eager_op_type
    assert eager_ops.registered_op_types is registered_op_types
    assert {"linear", "conv2d", "add", "softmax"} <= eager_ops.registered_op_types()
    assert "softmax" in eager_ops.optional_op_types()
    assert "linear" not in eager_ops.optional_op_types()


def test_register_eager_op_type_hardswish() -> None:
    """Registering aten.hardswish gives it ``hardswish_quantize_input`` / ``_output_0``;
    the prepared model applies them (registration is process-wide and idempotent)."""
    x = torch.randn(3, 4)
    before = Hardswish()
    prepare_eager(before, (x,))
    if "hardswish" not in registered_op_types():
        assert not any(p.startswith("hardswish") for p in fq_paths(before))
    entry = register_eager_op_type(
        "hardswish", torch.ops.aten.hardswish.default, activation_args=["self"]
    )
    assert (entry.op_type, entry.base_name, entry.activation_args) == (
        "hardswish",
        "hardswish",
        ("self",),
    )
    assert register_eager_op_type("hardswish", torch.ops.aten.hardswish.default, [0]) == entry
    assert "hardswish" in registered_op_types()
    model = Hardswish()
    prepare_eager(model, (x,))
    assert {"hardswish_quantize_input", "hardswish_quantize_output_0"} <= fq_paths(model)
    assert Quantizer.get_compressible_op_names(model, "eager") == {"fc.linear", "hardswish"}
    fc = model.fc
    with torch.no_grad():
        h = fc.linear_quantize_output_0(F.linear(fc.linear_quantize_input(x), fc.weight, fc.bias))
        expected = model.hardswish_quantize_output_0(F.hardswish(model.hardswish_quantize_input(h)))
        assert torch.equal(model(x), expected)
    # op_type_config addresses the new type like a built-in one.
    declined = Hardswish()
    prepare_eager(
        declined, (x,), eager_config(ModuleQuantizerConfig(op_type_config={"hardswish": None}))
    )
    assert not any(p.startswith("hardswish") for p in fq_paths(declined))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("h", F.hardsigmoid), {}, TypeError, "OpOverload"),
        (("h", torch.ops.aten.hardsigmoid), {}, TypeError, "OpOverload"),
        (("", torch.ops.aten.hardsigmoid.default), {}, ValueError, "op_type"),
        (("h", torch.ops.aten.hardsigmoid.default, ["input"]), {}, ValueError, "'input'"),
        (("h", torch.ops.aten.hardsigmoid.default, [3]), {}, ValueError, "position 3"),
        (("h", torch.ops.aten.hardsigmoid.default, [True]), {}, ValueError, "True"),
        (("plus", torch.ops.aten.add.Tensor), {}, ValueError, "already intercepted"),
    ],
    ids=["function", "packet", "empty-type", "bad-name", "bad-position", "bool", "retyped"],
)
def test_register_eager_op_type_errors(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """Bad overloads, op types and activation_args are refused and register nothing."""
    before = registered_op_types()
    with pytest.raises(error, match=match):
        register_eager_op_type(*args, **kwargs)  # type: ignore[arg-type]
    assert registered_op_types() == before
