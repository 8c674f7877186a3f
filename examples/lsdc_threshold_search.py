"""Choosing LSD-C's pairwise-labelling parameter with GridSearchCV on the digits data set.

LSD-C labels a pair of samples "similar" when their features are close enough: cosine similarity
above a threshold, symmetric SNE probability above a threshold, or k nearest neighbours. This
example scores a grid of these parameters with the clustering accuracy
(:data:`skdeepcluster.metrics.acc_scorer`, Hungarian matching against the true digit; the labels
only score, they never train), prints the table and plots ACC against the parameter to
``docs/lsdc_threshold.png``.

The search uses one train/test split (fit on 75 % of the digits, score the predictions on the
other 25 %) and short training, so it takes a few minutes on one CPU core::

    OMP_NUM_THREADS=1 python examples/lsdc_threshold_search.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, ShuffleSplit

from skdeepcluster import LSDC
from skdeepcluster.metrics import acc_scorer

BATCH_SIZE = 256
MAX_EPOCHS = 30
GRID = [
    {"similarity": ["cosine"], "threshold": [0.5, 0.7, 0.8, 0.9, 0.95]},
    # symmetric SNE similarities (eqs. 1-2) average 1 / (B - 1) over a batch: thresholds in 1 / B
    {"similarity": ["sne"], "threshold": [f / BATCH_SIZE for f in (0.3, 1.0, 3.0, 10.0)]},
    {"similarity": ["knn"], "n_neighbors": [5, 10, 20, 40]},
]
OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "lsdc_threshold.png"


def main() -> None:
    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    search = GridSearchCV(
        # from scratch (pretext=None), as the committed plot was made: a SimCLR initialisation
        # per grid point would multiply the search time
        LSDC(
            n_clusters=10,
            pretext=None,
            center_features=False,  # the raw cosine, as the paper
            max_epochs=MAX_EPOCHS,
            batch_size=BATCH_SIZE,
            random_state=0,
        ),
        GRID,
        scoring=acc_scorer,
        cv=ShuffleSplit(n_splits=1, test_size=0.25, random_state=0),
        refit=False,
    )
    start = time.perf_counter()
    search.fit(X, y)
    seconds = time.perf_counter() - start

    results = search.cv_results_
    rows = []
    for params, acc, fit_time in zip(
        results["params"], results["mean_test_score"], results["mean_fit_time"]
    ):
        value = params.get("threshold", params.get("n_neighbors"))
        rows.append((params["similarity"], value, acc, fit_time))
    print(f"LSDC on digits, {MAX_EPOCHS} epochs, batch {BATCH_SIZE}; ACC on a held-out 25 %")
    print(f"{'similarity':<10} {'parameter':>12} {'ACC':>7} {'fit s':>7}")
    for similarity, value, acc, fit_time in rows:
        print(f"{similarity:<10} {value:>12.4g} {acc:>7.3f} {fit_time:>7.1f}")
    print(f"best: {search.best_params_} ACC {search.best_score_:.3f}; search {seconds:.0f} s")

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    labels = {"cosine": "cosine threshold", "sne": "SNE threshold x B", "knn": "k (neighbours)"}
    for ax, similarity in zip(axes, ("cosine", "sne", "knn")):
        points = [(v, a) for s, v, a, _ in rows if s == similarity]
        xs = np.array([v for v, _ in points]) * (BATCH_SIZE if similarity == "sne" else 1)
        ax.plot(xs, [a for _, a in points], "o-")
        if similarity != "cosine":
            ax.set_xscale("log")
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.minorticks_off()
        ax.set_xlabel(labels[similarity])
        ax.set_title(f"LSD-C, {similarity}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("clustering accuracy (held-out)")
    fig.suptitle(f"digits, {MAX_EPOCHS} epochs, batch {BATCH_SIZE}")
    fig.tight_layout()
    OUTPUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUTPUT, dpi=100)
    print(f"saved {OUTPUT}")


if __name__ == "__main__":
    main()
