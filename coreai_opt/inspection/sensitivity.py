"""``layer_sensitivity``: quantize one layer at a time and measure what each one costs.

For every layer (by default each Conv / ConvTranspose / Linear / Embedding module that
*config* quantizes) a fresh copy of the model is prepared with a config that quantizes
that module only: ``QuantizerConfig(global_config=None, module_name_configs={layer:
<the layer's effective module config>})`` in the config's execution mode (graph mode by
default; graph-mode patterns such as conv-bn-relu follow the conv's config, so the whole
block is quantized). The copy is calibrated on *calibration_data* and run over *data*;
its outputs are compared with the float model's:

* output SQNR in dB, ``10 log10(sum(y^2) / sum((y - y_q)^2))`` over all outputs (inf when
  the outputs are identical);
* agreement: the fraction of samples whose ``argmax`` over the last dimension equals the
  float model's, and the drop ``1 - agreement``;
* accuracy and its drop against the float model, when the batches carry targets.

The result (:class:`SensitivityResult`) renders as a ``rich`` table, as Markdown and as a
PNG bar chart (matplotlib, drawn on an Agg canvas without touching pyplot's global
backend).

Example::

    result = layer_sensitivity(
        model, QuantizerConfig.presets.w4a8(), test_batches,
        calibration_data=train_batches, chart_path="sensitivity.png",
    )
    keep_float = result.layers_to_keep_float(max_agreement_drop=0.01)
    config = QuantizerConfig.presets.w4a8().without(*keep_float)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table
from torch import nn

from coreai_opt.config._keys import type_fqn
from coreai_opt.quantization.config import ModuleQuantizerConfig, QuantizerConfig
from coreai_opt.quantization.config.resolution import build_module_config_dict

__all__ = ["DEFAULT_LAYER_TYPES", "LayerSensitivity", "SensitivityResult", "layer_sensitivity"]

DEFAULT_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.Embedding,
)
"""Module types analysed when ``layers`` is not given."""

_DROPPED = re.compile(r"removed (\d+) fake-quantizer\(s\) whose granularity block size")


@dataclass(frozen=True)
class LayerSensitivity:
    """The effect of quantizing one layer alone.

    Attributes:
        layer: the module's qualified name.
        module_type: its fully qualified class name.
        sqnr_db: output SQNR against the float model in dB (inf: identical outputs).
        agreement: fraction of samples whose prediction equals the float model's.
        agreement_drop: ``1 - agreement``.
        accuracy: accuracy of the model with this layer quantized (None without targets).
        accuracy_drop: float accuracy minus *accuracy* (None without targets).
        fake_quantizers: fake-quantizers in the prepared model.
        dropped_fake_quantizers: fake-quantizers prepare removed because a block did not
            fit the tensor.
        seconds: prepare + calibration + evaluation time.
    """

    layer: str
    module_type: str
    sqnr_db: float
    agreement: float
    agreement_drop: float
    accuracy: float | None
    accuracy_drop: float | None
    fake_quantizers: int
    dropped_fake_quantizers: int
    seconds: float


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.1f}"


@dataclass(frozen=True)
class SensitivityResult:
    """Per-layer sensitivities, in the order the layers were analysed.

    Attributes:
        rows: one :class:`LayerSensitivity` per layer.
        float_accuracy: accuracy of the float model (None without targets).
        num_samples: samples evaluated.
        execution_mode: the execution mode of the per-layer configs.
        chart_path: where the bar chart was written (None if it was not).
    """

    rows: tuple[LayerSensitivity, ...]
    float_accuracy: float | None
    num_samples: int
    execution_mode: str
    chart_path: Path | None = None

    def ranked(self, by: str = "agreement") -> list[LayerSensitivity]:
        """The rows, most sensitive first.

        ``by="agreement"``: largest agreement drop first, ties by lowest SQNR;
        ``by="sqnr"``: lowest SQNR first, ties by largest agreement drop.
        """
        if by == "agreement":
            return sorted(self.rows, key=lambda r: (-r.agreement_drop, r.sqnr_db))
        if by == "sqnr":
            return sorted(self.rows, key=lambda r: (r.sqnr_db, -r.agreement_drop))
        raise ValueError(f"by={by!r}; allowed: 'agreement', 'sqnr'")

    def worst(self, k: int = 1, by: str = "agreement") -> list[LayerSensitivity]:
        """The *k* most sensitive layers (see :meth:`ranked`)."""
        if k < 0:
            raise ValueError(f"k={k} must be >= 0")
        return self.ranked(by)[:k]

    def layers_to_keep_float(
        self, max_agreement_drop: float = 0.01, min_sqnr_db: float | None = None
    ) -> list[str]:
        """Layers to leave unquantized: agreement drop above *max_agreement_drop* (a
        fraction), or SQNR below *min_sqnr_db* when given; most sensitive first."""
        keep = []
        for row in self.ranked():
            low_sqnr = min_sqnr_db is not None and row.sqnr_db < min_sqnr_db
            if row.agreement_drop > max_agreement_drop or low_sqnr:
                keep.append(row.layer)
        return keep

    def _columns(self) -> list[str]:
        columns = ["layer", "type", "SQNR (dB)", "agreement %", "agreement drop (pp)"]
        if self.float_accuracy is not None:
            columns += ["accuracy %", "accuracy drop (pp)"]
        return [*columns, "FQs", "dropped", "seconds"]

    def _cells(self, row: LayerSensitivity) -> list[str]:
        cells = [
            row.layer,
            row.module_type.rsplit(".", 1)[-1],
            _db(row.sqnr_db),
            _pct(row.agreement),
            _pct(row.agreement_drop),
        ]
        if self.float_accuracy is not None:
            cells += [_pct(row.accuracy), _pct(row.accuracy_drop, signed=True)]
        return [
            *cells,
            str(row.fake_quantizers),
            str(row.dropped_fake_quantizers),
            f"{row.seconds:.2f}",
        ]

    def to_rich_table(self, title: str | None = None) -> Table:
        """The rows as a ``rich`` table (layers in analysis order)."""
        table = Table(title=title or "Layer sensitivity (one layer quantized at a time)")
        for index, column in enumerate(self._columns()):
            table.add_column(column, justify="left" if index < 2 else "right")
        for row in self.rows:
            table.add_row(*self._cells(row))
        return table

    def to_markdown(self) -> str:
        """The rows as a Markdown table."""
        columns = self._columns()
        lines = [
            "| " + " | ".join(columns) + " |",
            "| " + " | ".join("---" if i < 2 else "---:" for i in range(len(columns))) + " |",
        ]
        lines += ["| " + " | ".join(self._cells(row)) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def save_chart(self, path: str | os.PathLike[str], title: str | None = None) -> Path:
        """Write a PNG bar chart (SQNR and agreement / accuracy drop per layer) to *path*."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        names = [r.layer for r in self.rows]
        ys = list(range(len(names)))
        finite = [r.sqnr_db for r in self.rows if math.isfinite(r.sqnr_db)]
        cap = (max(finite) + 10.0) if finite else 60.0
        sqnr = [min(r.sqnr_db, cap) for r in self.rows]
        height = 1.2 + 0.45 * max(len(names), 1)
        fig = Figure(figsize=(10, height), layout="constrained")
        FigureCanvasAgg(fig)
        ax_sqnr, ax_drop = fig.subplots(1, 2, sharey=True)
        ax_sqnr.barh(ys, sqnr, color="tab:blue")
        ax_sqnr.set_yticks(ys, names)
        ax_sqnr.invert_yaxis()
        ax_sqnr.set_xlabel("output SQNR vs float (dB, higher is better)")
        for y, row, value in zip(ys, self.rows, sqnr, strict=True):
            ax_sqnr.text(value, y, f" {_db(row.sqnr_db)}", va="center", fontsize=8)
        width = 0.4 if self.float_accuracy is not None else 0.8
        agreement = [100 * r.agreement_drop for r in self.rows]
        ax_drop.barh(
            [y - width / 2 if self.float_accuracy is not None else y for y in ys],
            agreement,
            height=width,
            color="tab:orange",
            label="agreement drop",
        )
        if self.float_accuracy is not None:
            accuracy = [100 * (r.accuracy_drop or 0.0) for r in self.rows]
            ax_drop.barh(
                [y + width / 2 for y in ys],
                accuracy,
                height=width,
                color="tab:red",
                label="accuracy drop",
            )
        drops = agreement + [100 * (r.accuracy_drop or 0.0) for r in self.rows]
        span = max([1.0, *(abs(d) * 1.3 for d in drops)])
        ax_drop.set_xlim(-span, span)
        ax_drop.axvline(0.0, color="black", linewidth=0.8)
        ax_drop.set_xlabel("drop vs float (percentage points, lower is better)")
        ax_drop.legend(loc="upper right", fontsize=8)
        fig.suptitle(title or f"Per-layer sensitivity ({self.num_samples} samples)")
        fig.savefig(path, dpi=120)
        return path


def _split(batch: Any) -> tuple[tuple[Any, ...], torch.Tensor | None]:
    """``(inputs, target)`` of a batch: a tensor, or a pair ``(inputs, target)``."""
    if isinstance(batch, torch.Tensor):
        return (batch,), None
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, target = batch
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        return inputs, target
    raise TypeError(
        f"each batch must be an input tensor or a pair (inputs, target), got "
        f"{type(batch).__name__}"
        + (f" of length {len(batch)}" if hasattr(batch, "__len__") else "")
    )


@torch.no_grad()
def _outputs(model: nn.Module, batches: Sequence[tuple[tuple[Any, ...], Any]]) -> torch.Tensor:
    outs = []
    for inputs, _ in batches:
        out = model(*inputs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"layer_sensitivity needs a model returning one tensor, got {type(out).__name__}"
            )
        outs.append(out.detach().float())
    return torch.cat(outs)


def _sqnr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    ref = reference.double()
    noise = (ref - output.double()).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _default_layers(model: nn.Module, resolved: dict[str, Any]) -> list[str]:
    layers = []
    for name, module in model.named_modules():
        if not name or not isinstance(module, DEFAULT_LAYER_TYPES):
            continue
        entry = resolved.get(name)
        if entry is not None and not entry.config.is_disabled():
            layers.append(name)
    return layers


def _as_quantizer_config(config: QuantizerConfig | ModuleQuantizerConfig | None) -> QuantizerConfig:
    if config is None:
        return QuantizerConfig()
    if isinstance(config, ModuleQuantizerConfig):
        return QuantizerConfig(global_config=config)
    if isinstance(config, QuantizerConfig):
        return config
    raise TypeError(
        f"config must be a QuantizerConfig, a ModuleQuantizerConfig or None, got "
        f"{type(config).__name__}"
    )


def _batch_dynamic(example_inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """``dynamic_shapes`` marking dim 0 of every tensor input dynamic."""
    return tuple(
        {0: torch.export.Dim.DYNAMIC} if isinstance(x, torch.Tensor) and x.dim() > 0 else None
        for x in example_inputs
    )


def prepare_counting_drops(
    quantizer: Any, example_inputs: tuple[Any, ...], dynamic_shapes: Any = None
) -> tuple[nn.Module, int]:
    """``quantizer.prepare`` and the number of fake-quantizers it removed because their
    block size does not fit (prepare's ``UserWarning``; other warnings are re-emitted)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = quantizer.prepare(example_inputs, dynamic_shapes=dynamic_shapes)
    dropped = 0
    for item in caught:
        match = _DROPPED.search(str(item.message))
        if match:
            dropped += int(match.group(1))
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return prepared, dropped


def layer_sensitivity(
    model: nn.Module,
    config: QuantizerConfig | ModuleQuantizerConfig | None,
    data: Iterable[Any],
    *,
    layers: Sequence[str] | None = None,
    calibration_data: Iterable[Any] | None = None,
    calibrate: bool = True,
    dynamic_batch: bool = True,
    dynamic_shapes: Any = None,
    chart_path: str | os.PathLike[str] | None = None,
    show: bool = True,
    console: Console | None = None,
    progress: bool | None = None,
) -> SensitivityResult:
    """Quantize one layer of *model* at a time with *config* and measure each effect.

    Args:
        model: the float model (left unchanged; each layer is quantized on a deep copy).
            Its output must be one tensor; agreement and accuracy compare ``argmax`` over
            the last dimension (classification logits).
        config: the whole-model config; each layer is quantized with its effective module
            config under it. A ``ModuleQuantizerConfig`` is used as the global config;
            None means ``QuantizerConfig()`` (W8A8).
        data: evaluation batches, each an input tensor or a pair ``(inputs, target)``
            (*inputs* a tensor or a tuple of positional inputs, *target* class indices or
            None). Read once into a list. The first batch is the example input of
            ``prepare``.
        layers: module names to analyse (default: every Conv / ConvTranspose / Linear /
            Embedding module that *config* quantizes), in the order given.
        calibration_data: batches for ``calibration_mode`` (default: *data*).
        calibrate: run the calibration pass (needed for activation quantization).
        dynamic_batch: export with dim 0 of every tensor input dynamic (batches of any
            size; ignored when *dynamic_shapes* is given).
        dynamic_shapes: passed to ``Quantizer.prepare`` as is.
        chart_path: write the PNG bar chart there (directories are created).
        show: print the rich table to *console*.
        console: the rich console (default: a new ``Console()``).
        progress: show a progress bar over the layers (None: when *console* is a terminal).

    Returns:
        A :class:`SensitivityResult`.

    Raises:
        TypeError: a bad *config*, batch or model output.
        ValueError: *data* is empty, or a name in *layers* is not a module of *model* or
            is not quantized by *config*.
    """
    from coreai_opt.quantization import Quantizer
    from coreai_opt.quantization._lifecycle import fake_quantizers

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    full = _as_quantizer_config(config)
    eval_batches = [_split(b) for b in data]
    if not eval_batches:
        raise ValueError("data is empty: layer_sensitivity needs at least one batch")
    calib_batches = (
        eval_batches if calibration_data is None else [_split(b) for b in calibration_data]
    )
    console = console or Console()
    show_progress = console.is_terminal if progress is None else bool(progress)

    reference_model = copy.deepcopy(model).eval()
    reference = _outputs(reference_model, eval_batches)
    predictions = reference.argmax(dim=-1)
    targets = [t for _, t in eval_batches]
    target = (
        torch.cat([t.reshape(-1) for t in targets]) if all(t is not None for t in targets) else None
    )
    float_accuracy = None
    if target is not None:
        float_accuracy = (predictions.reshape(-1) == target).double().mean().item()

    resolved = build_module_config_dict(full, model)
    modules = dict(model.named_modules())
    if layers is None:
        layers = _default_layers(model, resolved)
    else:
        layers = list(layers)
        for name in layers:
            if name not in modules or not name:
                raise ValueError(f"layer {name!r} is not a submodule of the model")
            if resolved[name].config is None or resolved[name].config.is_disabled():
                raise ValueError(f"layer {name!r} is not quantized by the config")

    rows = []
    example_inputs = eval_batches[0][0]
    if dynamic_shapes is None and dynamic_batch:
        dynamic_shapes = _batch_dynamic(example_inputs)
    for name in track(
        layers,
        description="layer sensitivity",
        console=console,
        disable=not show_progress,
        transient=True,
    ):
        start = time.perf_counter()
        layer_config = QuantizerConfig(
            global_config=None,
            module_name_configs={re.escape(name): copy.deepcopy(resolved[name].config)},
            execution_mode=full.execution_mode,
        )
        quantizer = Quantizer(copy.deepcopy(model).eval(), layer_config)
        prepared, dropped = prepare_counting_drops(quantizer, example_inputs, dynamic_shapes)
        if calibrate:
            with quantizer.calibration_mode(), torch.no_grad():
                for inputs, _ in calib_batches:
                    prepared(*inputs)
        prepared.eval()
        output = _outputs(prepared, eval_batches)
        output_predictions = output.argmax(dim=-1)
        agreement = (output_predictions == predictions).double().mean().item()
        accuracy = None
        if target is not None:
            accuracy = (output_predictions.reshape(-1) == target).double().mean().item()
        rows.append(
            LayerSensitivity(
                layer=name,
                module_type=type_fqn(type(modules[name])),
                sqnr_db=_sqnr_db(reference, output),
                agreement=agreement,
                agreement_drop=1.0 - agreement,
                accuracy=accuracy,
                accuracy_drop=None if accuracy is None else float_accuracy - accuracy,  # type: ignore[operator]
                fake_quantizers=len(fake_quantizers(prepared)),
                dropped_fake_quantizers=dropped,
                seconds=time.perf_counter() - start,
            )
        )
    result = SensitivityResult(
        rows=tuple(rows),
        float_accuracy=float_accuracy,
        num_samples=int(reference.shape[0]),
        execution_mode=str(full.execution_mode.value),
    )
    if chart_path is not None:
        result = dataclasses.replace(result, chart_path=result.save_chart(chart_path))
    if show:
        console.print(result.to_rich_table())
    return result
