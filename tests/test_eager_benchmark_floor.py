"""The eager benchmark's three quantized variants of each model place the same fake-quantizers.

``benchmarks/eager_overhead.py`` times eager mode, a Python TorchFunctionMode interceptor and
the same fake-quantizers written into the model's forward (the floor of what an
interceptor can add). Its comparisons mean something only if all three quantize the same
tensors: with qparams from the same calibration pass they must give bit-identical outputs,
in eval and in a training-mode forward with observers on.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import eager_overhead as bench


@pytest.mark.parametrize("name", ["CNN", "PreLN"])
def test_hand_placed_python_and_eager_quantize_alike(name: str) -> None:
    """Same outputs in eval (observers off) and in one QAT-mode forward (observers on)."""
    make = {"CNN": bench.CNN, "PreLN": bench.PreLN}[name]
    torch.manual_seed(0)
    base = make()
    x = make.example_input()
    preset = bench.w8a8_eager().global_config
    assert preset is not None
    act, weight = preset.op_input_spec["*"], preset.op_state_spec["weight"]
    python = bench.PythonInterceptor(copy.deepcopy(base), act, weight).prepare((x,))
    hand = bench.HAND_PLACED[name](copy.deepcopy(base), act, weight).calibrate(x)
    quantizer, eager = bench.eager_prepare(copy.deepcopy(base), bench.w8a8_eager(), (x,))
    fqs = [m for m in hand.modules() if isinstance(m, bench.FakeQuantizeImplBase)]
    assert len(fqs) == len(hand.ACTS) + len(hand.WEIGHTS)

    for m in (python.model, hand, eager):
        m.eval()
    bench.check_same_outputs(name, x, hand=hand, python=python, eager=eager)

    python.model.train()
    hand.train()
    bench.set_switches(python.model, observer=True, fake_quant=True)
    bench.set_switches(hand, observer=True, fake_quant=True)
    with quantizer.training_mode(eager):
        bench.check_same_outputs(name, x, hand=hand, python=python, eager=eager)


def test_check_same_outputs_names_the_pair_that_differs() -> None:
    """A model with one fake-quantizer switched off is caught; the message names both."""
    torch.manual_seed(0)
    base = bench.CNN().eval()
    x = bench.CNN.example_input()
    preset = bench.w8a8_eager().global_config
    assert preset is not None
    act, weight = preset.op_input_spec["*"], preset.op_state_spec["weight"]
    hand = bench.HAND_PLACED["CNN"](copy.deepcopy(base), act, weight).calibrate(x).eval()
    fewer = copy.deepcopy(hand)
    fewer.act["fc2_out"].enable_fake_quant(False)
    with pytest.raises(AssertionError, match="hand and fewer differ"):
        bench.check_same_outputs("CNN", x, hand=hand, fewer=fewer)
