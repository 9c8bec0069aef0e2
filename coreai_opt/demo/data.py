"""The demo's data: scikit-learn's bundled handwritten digits (8x8 images, 10 classes).

``load_digits`` reads a file shipped inside scikit-learn, so nothing is downloaded. The
1797 images are split once (stratified, fixed seed) into a training and a test set;
pixel values 0..16 are scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["DigitsData", "batches", "load_data"]


@dataclass(frozen=True)
class DigitsData:
    """The digits split into training and test tensors.

    Attributes:
        x_train: ``[N_train, 1, 8, 8]`` float32 images in [0, 1].
        y_train: ``[N_train]`` int64 labels.
        x_test: ``[N_test, 1, 8, 8]`` float32 images.
        y_test: ``[N_test]`` int64 labels.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def subset(self, n_train: int | None, n_test: int | None) -> DigitsData:
        """The first *n_train* training and *n_test* test samples (None keeps all)."""
        return DigitsData(
            self.x_train[:n_train],
            self.y_train[:n_train],
            self.x_test[:n_test],
            self.y_test[:n_test],
        )


def load_data(test_fraction: float = 0.2, split_seed: int = 0) -> DigitsData:
    """Load the bundled digits and split them (stratified by label, *split_seed*)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    index = torch.arange(labels.numel()).numpy()
    train_idx, test_idx = train_test_split(
        index, test_size=test_fraction, random_state=split_seed, stratify=labels.numpy()
    )
    train = torch.as_tensor(train_idx)
    test = torch.as_tensor(test_idx)
    return DigitsData(images[train], labels[train], images[test], labels[test])


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of ``(x, y)``; shuffled with *generator* when one is given.

    The last batch may be smaller than *batch_size*.
    """
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]
