"""Training, calibration, QAT and evaluation loops of the demo (rich progress bars)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import track
from torch import nn

from coreai_opt.demo.data import DigitsData, batches

__all__ = [
    "calibrate",
    "distillation_loss",
    "predict",
    "progress_iter",
    "train_float",
    "train_qat",
]

T = TypeVar("T")


def progress_iter(
    items: Iterable[T], description: str, total: int | None, console: Console | None, show: bool
) -> Iterator[T]:
    """*items* with a transient rich progress bar on *console* when *show* is True."""
    if not show:
        yield from items
        return
    yield from track(items, description=description, total=total, console=console, transient=True)


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def _epoch_batches(
    data: DigitsData, epochs: int, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled training batches, *epochs* times over."""
    for _ in range(epochs):
        yield from batches(data.x_train, data.y_train, batch_size, generator=generator)


def train_float(
    model: nn.Module,
    data: DigitsData,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    console: Console | None = None,
    progress: bool = False,
    description: str = "training",
) -> float:
    """Train *model* with AdamW and a one-cycle schedule; returns the seconds it took.

    The model is left in eval mode. Shuffling uses a generator seeded with *seed*.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    per_epoch = _steps_per_epoch(data.x_train.shape[0], batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(1, epochs * per_epoch)
    )
    start = time.perf_counter()
    model.train()

    steps = _epoch_batches(data, epochs, batch_size, generator)
    for x, y in progress_iter(steps, description, epochs * per_epoch, console, progress):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval()
    return time.perf_counter() - start


def distillation_loss(
    logits: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """Half cross-entropy on the labels, half KL divergence to the float model's logits."""
    kd = F.kl_div(
        F.log_softmax(logits / temperature, dim=-1),
        F.log_softmax(teacher / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return 0.5 * F.cross_entropy(logits, target) + 0.5 * temperature**2 * kd


def train_qat(
    prepared: nn.Module,
    teacher: nn.Module,
    quantizer: Any,
    data: DigitsData,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    console: Console | None = None,
    progress: bool = False,
    description: str = "QAT",
) -> int:
    """Quantization-aware training of a prepared model inside ``quantizer.training_mode()``.

    The loss distils the float *teacher* (see :func:`distillation_loss`); Adam with a
    cosine-decayed learning rate; ``quantizer.step()`` after every batch advances the
    ``QATSchedule``. Returns the number of steps.
    """
    generator = torch.Generator().manual_seed(10_000 + seed)
    params = [p for p in prepared.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    per_epoch = _steps_per_epoch(data.x_train.shape[0], batch_size)
    total = max(1, epochs * per_epoch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)

    count = 0
    steps = _epoch_batches(data, epochs, batch_size, generator)
    with quantizer.training_mode():
        for x, y in progress_iter(steps, description, total, console, progress):
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = distillation_loss(prepared(x), teacher_logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            quantizer.step()
            count += 1
    prepared.eval()
    return count


def calibrate(
    prepared: nn.Module,
    quantizer: Any,
    inputs: Iterable[torch.Tensor],
    total: int | None,
    *,
    console: Console | None = None,
    progress: bool = False,
    description: str = "calibrating",
) -> None:
    """Run *inputs* through the prepared model inside ``quantizer.calibration_mode()``."""
    with quantizer.calibration_mode(), torch.no_grad():
        for x in progress_iter(inputs, description, total, console, progress):
            prepared(x)
    prepared.eval()


@torch.no_grad()
def predict(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    batch_size: int = 512,
) -> torch.Tensor:
    """Logits of *model* on *x*, in batches of *batch_size*."""
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
