"""Datasets the examples and benchmarks use, by name (all offline)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from skdeepcluster.datasets import load_digits_images, load_mnist_test


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``digits`` (1797 x 64 vectors), ``digits-images`` (1797 x 8 x 8), ``mnist-vectors``
    (10000 x 784 uint8) or ``mnist-images`` (10000 x 28 x 28 uint8)."""
    if name == "digits":
        return load_digits(return_X_y=True)
    if name == "digits-images":
        return load_digits_images()
    if name in ("mnist-images", "mnist-vectors"):
        X, y = load_mnist_test()
        return (X.reshape(len(X), -1) if name == "mnist-vectors" else X), y
    raise ValueError(
        f"unknown dataset {name!r}; accepted: digits, digits-images, mnist-vectors, mnist-images"
    )
