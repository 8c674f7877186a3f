"""A vector pipeline in GridSearchCV: a vector pretext -> mined neighbours -> SCAN.

``make_pipeline(AutoEncoder(), NeighborMiner(), SCAN(pretext=None))`` on the digits as 64-d
vectors: the autoencoder learns a feature space, the miner finds each sample's neighbours in it,
and SCAN clusters the features (starting from the manifold partition, ``head_init="auto"``). The
grid chooses the feature space (the autoencoder's, or the input itself: ``"passthrough"``) and
the number of mined neighbours, scored with the clustering accuracy
(:data:`skdeepcluster.metrics.acc_scorer`; the labels only score). Clustering is transductive,
so the one "split" fits and scores on all samples. Each autoencoder is fitted once and cached
(``Pipeline(memory=...)``). One search per seed (0, 1, 2)::

    python examples/vector_pipeline.py          # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skdeepcluster import SCAN, AutoEncoder, NeighborMiner
from skdeepcluster.metrics import acc_scorer


def search(X: np.ndarray, y: np.ndarray, seed: int) -> GridSearchCV:
    """The grid search of one seed, fitted."""
    everything = np.arange(len(X))
    with tempfile.TemporaryDirectory() as cache:
        pipeline = make_pipeline(
            AutoEncoder(max_epochs=50, random_state=seed),
            NeighborMiner(),
            SCAN(n_clusters=10, pretext=None, random_state=seed),
            memory=cache,
        )
        grid = {
            "autoencoder": [AutoEncoder(max_epochs=50, random_state=seed), "passthrough"],
            "neighborminer__n_neighbors": [5, 20],
        }
        grid_search = GridSearchCV(
            pipeline, grid, scoring=acc_scorer, cv=[(everything, everything)]
        )
        return grid_search.fit(X, y)


def main() -> None:
    X, y = load_digits(return_X_y=True)
    best = []
    for seed in (0, 1, 2):
        start = time.perf_counter()
        fitted = search(X, y, seed)
        seconds = time.perf_counter() - start
        results = fitted.cv_results_
        for params, acc in zip(results["params"], results["mean_test_score"], strict=True):
            space = "input" if params["autoencoder"] == "passthrough" else "autoencoder"
            k = params["neighborminer__n_neighbors"]
            print(f"seed {seed}: {space} features, {k} neighbours: ACC {acc:.3f}")
        print(f"seed {seed}: best ACC {fitted.best_score_:.3f} ({seconds:.0f} s for the grid)")
        best.append(fitted.best_score_)
    print(f"best ACC over seeds 0-2: mean {np.mean(best):.3f}, min {np.min(best):.3f}")


if __name__ == "__main__":
    main()
