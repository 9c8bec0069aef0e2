"""The demo's main loop: train the float models, quantize each with every config, measure.

For each training seed the float CNN and transformer are trained from scratch; each
config then quantizes a deep copy of that float model in each execution mode (eager mode
prepares the copy in place, graph mode exports it), runs calibration / QAT / nothing, and
is evaluated on the held-out digits. A row of the results table is one (model, config,
mode) and aggregates the seeds (mean ± sample standard deviation). Agreement is the
fraction of test images whose prediction equals the float model's (same seed).

After the timed evaluation a deep copy of each prepared model is finalized to Core AI
(``quantizer.finalize(backend=ExportBackend.CoreAI)``, :mod:`coreai_opt.demo.finalized`):
its stored bytes become :attr:`RunResult.finalized_bytes` and its predictions on the test
set are compared with the prepared model's (:attr:`RunResult.finalized_agreement`). This
is not part of any timed column. A config that finalize refuses keeps its row; its
:attr:`RunResult.finalize_error` says why and the tables show "n/a" with a footnote.

A (model, config, mode) run that raises does not stop the demo (unless
:attr:`DemoSettings.fail_fast`): its row keeps the error (:attr:`DemoRow.error`), the
tables show it as failed and list the error under the table.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from rich.console import Console
from torch import nn

from coreai_opt.demo.configs import DEMO_CONFIGS, MODES, DemoConfig, Procedure
from coreai_opt.demo.data import DigitsData, batches, load_data
from coreai_opt.demo.finalized import finalize_and_compare, state_bytes
from coreai_opt.demo.models import SmallCNN, SmallTransformer
from coreai_opt.demo.train import calibrate, predict, train_float, train_qat
from coreai_opt.demo.weight_bytes import weight_bytes
from coreai_opt.inspection.sensitivity import SensitivityResult, layer_sensitivity
from coreai_opt.inspection.sensitivity import prepare_counting_drops as count_drops
from coreai_opt.quantization import Quantizer
from coreai_opt.quantization._lifecycle import fake_quantizers
from coreai_opt.quantization.config import ExecutionMode

__all__ = [
    "FINALIZE_REFUSALS",
    "MODELS",
    "DemoReport",
    "DemoRow",
    "DemoSettings",
    "ModelSpec",
    "RunResult",
    "run_demo",
]

_FQ_LOGGER = "coreai_opt.quantization.spec.fake_quantize"


@dataclass(frozen=True)
class ModelSpec:
    """A demo model: its constructor and float training recipe."""

    key: str
    label: str
    build: Callable[[], nn.Module]
    epochs: int
    lr: float


MODELS: dict[str, ModelSpec] = {
    "cnn": ModelSpec("cnn", "CNN", SmallCNN, epochs=15, lr=3e-3),
    "transformer": ModelSpec("transformer", "Transformer", SmallTransformer, epochs=30, lr=2e-3),
}
"""The demo models by key."""


@dataclass(frozen=True)
class DemoSettings:
    """How much the demo runs.

    Attributes:
        seeds: training seeds; each trains the float models anew and quantizes them.
        models: keys of :data:`MODELS`.
        configs: keys of :data:`~coreai_opt.demo.configs.DEMO_CONFIGS`.
        modes: execution modes every config runs in (``"eager"``, ``"graph"``).
        epoch_scale: multiplies every model's float training epochs (at least 1 epoch).
        qat_epochs: QAT epochs of the QAT rows.
        qat_lr: Adam learning rate of QAT.
        batch_size: training / QAT / calibration batch size.
        calibration_batches: batches of training images for calibration.
        n_train: use only the first *n_train* training images (None: all 1437).
        n_test: use only the first *n_test* test images (None: all 360).
        sensitivity: run the per-layer sensitivity analysis (W4A8 on the CNN).
        sensitivity_config: the config key for the sensitivity analysis.
        keep_float_threshold: agreement drop (fraction) above which a layer is listed to
            keep in float.
        threads: ``torch.set_num_threads`` during the run, restored afterwards (None: leave
            it). One thread is the default: these models are too small to gain from
            intra-op parallelism, and on a busy machine OpenMP threads that wait for a core
            make a run many times slower.
        fail_fast: re-raise the first error of a quantized run instead of recording it in
            its row (a finalize refusal, :data:`FINALIZE_REFUSALS`, is still recorded as
            "n/a").
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = ("cnn", "transformer")
    configs: tuple[str, ...] = tuple(c.key for c in DEMO_CONFIGS)
    modes: tuple[str, ...] = MODES
    epoch_scale: float = 1.0
    qat_epochs: int = 2
    qat_lr: float = 1e-4
    batch_size: int = 64
    calibration_batches: int = 8
    n_train: int | None = None
    n_test: int | None = None
    sensitivity: bool = True
    sensitivity_config: str = "w4a8_qat"
    keep_float_threshold: float = 0.005
    threads: int | None = 1
    fail_fast: bool = False

    @classmethod
    def quick(cls) -> DemoSettings:
        """A small run (one seed, shorter training, one QAT epoch) for tests and ``--quick``."""
        return cls(seeds=(0,), epoch_scale=0.5, qat_epochs=1, calibration_batches=4)

    def model_epochs(self, spec: ModelSpec) -> int:
        """Float training epochs of *spec* under :attr:`epoch_scale`."""
        return max(1, round(spec.epochs * self.epoch_scale))


@dataclass(frozen=True)
class RunResult:
    """One (model, config, seed) run.

    Attributes:
        seed: the training seed.
        accuracy: test accuracy.
        agreement: fraction of test predictions equal to the float model's.
        weight_bytes: packed weight storage (see :mod:`coreai_opt.demo.weight_bytes`).
        fake_quantizers: fake-quantizers in the prepared model.
        dropped: fake-quantizers prepare removed (block size does not fit).
        prepare_s: seconds in ``prepare`` (0 for float).
        fit_s: seconds of calibration or QAT (0 when neither runs; float training time for
            the float row).
        eval_s: seconds of the test-set forward passes.
        finalized_bytes: bytes the Core AI-finalized copy stores
            (:func:`~coreai_opt.demo.finalized.state_bytes`; the float row: the float
            model's); NaN when finalize raised.
        finalized_agreement: fraction of test predictions of the finalized copy equal to
            the prepared model's (1 for the float row); NaN when finalize raised.
        finalized_max_abs_diff: largest absolute difference between the finalized copy's
            and the prepared model's logits (0 for the float row; NaN when not finalized).
        finalize_s: seconds of the deep copy, finalize and the finalized model's test-set
            pass (in no timed column of the table).
        finalize_error: ``"Type: message"`` when finalize raised, else empty.
    """

    seed: int
    accuracy: float
    agreement: float
    weight_bytes: float
    fake_quantizers: int
    dropped: int
    prepare_s: float
    fit_s: float
    eval_s: float
    finalized_bytes: float = math.nan
    finalized_agreement: float = math.nan
    finalized_max_abs_diff: float = math.nan
    finalize_s: float = 0.0
    finalize_error: str = ""


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _sd(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class DemoRow:
    """One row of the results table: a (model, config, mode) over all seeds.

    Attributes:
        model: the model label.
        config: the config label (``"float"`` for the unquantized model).
        key: the config key (``"float"`` for the unquantized model).
        mode: the execution mode (``"eager"`` or ``"graph"``; ``"-"`` for float).
        procedure: what ran after prepare.
        description: what the config quantizes.
        runs: one :class:`RunResult` per seed that ran through.
        error: the first error of a seed that raised (``"seed N: Type: message"``), empty
            when every seed ran.
    """

    model: str
    config: str
    key: str
    mode: str
    procedure: str
    description: str
    runs: tuple[RunResult, ...]
    error: str = ""

    def _values(self, name: str) -> list[float]:
        return [float(getattr(r, name)) for r in self.runs]

    def mean(self, name: str) -> float:
        """Mean over the seeds of a :class:`RunResult` field."""
        return _mean(self._values(name))

    def sd(self, name: str) -> float:
        """Sample standard deviation over the seeds of a :class:`RunResult` field (0 for one)."""
        return _sd(self._values(name))

    @property
    def finalize_error(self) -> str:
        """Why the first seed whose finalize raised was not finalized (``"seed N: Type:
        message"``); empty when every run was finalized."""
        for run in self.runs:
            if run.finalize_error:
                return f"seed {run.seed}: {run.finalize_error}"
        return ""


@dataclass(frozen=True)
class DemoReport:
    """Everything the demo measured.

    Attributes:
        rows: the results table, models in order, float first.
        settings: the settings of the run.
        sensitivity: the per-layer analysis (None when not run).
        sensitivity_model: the label of the model it ran on.
        sensitivity_config: the label of its config.
        keep_float: layers the analysis suggests leaving in float.
        keep_float_rule: how they were chosen.
        seconds: wall time of the whole run.
        environment: torch version, thread count, training / test set sizes.
        files: files written by :func:`coreai_opt.demo.report.write_outputs`.
    """

    rows: tuple[DemoRow, ...]
    settings: DemoSettings
    sensitivity: SensitivityResult | None = None
    sensitivity_model: str = ""
    sensitivity_config: str = ""
    keep_float: tuple[str, ...] = ()
    keep_float_rule: str = ""
    seconds: float = 0.0
    environment: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()

    @property
    def failures(self) -> tuple[DemoRow, ...]:
        """The rows whose runs raised (:attr:`DemoRow.error` set), in table order."""
        return tuple(row for row in self.rows if row.error)

    @property
    def not_finalized(self) -> tuple[DemoRow, ...]:
        """The rows that ran but whose finalize to Core AI raised
        (:attr:`DemoRow.finalize_error` set), in table order."""
        return tuple(row for row in self.rows if not row.error and row.finalize_error)

    def row(self, model: str, key: str, mode: str = "graph") -> DemoRow:
        """The row of model label or key *model*, config key *key* and execution *mode*
        (ignored for ``key="float"``)."""
        label = MODELS[model].label if model in MODELS else model
        for row in self.rows:
            if row.model == label and row.key == key and (key == "float" or row.mode == mode):
                return row
        raise KeyError(f"no row for model {model!r}, config {key!r} and mode {mode!r}")


@contextmanager
def _quiet_block_size_log() -> Iterator[None]:
    """Mute the per-FQ log line of a block-size mismatch (the table counts the drops)."""
    logger = logging.getLogger(_FQ_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


BATCH_DYNAMIC = ({0: torch.export.Dim.DYNAMIC},)
"""``dynamic_shapes`` of the demo models' one input: any batch size."""


def prepare_counting_drops(
    quantizer: Quantizer, example_inputs: tuple[Any, ...]
) -> tuple[nn.Module, int]:
    """``quantizer.prepare(example_inputs)`` and the number of fake-quantizers it removed
    because their block size does not fit.

    Graph mode exports with a dynamic batch dimension; eager mode takes no
    ``dynamic_shapes`` (the model stays a module that runs at any batch size).
    """
    graph = quantizer.config.execution_mode is ExecutionMode.GRAPH
    with _quiet_block_size_log():
        return count_drops(quantizer, example_inputs, BATCH_DYNAMIC if graph else None)


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(dim=-1) == y).double().mean().item()


FINALIZE_REFUSALS: tuple[type[Exception], ...] = (NotImplementedError, ValueError)
"""What finalize raises for a config Core AI cannot express (dynamic fake-quantizers;
``FinalizeNodeError`` for FP4 / per-block activations and FP4 weights not in blocks of
32): shown as "n/a" even with :attr:`DemoSettings.fail_fast`, which re-raises anything
else."""


def _finalized_fields(
    quantizer: Quantizer,
    prepared: nn.Module,
    data: DigitsData,
    logits: torch.Tensor,
    fail_fast: bool,
) -> dict[str, Any]:
    """The ``finalized_*`` / ``finalize_*`` fields of :class:`RunResult` for *prepared*."""
    start = time.perf_counter()
    try:
        finalized = finalize_and_compare(quantizer, prepared, data.x_test, logits)
    except Exception as error:
        if fail_fast and not isinstance(error, FINALIZE_REFUSALS):
            raise
        message = " ".join(f"{type(error).__name__}: {error}".split())
        return {"finalize_s": time.perf_counter() - start, "finalize_error": message}
    return {
        "finalized_bytes": float(finalized.bytes.total),
        "finalized_agreement": finalized.agreement,
        "finalized_max_abs_diff": finalized.max_abs_diff,
        "finalize_s": time.perf_counter() - start,
    }


def _calibration_batches(
    data: DigitsData, settings: DemoSettings, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first :attr:`DemoSettings.calibration_batches` shuffled training batches of *seed*."""
    generator = torch.Generator().manual_seed(1_000 + seed)
    calib = list(batches(data.x_train, data.y_train, settings.batch_size, generator=generator))
    return calib[: settings.calibration_batches]


def _quantize_once(
    float_model: nn.Module,
    float_logits: torch.Tensor,
    cfg: DemoConfig,
    mode: str,
    data: DigitsData,
    settings: DemoSettings,
    seed: int,
    console: Console,
    progress: bool,
    tag: str,
) -> RunResult:
    calib = _calibration_batches(data, settings, seed)
    per_epoch = (data.x_train.shape[0] + settings.batch_size - 1) // settings.batch_size
    config = cfg.quantizer_config(settings.qat_epochs * per_epoch, mode)
    # eager mode prepares the model it is given in place: always a copy of the float model
    quantizer = Quantizer(copy.deepcopy(float_model).eval(), config)
    start = time.perf_counter()
    prepared, dropped = prepare_counting_drops(quantizer, (calib[0][0],))
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    if cfg.procedure is Procedure.CALIBRATE:
        calibrate(
            prepared,
            quantizer,
            (x for x, _ in calib),
            len(calib),
            console=console,
            progress=progress,
            description=f"{tag} calibration",
        )
    elif cfg.procedure is Procedure.QAT:
        train_qat(
            prepared,
            float_model,
            quantizer,
            data,
            epochs=settings.qat_epochs,
            lr=settings.qat_lr,
            batch_size=settings.batch_size,
            seed=seed,
            console=console,
            progress=progress,
            description=f"{tag} QAT",
        )
    fit_s = time.perf_counter() - start if cfg.procedure is not Procedure.WEIGHTS_ONLY else 0.0
    prepared.eval()
    start = time.perf_counter()
    logits = predict(prepared, data.x_test)
    eval_s = time.perf_counter() - start
    finalized = _finalized_fields(quantizer, prepared, data, logits, settings.fail_fast)
    return RunResult(
        seed=seed,
        accuracy=_accuracy(logits, data.y_test),
        agreement=(logits.argmax(-1) == float_logits.argmax(-1)).double().mean().item(),
        weight_bytes=weight_bytes(prepared).total_bytes,
        fake_quantizers=len(fake_quantizers(prepared)),
        dropped=dropped,
        prepare_s=prepare_s,
        fit_s=fit_s,
        eval_s=eval_s,
        **finalized,
    )


def run_demo(
    settings: DemoSettings | None = None,
    *,
    console: Console | None = None,
    progress: bool | None = None,
    data: DigitsData | None = None,
) -> DemoReport:
    """Train, quantize and evaluate every (model, config, seed); returns the report.

    Prints nothing but progress bars (shown when *progress* is True, or when it is None
    and *console* is a terminal); :mod:`coreai_opt.demo.report` renders the result.
    """
    settings = settings or DemoSettings()
    console = console or Console()
    show = console.is_terminal if progress is None else bool(progress)
    unknown = [k for k in settings.models if k not in MODELS]
    configs = {c.key: c for c in DEMO_CONFIGS}
    unknown += [k for k in settings.configs if k not in configs]
    unknown += [m for m in settings.modes if m not in MODES]
    if unknown:
        raise ValueError(
            f"unknown model / config keys or modes {unknown}; models: {sorted(MODELS)}, "
            f"configs: {sorted(configs)}, modes: {list(MODES)}"
        )
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        return _run(settings, configs, console, show, data)
    finally:
        torch.set_num_threads(threads)


def _run(
    settings: DemoSettings,
    configs: dict[str, DemoConfig],
    console: Console,
    show: bool,
    data: DigitsData | None,
) -> DemoReport:
    started = time.perf_counter()
    data = data or load_data()
    data = data.subset(settings.n_train, settings.n_test)
    runs: dict[tuple[str, str, str], list[RunResult]] = {}
    errors: dict[tuple[str, str, str], str] = {}
    sensitivity_model: nn.Module | None = None
    for seed in settings.seeds:
        for model_key in settings.models:
            spec = MODELS[model_key]
            torch.manual_seed(seed)
            model = spec.build()
            train_s = train_float(
                model,
                data,
                epochs=settings.model_epochs(spec),
                lr=spec.lr,
                batch_size=settings.batch_size,
                seed=seed,
                console=console,
                progress=show,
                description=f"{spec.label} seed {seed} training",
            )
            start = time.perf_counter()
            float_logits = predict(model, data.x_test)
            eval_s = time.perf_counter() - start
            runs.setdefault((model_key, "float", "-"), []).append(
                RunResult(
                    seed=seed,
                    accuracy=_accuracy(float_logits, data.y_test),
                    agreement=1.0,
                    weight_bytes=weight_bytes(model).total_bytes,
                    fake_quantizers=0,
                    dropped=0,
                    prepare_s=0.0,
                    fit_s=train_s,
                    eval_s=eval_s,
                    finalized_bytes=float(state_bytes(model).total),
                    finalized_agreement=1.0,
                    finalized_max_abs_diff=0.0,
                )
            )
            if model_key == "cnn" and sensitivity_model is None:
                sensitivity_model = model
            for key in settings.configs:
                for mode in settings.modes:
                    cfg = configs[key]
                    tag = f"{spec.label} {cfg.label} {mode} seed {seed}"
                    try:
                        result = _quantize_once(
                            model, float_logits, cfg, mode, data, settings, seed, console, show, tag
                        )
                    except Exception as error:
                        if settings.fail_fast:
                            raise
                        message = " ".join(f"{type(error).__name__}: {error}".split())
                        errors.setdefault((model_key, key, mode), f"seed {seed}: {message}")
                        continue
                    runs.setdefault((model_key, key, mode), []).append(result)

    rows = []
    for model_key in settings.models:
        label = MODELS[model_key].label
        rows.append(
            DemoRow(
                label,
                "float",
                "float",
                "-",
                "training",
                "float32, no quantization",
                tuple(runs[(model_key, "float", "-")]),
            )
        )
        for key in settings.configs:
            cfg = configs[key]
            for mode in settings.modes:
                rows.append(
                    DemoRow(
                        label,
                        cfg.label,
                        key,
                        mode,
                        cfg.procedure.value,
                        cfg.description,
                        tuple(runs.get((model_key, key, mode), ())),
                        errors.get((model_key, key, mode), ""),
                    )
                )

    report = DemoReport(rows=tuple(rows), settings=settings)
    if settings.sensitivity and sensitivity_model is not None:
        cfg = configs[settings.sensitivity_config]
        calib = _calibration_batches(data, settings, settings.seeds[0])
        result = layer_sensitivity(
            sensitivity_model,
            cfg.build(1),
            list(batches(data.x_test, data.y_test, 512)),
            calibration_data=[x for x, _ in calib],
            show=False,
            console=console,
            progress=show,
        )
        threshold = settings.keep_float_threshold
        keep = result.layers_to_keep_float(max_agreement_drop=threshold)
        rule = f"agreement drop above {100 * threshold:g} pp"
        if not keep and result.rows:
            keep = [result.worst(1, by="sqnr")[0].layer]
            rule = (
                f"no layer's agreement drop exceeds {100 * threshold:g} pp; the layer with "
                f"the lowest output SQNR"
            )
        report = replace(
            report,
            sensitivity=result,
            sensitivity_model=MODELS["cnn"].label,
            sensitivity_config=f"{cfg.label.removesuffix(' QAT')} (PTQ, calibrated)",
            keep_float=tuple(keep),
            keep_float_rule=rule,
        )
    environment = {
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "train images": str(data.x_train.shape[0]),
        "test images": str(data.x_test.shape[0]),
    }
    return replace(report, seconds=time.perf_counter() - started, environment=environment)
