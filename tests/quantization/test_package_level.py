"""Package-level API: deprecated enum values, CoreMLExportError, the torch-version warning."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

import coreai_opt
from coreai_opt import (
    CoreMLExportError,
    DependencyVersionWarning,
    ExportBackend,
    UntestedTorchVersionWarning,
)
from coreai_opt._dependencies import (
    TESTED_TORCH_RANGE,
    torch_version_is_tested,
    warn_if_untested_torch,
)
from coreai_opt.quantization.config import ExecutionMode


def test_value_lookup_of_a_deprecated_alias_names_the_value() -> None:
    with pytest.warns(DeprecationWarning) as record:
        assert ExportBackend("mil") is ExportBackend.CoreML
    (entry,) = record
    text = str(entry.message)
    assert text.startswith("ExportBackend('mil') is deprecated, use ExportBackend('coreml')")
    assert "ExportBackend.CoreML" in text and "ExportBackend.MIL" not in text
    assert entry.filename == __file__  # attributed to the caller, not to enum.py
    with pytest.warns(
        DeprecationWarning, match=r"^ExportBackend\('MLIR'\) is deprecated.*'coreai'"
    ):
        assert ExportBackend("MLIR") is ExportBackend.CoreAI
    with pytest.warns(DeprecationWarning, match=r"^ExecutionMode\('pt2e'\) is deprecated"):
        assert ExecutionMode("pt2e") is ExecutionMode.GRAPH
    # Attribute access keeps the attribute-style text.
    with pytest.warns(DeprecationWarning, match=r"^ExportBackend\.MLIR is deprecated") as record:
        assert ExportBackend.MLIR is ExportBackend.CoreAI
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ExportBackend("coreml") is ExportBackend.CoreML


def test_coreml_export_error_forms() -> None:
    plain = CoreMLExportError("per-block activations are not supported")
    assert isinstance(plain, ValueError)
    assert str(plain).endswith("export with backend=ExportBackend.CoreAI instead.")
    by_dtype = CoreMLExportError.from_dtype(torch.int2, "linear.weight")
    assert "torch.int2" in str(by_dtype) and "linear.weight" in str(by_dtype)
    assert (by_dtype.dtype, by_dtype.context) == (torch.int2, "linear.weight")
    assert str(by_dtype).endswith("ExportBackend.CoreAI instead.")
    by_config = CoreMLExportError.from_config("PerChannelGranularity(axis=1)", "conv1 output")
    assert "PerChannelGranularity(axis=1)" in str(by_config) and "conv1 output" in str(by_config)
    assert str(by_config).endswith("ExportBackend.CoreAI instead.")
    legacy = CoreMLExportError(torch.int4, "activation of linear")
    assert str(legacy) == str(CoreMLExportError.from_dtype(torch.int4, "activation of linear"))


@pytest.mark.parametrize(
    ("version", "tested"),
    [
        ("2.8.0", True),
        ("2.13.0+cpu", True),
        ("2.14.2", True),
        ("2.11.0a0+git1234", True),
        ("2.7.1", False),
        ("2.15.0", False),
        ("3.0.0", False),
        ("nightly", False),
    ],
)
def test_torch_version_range(version: str, tested: bool) -> None:
    assert TESTED_TORCH_RANGE == ((2, 8), (2, 14))
    assert torch_version_is_tested(version) is tested
    if tested:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert warn_if_untested_torch(version) is True
    else:
        with pytest.warns(UntestedTorchVersionWarning, match=rf"torch {version} is installed"):
            assert warn_if_untested_torch(version) is False


def test_warning_classes() -> None:
    assert issubclass(UntestedTorchVersionWarning, DependencyVersionWarning)
    assert issubclass(DependencyVersionWarning, UserWarning)
    assert coreai_opt.UntestedTorchVersionWarning is UntestedTorchVersionWarning


def test_import_warns_only_for_an_untested_torch() -> None:
    """Importing coreai_opt with the running (tested) torch emits no dependency warning."""
    code = (
        "import warnings\n"
        "warnings.simplefilter('error', UserWarning)\n"
        "import coreai_opt\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert torch_version_is_tested(torch.__version__)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
