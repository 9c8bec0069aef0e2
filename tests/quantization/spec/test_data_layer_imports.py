"""The config and spec data layer imports no nn.Module implementation (issue 16, part A).

Each check runs in a fresh interpreter, so modules imported by other tests do not hide
an import made by the data layer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

IMPLEMENTATIONS = [
    "coreai_opt.quantization.spec.fake_quantize",
    "coreai_opt.quantization.spec.qparams_calculator",
    "coreai_opt.quantization.spec.range_calculator",
    "coreai_opt.quantization.spec.factory",
    "coreai_opt.quantization.quantizer",
    "coreai_opt.quantization._lifecycle",
]


def _run(code: str) -> dict:
    """Run *code* in a new interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_data_modules_do_not_import_implementations() -> None:
    out = _run(
        f"""
        import json, sys
        import coreai_opt
        import coreai_opt.quantization.spec.spec
        import coreai_opt.quantization.spec.granularity
        import coreai_opt.quantization.config
        import coreai_opt.quantization.config.resolution
        import coreai_opt.config
        from coreai_opt.quantization import ExecutionMode, ModuleQuantizerConfig, QuantizerConfig
        from coreai_opt.quantization.spec import (
            PerBlockGranularity, QuantizationScheme, QuantizationSpec, resolve_block_sizes,
        )
        from coreai_opt.quantization.spec._registry import FAKE_QUANTIZE_REGISTRY
        print(json.dumps({{
            "loaded": [m for m in {IMPLEMENTATIONS!r} if m in sys.modules],
            "registered": sorted(FAKE_QUANTIZE_REGISTRY),
        }}))
        """
    )
    assert out == {"loaded": [], "registered": []}


def test_keys_resolve_by_loading_the_module_that_registers_them() -> None:
    out = _run(
        """
        import json, sys
        from coreai_opt.quantization.spec import QuantizationSpec
        spec = QuantizationSpec(fake_quantize_cls="default", qparam_calculator_cls="dynamic")
        from coreai_opt.quantization.spec._registry import FAKE_QUANTIZE_REGISTRY
        print(json.dumps({
            "fq": spec.fake_quantize_cls.__qualname__,
            "fq_module": spec.fake_quantize_cls.__module__,
            "calc": spec.qparam_calculator_cls.__qualname__,
            "range": spec.range_calculator_cls.__qualname__,
            "registered": sorted(FAKE_QUANTIZE_REGISTRY),
            "factory_loaded": "coreai_opt.quantization.spec.factory" in sys.modules,
        }))
        """
    )
    assert out == {
        "fq": "FakeQuantize",
        "fq_module": "coreai_opt.quantization.spec.fake_quantize",
        "calc": "DynamicQParamsCalculator",
        "range": "MinMaxRangeCalculator",
        "registered": ["default", "lsq"],
        "factory_loaded": False,
    }


def test_lazy_names_load_on_first_access() -> None:
    out = _run(
        """
        import json, sys
        import coreai_opt.quantization as q
        import coreai_opt.quantization.spec as spec
        before = "coreai_opt.quantization.spec.factory" in sys.modules
        factory = spec.QuantizationComponentFactory
        quantizer = q.Quantizer
        print(json.dumps({
            "before": before,
            "factory": factory.__module__,
            "quantizer": quantizer.__module__,
            "fq_module": q.fake_quantize.__name__,
            "in_dir": "StaticQParamsCalculator" in dir(spec),
        }))
        """
    )
    assert out == {
        "before": False,
        "factory": "coreai_opt.quantization.spec.factory",
        "quantizer": "coreai_opt.quantization.quantizer",
        "fq_module": "coreai_opt.quantization.spec.fake_quantize",
        "in_dir": True,
    }
