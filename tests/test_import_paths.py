"""Every import path the reference documents, or that code written for it uses, works here.

Covers the names this project provides (behaviour.md §1 and §12): the package layout of
``coreai_opt.config`` / ``coreai_opt.config.spec`` and ``coreai_opt.quantization.spec``,
the module paths the reference's own tests import from, and the 0.3.0 additions. Each
``from <module> import <name>`` is executed literally, and a name reachable under several
paths must be the same object under all of them.
"""

from __future__ import annotations

import importlib

import pytest

IMPORTS: dict[str, list[str]] = {
    "coreai_opt": [
        "CoreMLExportError",
        "DependencyVersionWarning",
        "ExportBackend",
        "UntestedTorchVersionWarning",
        "__version__",
        "config",
        "quantization",
    ],
    "coreai_opt.common": ["CompressionType", "CoreMLExportError", "ExportBackend"],
    "coreai_opt.config": [
        "CompressionConfig",
        "CompressionSpec",
        "CompressionType",
        "ModuleCompressionConfig",
        "OpCompressionConfig",
        "WeightOnlyModuleValidationMixin",
        "WeightOnlyOpValidationMixin",
        "spec",
    ],
    "coreai_opt.config.compression_config": [
        "CompressionConfig",
        "ModuleCompressionConfig",
        "OpCompressionConfig",
        "WeightOnlyModuleValidationMixin",
        "WeightOnlyOpValidationMixin",
    ],
    "coreai_opt.config.spec": [
        "CompressionComponentFactoryBase",
        "CompressionSimulatorBase",
        "CompressionSpec",
        "CompressionTargetTensor",
        "CompressionType",
        "base",
        "compression_simulator",
        "factory",
    ],
    "coreai_opt.config.spec.base": ["CompressionSpec", "CompressionType"],
    "coreai_opt.config.spec.compression_simulator": ["CompressionSimulatorBase"],
    "coreai_opt.config.spec.factory": [
        "CompressionComponentFactoryBase",
        "CompressionTargetTensor",
    ],
    "coreai_opt.quantization": [
        "ExecutionMode",
        "ModuleQuantizerConfig",
        "QuantizationSpec",
        "Quantizer",
        "QuantizerConfig",
        "config",
        "fake_quantize",
        "qparams_calculator",
        "range_calculator",
        "spec",
    ],
    "coreai_opt.quantization.config": [
        "ExecutionMode",
        "ModuleQuantizerConfig",
        "OpQuantizerConfig",
        "QATSchedule",
        "QuantizerConfig",
    ],
    "coreai_opt.quantization.config.quantization_config": [
        "ExecutionMode",
        "ModuleQuantizerConfig",
        "OpQuantizerConfig",
        "QATSchedule",
        "QuantizerConfig",
        "_QUANTIZATION_CONFIG",
        "_QUANTIZATION_SPEC",
    ],
    "coreai_opt.quantization.config._presets": [
        "_ModuleQuantizerConfigPresets",
        "_QuantizerConfigPresets",
    ],
    "coreai_opt.quantization.spec": [
        "DynamicQParamsCalculator",
        "GlobalMinMaxQParamsCalculator",
        "MinMaxRangeCalculator",
        "MovingAverageQParamsCalculator",
        "PerBlockGranularity",
        "PerChannelGranularity",
        "PerTensorGranularity",
        "QParamsCalculatorBase",
        "QuantizationComponentFactory",
        "QuantizationFormulation",
        "QuantizationGranularity",
        "QuantizationScheme",
        "QuantizationSpec",
        "RangeCalculatorBase",
        "RunningRangeMixin",
        "StatefulQParamsCalculatorBase",
        "StatelessQParamsCalculatorBase",
        "StaticQParamsCalculator",
        "default_activation_quantization_spec",
        "default_weight_quantization_spec",
        "fp4_forward",
        "resolve_block_sizes",
        "errors",
        "factory",
        "fake_quantize",
        "granularity",
        "qformulation",
        "qparams_calculator",
        "qscheme",
        "range_calculator",
        "spec",
    ],
    "coreai_opt.quantization.spec.spec": [
        "QuantizationSpec",
        "default_activation_quantization_spec",
        "default_weight_quantization_spec",
    ],
    "coreai_opt.quantization.spec.factory": ["QuantizationComponentFactory"],
    "coreai_opt.quantization.spec.fake_quantize": [
        "FakeQuantizeImplBase",
        "_DefaultFakeQuantizeImpl",
        "fp4_forward",
    ],
    "coreai_opt.quantization.spec.granularity": [
        "PerBlockGranularity",
        "PerChannelGranularity",
        "PerTensorGranularity",
        "QuantizationGranularity",
        "resolve_block_sizes",
    ],
    "coreai_opt.quantization.spec.qparams_calculator": [
        "DynamicQParamsCalculator",
        "GlobalMinMaxQParamsCalculator",
        "MovingAverageQParamsCalculator",
        "QParamsCalculatorBase",
        "RunningRangeMixin",
        "StatefulQParamsCalculatorBase",
        "StatelessQParamsCalculatorBase",
        "StaticQParamsCalculator",
        "_DefaultQParamsCalculator",
    ],
    "coreai_opt.quantization.spec.range_calculator": [
        "MinMaxRangeCalculator",
        "RangeCalculatorBase",
    ],
    "coreai_opt.quantization.spec.qscheme": ["QuantizationScheme"],
    "coreai_opt.quantization.spec.qformulation": ["QuantizationFormulation"],
    "coreai_opt.quantization.spec.errors": ["_BlockSizeMismatchError"],
}

CASES = [(module, name) for module, names in IMPORTS.items() for name in names]

PUBLIC_ALL: dict[str, set[str]] = {
    "coreai_opt": {
        "CoreMLExportError",
        "DependencyVersionWarning",
        "ExportBackend",
        "UntestedTorchVersionWarning",
        "__version__",
    },
    "coreai_opt.config": {
        "CompressionConfig",
        "CompressionSpec",
        "CompressionType",
        "ModuleCompressionConfig",
        "OpCompressionConfig",
        "WeightOnlyModuleValidationMixin",
        "WeightOnlyOpValidationMixin",
    },
    "coreai_opt.config.spec": {
        "CompressionComponentFactoryBase",
        "CompressionSimulatorBase",
        "CompressionSpec",
        "CompressionTargetTensor",
        "CompressionType",
    },
    "coreai_opt.quantization": {
        "ExecutionMode",
        "InvalidExecutionModeError",
        "KVCacheQuantConfig",
        "ModuleQuantizerConfig",
        "QuantizationSpec",
        "Quantizer",
        "QuantizerConfig",
    },
    "coreai_opt.quantization.config": {
        "ExecutionMode",
        "InvalidExecutionModeError",
        "KVCacheQuantConfig",
        "ModuleQuantizerConfig",
        "OpQuantizerConfig",
        "QATSchedule",
        "QuantizerConfig",
    },
    "coreai_opt.quantization.spec.fake_quantize": {"FakeQuantizeImplBase"},
    "coreai_opt.quantization.spec.qformulation": {"QuantizationFormulation"},
}
"""``__all__`` of the public modules, as behaviour.md §1 (+ §12 additions) lists them."""


@pytest.mark.parametrize(("module", "name"), CASES, ids=[f"{m}:{n}" for m, n in CASES])
def test_from_module_import_name(module: str, name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {module} import {name}", namespace)
    assert namespace[name] is getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_import_module(module: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"import {module}", namespace)
    assert importlib.import_module(module).__name__ == module


@pytest.mark.parametrize("module", sorted(PUBLIC_ALL))
def test_public_all(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == PUBLIC_ALL[module]
    namespace: dict[str, object] = {}
    exec(f"from {module} import *", namespace)
    assert PUBLIC_ALL[module] <= set(namespace)


@pytest.mark.parametrize(
    "module",
    [m for m in sorted(IMPORTS) if m.startswith("coreai_opt.quantization.spec")]
    + ["coreai_opt.config.spec", "coreai_opt.common"],
)
def test_every_name_in_all_resolves(module: str) -> None:
    mod = importlib.import_module(module)
    for name in getattr(mod, "__all__", []):
        assert getattr(mod, name) is not None, name


def _same_object(name: str) -> set[int]:
    return {
        id(getattr(importlib.import_module(module), name))
        for module, names in IMPORTS.items()
        if name in names
    }


@pytest.mark.parametrize(
    "name",
    sorted({n for names in IMPORTS.values() for n in names if n[0].isupper() or n[0] == "_"}),
)
def test_one_object_under_every_path(name: str) -> None:
    assert len(_same_object(name)) == 1


def test_reference_snippets_run_unchanged() -> None:
    """Lines as the reference's docs and tests write them."""
    from coreai_opt.config.spec.factory import CompressionTargetTensor
    from coreai_opt.quantization import QuantizationSpec
    from coreai_opt.quantization.spec import PerBlockGranularity, QuantizationScheme
    from coreai_opt.quantization.spec.factory import QuantizationComponentFactory
    from coreai_opt.quantization.spec.fake_quantize import _DefaultFakeQuantizeImpl

    spec = QuantizationSpec(
        dtype="int4",
        qscheme=QuantizationScheme.SYMMETRIC,
        granularity=PerBlockGranularity(axis=1, block_size=4),
        fake_quantize_cls="default",
    )
    fq = QuantizationComponentFactory.create_fake_quantizer(
        spec, quantization_target=CompressionTargetTensor.WEIGHT
    )
    assert isinstance(fq, _DefaultFakeQuantizeImpl)
    assert spec.fake_quantize_cls is _DefaultFakeQuantizeImpl


def test_factory_base_declares_both_constructors() -> None:
    """The reference's factory base declares construct and construct_partial (abstract)."""
    from coreai_opt.config.spec.factory import CompressionComponentFactoryBase
    from coreai_opt.quantization.spec.factory import QuantizationComponentFactory

    assert CompressionComponentFactoryBase.__abstractmethods__ == {"construct", "construct_partial"}
    assert issubclass(QuantizationComponentFactory, CompressionComponentFactoryBase)
    assert QuantizationComponentFactory.construct_partial(None, "weight") is None


def test_the_version_is_kept_in_one_place() -> None:
    """The installed distribution reports the package's own __version__ (pyproject.toml
    reads coreai_opt/_version.py), the coreai-opt release whose API this implements."""
    import importlib.metadata

    import coreai_opt

    assert coreai_opt.__version__ == "0.3.0"
    assert importlib.metadata.version("coreai_opt") == coreai_opt.__version__
