"""Datasets the examples and benchmarks use, by name (all offline)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.preprocessing import StandardScaler

from skdeepcluster.datasets import load_digits_images, load_mnist_test

DATASETS = (
    "digits",
    "digits-images",
    "mnist-vectors",
    "mnist-images",
    "iris",
    "breast_cancer",
    "breast_cancer-raw",
)


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``digits`` (1797 x 64 vectors), ``digits-images`` (1797 x 8 x 8), ``mnist-vectors``
    (10000 x 784 uint8), ``mnist-images`` (10000 x 28 x 28 uint8), ``iris`` (150 x 4) or
    ``breast_cancer`` (569 x 30), the last two standardised."""
    if name == "digits":
        return load_digits(return_X_y=True)
    if name in ("iris", "breast_cancer"):  # tabular, standardised as the vectors issue asks
        X, y = (load_iris if name == "iris" else load_breast_cancer)(return_X_y=True)
        return StandardScaler().fit_transform(X).astype(np.float32), y
    if name == "breast_cancer-raw":
        X, y = load_breast_cancer(return_X_y=True)
        return X.astype(np.float32), y
    if name == "digits-images":
        return load_digits_images()
    if name in ("mnist-images", "mnist-vectors"):
        X, y = load_mnist_test()
        return (X.reshape(len(X), -1) if name == "mnist-vectors" else X), y
    raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
