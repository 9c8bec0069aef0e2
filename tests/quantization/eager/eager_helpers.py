"""Shared helpers of the eager-mode tests: preparing, listing fake-quantizers, and turning the
oracle's predictions (``oracle.py``) into fake-quantizer paths and state_dict keys."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from oracle import OracleOp, oracle_fq_names, oracle_weight_fqs, record_ops
from torch import nn

from coreai_opt import _ops
from coreai_opt.quantization import ModuleQuantizerConfig, Quantizer, QuantizerConfig
from coreai_opt.quantization.spec import (
    QuantizationComponentFactory,
    default_activation_quantization_spec,
)
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase

__all__ = [
    "FQ_STATE_KEYS",
    "assert_clean_eager_state",
    "eager_config",
    "fq_dtypes",
    "fq_paths",
    "oracle_fq_paths",
    "oracle_state_dict_keys",
    "prepare_eager",
    "record_and_prepare",
    "run_json_script",
    "warnings_of",
]

FQ_STATE_KEYS: tuple[str, ...] = tuple(
    QuantizationComponentFactory.create_fake_quantizer(
        default_activation_quantization_spec(), "activation"
    ).state_dict()
)
"""state_dict keys of one default fake-quantizer (relative to the fake-quantizer)."""


def eager_config(
    global_config: ModuleQuantizerConfig | str | None = "default", **kwargs: Any
) -> QuantizerConfig:
    """A ``QuantizerConfig`` in eager mode (``global_config="default"``: W8A8)."""
    if global_config == "default":
        return QuantizerConfig(execution_mode="eager", **kwargs)
    return QuantizerConfig(execution_mode="eager", global_config=global_config, **kwargs)


def prepare_eager(
    model: nn.Module, inputs: tuple[Any, ...], config: QuantizerConfig | None = None
) -> tuple[Quantizer, nn.Module]:
    """``Quantizer(model, config).prepare(inputs)`` in eager mode; returns both."""
    quantizer = Quantizer(model, config if config is not None else eager_config())
    prepared = quantizer.prepare(inputs)
    assert prepared is model, "eager prepare returns the model itself"
    return quantizer, prepared


def record_and_prepare(
    model: nn.Module,
    inputs: tuple[Any, ...],
    config: QuantizerConfig | None = None,
) -> tuple[list[OracleOp], Quantizer, nn.Module, list[str]]:
    """Record the float model with the oracle, then prepare it (the float state_dict keys
    are taken before); returns (oracle ops, quantizer, prepared model, float keys)."""
    float_keys = list(model.state_dict())
    ops = record_ops(copy.deepcopy(model), inputs)
    quantizer, prepared = prepare_eager(model, inputs, config)
    return ops, quantizer, prepared, float_keys


def fq_paths(model: nn.Module) -> set[str]:
    """Qualified names of every fake-quantizer of *model* (activation submodules and
    weight parametrizations; a shared one under its first name)."""
    return {n for n, m in model.named_modules() if isinstance(m, FakeQuantizeImplBase)}


def fq_dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    """Fake-quantizer path → its quantized dtype."""
    return {
        n: m.dtype  # type: ignore[attr-defined]
        for n, m in model.named_modules()
        if isinstance(m, FakeQuantizeImplBase)
    }


def _weight_fq_path(fqn: str) -> str:
    module, _, name = fqn.rpartition(".")
    return f"{module}.parametrizations.{name}.0" if module else f"parametrizations.{name}.0"


def oracle_fq_paths(
    ops: Iterable[OracleOp], extra_op_types: Iterable[str] | None = None
) -> set[str]:
    """The fake-quantizer paths the oracle predicts for the default W8A8 config."""
    ops = list(ops)
    paths = {
        f"{path}.{name}" if path else name
        for path, names in oracle_fq_names(ops, extra_op_types).items()
        for name in names
    }
    return paths | {_weight_fq_path(w) for w in oracle_weight_fqs(ops, extra_op_types)}


def oracle_state_dict_keys(
    float_keys: Iterable[str],
    ops: Iterable[OracleOp],
    extra_op_types: Iterable[str] | None = None,
) -> set[str]:
    """The prepared model's state_dict keys the oracle predicts: the float keys with each
    quantized weight moved to ``<mod>.parametrizations.<name>.original``, plus the state of
    every predicted fake-quantizer."""
    ops = list(ops)
    weights = set(oracle_weight_fqs(ops, extra_op_types))
    keys = {
        _weight_fq_path(k)[: -len(".0")] + ".original" if k in weights else k for k in float_keys
    }
    for path in oracle_fq_paths(ops, extra_op_types):
        keys |= {f"{path}.{k}" for k in FQ_STATE_KEYS}
    return keys


def assert_clean_eager_state() -> None:
    """No interception scope or module frame is left open on this thread and the dispatch
    key's TLS bits are back to their defaults (not included, excluded)."""
    assert _ops.eager_scope_depth() == 0
    assert _ops.eager_frame_depth() == 0
    assert _ops.eager_key_state() == (False, True)


@contextmanager
def warnings_of(category: type[Warning] = UserWarning) -> Iterator[list[str]]:
    """Collect the messages of every *category* warning raised inside the block."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    messages.extend(str(w.message) for w in caught if issubclass(w.category, category))


REPO = Path(__file__).resolve().parents[3]


def run_json_script(script: str, timeout: float) -> Any:
    """Run *script* in a fresh Python process from the repository root (it must exit 0) and
    return the JSON its last line of output prints."""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])
