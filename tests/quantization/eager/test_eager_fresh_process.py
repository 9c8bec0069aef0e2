"""An eager-prepared model saved whole and loaded in a fresh process still quantizes there:
the op-type registration with the C++ interceptor is per process, so the loaded model's
first forward must register them again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from coreai_opt.quantization import Quantizer, QuantizerConfig
from coreai_opt.quantization._lifecycle import set_switches


def test_a_model_loaded_in_a_fresh_process_still_fake_quantizes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(16, 8)
    prepared = Quantizer(model, QuantizerConfig(execution_mode="eager")).prepare((x,))
    with torch.no_grad():
        quantized = prepared(x)
        set_switches(prepared, observer=False, fake_quant=False)
        unquantized = prepared(x)
        set_switches(prepared, observer=False, fake_quant=True)
    assert not torch.equal(quantized, unquantized)
    path = tmp_path / "model.pt"
    torch.save({"model": prepared, "x": x, "y": quantized}, path)
    code = (
        "import torch\n"
        f"d = torch.load({str(path)!r}, weights_only=False)\n"
        "with torch.no_grad():\n"
        "    print(torch.equal(d['model'](d['x']), d['y']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
