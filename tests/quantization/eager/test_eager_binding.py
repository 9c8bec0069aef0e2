"""The C++ tables of an eager-prepared model stay bound to its fake-quantizers' state when
that state is replaced: ``.to(dtype)`` / ``.half()`` / ``.float()`` / ``.cuda()``,
``load_state_dict`` (also ``assign=True``), ``copy.deepcopy``, pickling and
``torch.save`` / ``torch.load`` of the whole model.

"Bound" is checked two ways: the output equals a hand-written forward that applies the
model's own (Python) fake-quantizers, and an observer update made through the model lands
in the Python-visible state (a stale table would update, or read, the old tensors).
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from eager_helpers import assert_clean_eager_state, prepare_eager
from eager_models import Tied
from torch import nn

from coreai_opt.quantization import Quantizer


class Small(nn.Module):
    """conv → max_pool2d → flatten → linear → ``* 2``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(self.conv(x), 1).flatten(1)
        return self.fc(h) * 2


def by_hand(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`Small`'s forward with its fake-quantizers applied by hand."""
    conv, fc = model.conv, model.fc
    h = conv.conv2d_quantize_input(x)
    h = conv.conv2d_quantize_output_0(F.conv2d(h, conv.weight, conv.bias, padding=1))
    h = model.max_pool2d_quantize_input(h)
    h = model.max_pool2d_quantize_output_0(F.max_pool2d(h, 1)).flatten(1)
    h = fc.linear_quantize_output_0(F.linear(fc.linear_quantize_input(h), fc.weight, fc.bias))
    return model.mul_quantize_output_0(model.mul_quantize_input(h) * 2)


def prepared_small(seed: int = 0) -> tuple[Quantizer, Small, torch.Tensor]:
    """A prepared :class:`Small` and an input."""
    torch.manual_seed(seed)
    model = Small()
    x = torch.randn(2, 2, 4, 4)
    quantizer, _ = prepare_eager(model, (x,))
    return quantizer, model, x


def calibrate(quantizer: Quantizer, model: nn.Module, x: torch.Tensor) -> None:
    """One calibration forward (observers on, fake-quant off)."""
    with quantizer.calibration_mode(model), torch.no_grad():
        model(x)


def assert_bound(model: nn.Module, x: torch.Tensor, quantizer: Quantizer) -> None:
    """The model's output equals the hand-written forward before and after a calibration
    step whose observer updates must reach the Python-visible state."""
    with torch.no_grad():
        assert torch.equal(model(x), by_hand(model, x))
    fq = model.fc.linear_quantize_input
    before = fq.qparams_calculator.running_max.clone()
    calibrate(quantizer, model, x * 3)
    assert not torch.equal(fq.qparams_calculator.running_max, before), "observer not bound"
    with torch.no_grad():
        assert torch.equal(model(x), by_hand(model, x))
    assert_clean_eager_state()


def test_prepared_model_is_bound() -> None:
    """The baseline: a freshly prepared model is bound."""
    quantizer, model, x = prepared_small()
    assert_bound(model, x, quantizer)


DTYPE_CASTS: dict[str, tuple[Callable[[nn.Module], nn.Module], torch.dtype]] = {
    "to(float64)": (lambda m: m.to(torch.float64), torch.float64),
    "half()": (lambda m: m.half(), torch.float16),
    "bfloat16()": (lambda m: m.bfloat16(), torch.bfloat16),
}


@pytest.mark.parametrize("cast", list(DTYPE_CASTS.values()), ids=list(DTYPE_CASTS))
def test_dtype_cast_keeps_binding(
    cast: tuple[Callable[[nn.Module], nn.Module], torch.dtype],
) -> None:
    """After a dtype cast the model computes in that dtype with float32 qparams, equals the
    hand-written forward, stays bound, and ``.float()`` brings it back."""
    quantizer, model, x = prepared_small()
    reference = copy.deepcopy(model)
    apply, dtype = cast
    assert apply(model) is model
    xd = x.to(dtype)
    with torch.no_grad():
        y = model(xd)
        assert y.dtype == dtype
        assert torch.equal(y, by_hand(model, xd))
    scale = model.fc.linear_quantize_input.qparams_calculator.scale
    assert scale.dtype == torch.float32
    assert_bound(model, xd, quantizer)
    model.float()
    assert_bound(model, x, quantizer)
    if dtype == torch.float64:  # exact round trip of the weights: same model as before
        reference_quantizer = Quantizer(reference, quantizer.config)
        calibrate(reference_quantizer, reference, x * 3)  # as assert_bound did, twice
        calibrate(reference_quantizer, reference, x * 3)
        with torch.no_grad():
            assert torch.equal(model(x), reference(x))


def test_float_on_float_model_keeps_binding() -> None:
    """``.float()`` / ``.to(torch.float32)`` of a float32 model: nothing changes."""
    quantizer, model, x = prepared_small()
    with torch.no_grad():
        y = model(x)
    model.float().to(torch.float32)
    with torch.no_grad():
        assert torch.equal(model(x), y)
    assert_bound(model, x, quantizer)


@pytest.mark.parametrize("assign", [False, True], ids=["copy", "assign"])
def test_load_state_dict_with_other_qparams(assign: bool) -> None:
    """Loading a state_dict with other qparams (in place or ``assign=True``) changes the
    output accordingly: the tables follow the loaded tensors."""
    quantizer, model, x = prepared_small()
    with torch.no_grad():
        y = model(x)
    state = copy.deepcopy(model.state_dict())
    state["fc.linear_quantize_input.qparams_calculator.scale"] *= 4
    state["mul_quantize_output_0.qparams_calculator.scale"] *= 3
    state["conv.parametrizations.weight.0.qparams_calculator.scale"] *= 2
    model.load_state_dict(state, assign=assign)
    scale = model.fc.linear_quantize_input.qparams_calculator.scale
    assert torch.equal(scale, state["fc.linear_quantize_input.qparams_calculator.scale"])
    assert (scale is state["fc.linear_quantize_input.qparams_calculator.scale"]) == assign
    with torch.no_grad():
        y_loaded = model(x)
        assert not torch.equal(y_loaded, y)
        assert torch.equal(y_loaded, by_hand(model, x))
    assert_bound(model, x, quantizer)


def test_load_state_dict_from_another_prepared_model() -> None:
    """A second model prepared on other data takes over the first one's qparams and weights
    through load_state_dict: same outputs."""
    _, first, x = prepared_small(seed=0)
    torch.manual_seed(1)
    second = Small()
    prepare_eager(second, (torch.randn(2, 2, 4, 4) * 5,))
    with torch.no_grad():
        assert not torch.equal(second(x), first(x))
        second.load_state_dict(first.state_dict())
        assert torch.equal(second(x), first(x))


def _deepcopy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def _pickle(model: nn.Module) -> nn.Module:
    return pickle.loads(pickle.dumps(model))


def _torch_save(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


COPIES = {"deepcopy": _deepcopy, "pickle": _pickle, "torch.save": _torch_save}


@pytest.mark.parametrize("make_copy", list(COPIES.values()), ids=list(COPIES))
def test_copies_are_bound_to_their_own_state(make_copy: Callable[[nn.Module], nn.Module]) -> None:
    """A deepcopy / unpickled / torch.load-ed model gives the original's outputs, is bound
    to its own fake-quantizers (calibrating it leaves the original untouched) and keeps
    the op names; QAT works on it."""
    quantizer, model, x = prepared_small()
    with torch.no_grad():
        y = model(x)
    clone = make_copy(model)
    assert clone is not model
    assert clone.fc.linear_quantize_input is not model.fc.linear_quantize_input
    with torch.no_grad():
        assert torch.equal(clone(x), y)
    assert Quantizer.get_compressible_op_names(
        clone, "eager"
    ) == Quantizer.get_compressible_op_names(model, "eager")
    original_state = {k: v.clone() for k, v in model.state_dict().items()}
    clone_quantizer = Quantizer(clone, quantizer.config)
    assert_bound(clone, x, clone_quantizer)
    for key, value in model.state_dict().items():
        assert torch.equal(value, original_state[key]), key
    with torch.no_grad():
        assert torch.equal(model(x), y)
        assert not torch.equal(clone(x), y)
    with clone_quantizer.training_mode():
        clone(x).sum().backward()
    assert clone.fc.parametrizations.weight.original.grad is not None
    assert model.fc.parametrizations.weight.original.grad is None


@pytest.mark.parametrize("make_copy", list(COPIES.values()), ids=list(COPIES))
def test_copies_keep_tied_weights_shared(make_copy: Callable[[nn.Module], nn.Module]) -> None:
    """A tied weight stays one tensor with one fake-quantizer in the copy."""
    torch.manual_seed(0)
    idx = torch.randint(0, 6, (2, 3))
    model = Tied()
    prepare_eager(model, (idx,))
    clone = make_copy(model)
    emb, head = clone.emb.parametrizations.weight, clone.head.parametrizations.weight
    assert emb[0] is head[0] and emb.original is head.original
    assert emb.original is not model.emb.parametrizations.weight.original
    with torch.no_grad():
        assert torch.equal(clone(idx), model(idx))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_keeps_binding() -> None:
    """``.cuda()`` moves the state; the model runs on the GPU and equals the hand-written
    forward there."""
    quantizer, model, x = prepared_small()
    model.cuda()
    xc = x.cuda()
    assert model.fc.linear_quantize_input.qparams_calculator.scale.is_cuda
    assert_bound(model, xc, quantizer)


def test_dtype_cast_moves_qparams_without_rounding_them() -> None:
    """.half() / .to(float64) leave every fake-quantizer tensor bit for bit as it was (the
    state is moved, never converted to the model's dtype and back)."""
    from coreai_opt.quantization._lifecycle import fake_quantizers

    _, model, _ = prepared_small()
    before = {
        f"{name}.{key}": t.clone()
        for name, fq in fake_quantizers(model).items()
        for key, t in fq.state_dict().items()
    }
    model.half()
    model.to(torch.float64)
    after = {
        f"{name}.{key}": t
        for name, fq in fake_quantizers(model).items()
        for key, t in fq.state_dict().items()
    }
    assert before.keys() == after.keys() and before
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key
