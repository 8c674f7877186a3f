"""A vector pipeline in GridSearchCV: autoencoder features -> mined neighbours -> SCAN.

``make_pipeline(AutoEncoder(), NeighborMiner(), SCAN(pretext=None))`` on the digits as 64-d
vectors: the autoencoder learns a feature space, the miner finds each sample's neighbours in it,
and SCAN clusters the features (starting from the manifold partition, ``head_init="auto"``). The
grid tunes SCAN's entropy weight and the number of mined neighbours, scored with the clustering
accuracy (:data:`skdeepcluster.metrics.acc_scorer`; the labels only score). Clustering is
transductive, so the one "split" fits and scores on all samples. The autoencoder is fitted once
and cached (``Pipeline(memory=...)``), since the grid does not change it::

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


def main() -> None:
    X, y = load_digits(return_X_y=True)
    everything = np.arange(len(X))
    with tempfile.TemporaryDirectory() as cache:
        pipeline = make_pipeline(
            AutoEncoder(max_epochs=50, random_state=0),
            NeighborMiner(),
            SCAN(n_clusters=10, pretext=None, random_state=0),
            memory=cache,
        )
        grid = {"scan__entropy_weight": [2.0, 5.0], "neighborminer__n_neighbors": [5, 20]}
        search = GridSearchCV(pipeline, grid, scoring=acc_scorer, cv=[(everything, everything)])
        start = time.perf_counter()
        search.fit(X, y)
        seconds = time.perf_counter() - start
    for params, acc in zip(
        search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
    ):
        print(f"{params}: ACC {acc:.3f}")
    print(f"best {search.best_params_}: ACC {search.best_score_:.3f} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
