"""Label-free model selection: the k-NN modularity, every method's ``score`` and the scorer."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdeepcluster import C2BIN, DRC, LSDC, SCAN, AutoEncoder, SeLa
from skdeepcluster.backbones import Standardize
from skdeepcluster.metrics import (
    SCORE_MUTUAL,
    SCORE_N_NEIGHBORS,
    knn_modularity,
    label_free_scorer,
    stability_scorer,
)

QUICK = {"max_epochs": 2, "batch_size": 32, "random_state": 0}
QUICK_METHODS = [
    SCAN(self_label_epochs=1, **QUICK),
    LSDC(**QUICK),
    SeLa(**QUICK),
    C2BIN(**QUICK),
    DRC(**QUICK),
]


def blobs(n_per: int = 40, centers: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(
        n_samples=n_per * centers, centers=centers, n_features=6, cluster_std=0.5, random_state=seed
    )
    return X.astype(np.float32), y


def reference_modularity(
    features: np.ndarray, labels: np.ndarray, k: int, mutual: bool = False
) -> float:
    """Newman's Q from the dense symmetrised adjacency: the definition, written out."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    adjacency = np.zeros_like(sims)
    np.put_along_axis(adjacency, np.argsort(-sims, axis=1)[:, :k], 1.0, axis=1)
    w = adjacency * adjacency.T if mutual else adjacency + adjacency.T
    degrees = w.sum(1)
    two_m = w.sum()
    same = labels[:, None] == labels[None, :]
    return float(((w - np.outer(degrees, degrees) / two_m) * same).sum() / two_m)


# ---------------------------------------------------------------------- knn_modularity
def test_two_separated_pairs_score_one_half():
    X = [[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]
    assert knn_modularity(X, [0, 0, 1, 1], n_neighbors=1) == pytest.approx(0.5)
    # the crossing partition cuts every edge: Q = 0 - 2 * (1/2)^2
    assert knn_modularity(X, [0, 1, 0, 1], n_neighbors=1) == pytest.approx(-0.5)


def test_one_cluster_scores_zero():
    X, _ = blobs()
    assert knn_modularity(X, np.zeros(len(X)), n_neighbors=5) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("mutual", [False, True])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_matches_the_dense_definition(k, mutual):
    X, y = blobs(n_per=15, centers=4, seed=3)
    labels = np.random.default_rng(k).integers(0, 3, len(X))
    labels[: len(X) // 2] = y[: len(X) // 2]
    expected = reference_modularity(X, labels, k, mutual)
    assert knn_modularity(X, labels, k, mutual=mutual) == pytest.approx(expected)


def test_mutual_graph_drops_the_one_way_edges():
    # three points on a line: 0 and 1 are each other's nearest, 2's nearest is 1 but not back
    X = np.array([[1.0, 0.0], [1.0, 0.05], [1.0, 0.3], [0.0, 1.0], [0.05, 1.0]])
    labels = np.array([0, 0, 1, 2, 2])
    # mutual pairs {0, 1} and {3, 4} only: sample 2 has no edge, its label costs nothing
    assert knn_modularity(X, labels, 1, mutual=True) == pytest.approx(0.5)
    assert knn_modularity(X, labels, 1) < 0.5


def test_true_clusters_beat_merged_and_split_ones():
    X, y = blobs(centers=4)
    true = knn_modularity(X, y, 10)
    merged = knn_modularity(X, np.minimum(y, 2), 10)  # clusters 2 and 3 merged
    halves = np.where(X[:, 0] > np.median(X[y == 0, 0]), 1, 0)
    split = knn_modularity(X, np.where(y == 0, 4 + halves, y), 10)  # cluster 0 cut in two
    assert true > merged
    assert true > split
    assert true > 0.5


def test_random_labels_score_near_zero():
    X, _ = blobs(n_per=100, centers=3)
    labels = np.random.default_rng(0).integers(0, 5, len(X))
    assert abs(knn_modularity(X, labels, 10)) < 0.05


@given(
    labels=st.lists(st.integers(0, 4), min_size=12, max_size=30),
    relabel=st.permutations(list(range(5))),
)
def test_invariant_to_relabelling_and_bounded(labels, relabel):
    labels = np.array(labels)
    X = np.random.default_rng(len(labels)).normal(size=(len(labels), 3))
    q = knn_modularity(X, labels, 3)
    assert q == pytest.approx(knn_modularity(X, np.array(relabel)[labels], 3))
    assert -0.5 - 1e-9 <= q < 1.0
    # the chance term is at least 1/K for K clusters (Cauchy-Schwarz), so Q <= 1 - 1/K
    assert q <= 1.0 - 1.0 / len(np.unique(labels)) + 1e-9


def test_modularity_rejects_labels_of_the_wrong_length():
    X, y = blobs()
    with pytest.raises(ValueError, match="one label per row of features"):
        knn_modularity(X, y[:-1])
    with pytest.raises(ValueError, match="n_neighbors must be in"):
        knn_modularity(X[:5], y[:5], n_neighbors=5)


# ---------------------------------------------------------------------- the methods' score
@pytest.mark.parametrize("method", QUICK_METHODS, ids=lambda m: type(m).__name__)
def test_score_is_the_modularity_of_the_predictions_in_the_input(method):
    X, _ = blobs()
    fitted = method.set_params(n_clusters=3, pretext=None).fit(X)
    tensor = torch.as_tensor(X)
    standardised = Standardize.from_data(tensor)(tensor)  # as a new backbone standardises X
    expected = knn_modularity(standardised, fitted.predict(X), SCORE_N_NEIGHBORS, SCORE_MUTUAL)
    assert fitted.score(X) == pytest.approx(expected, abs=1e-6)
    assert fitted.score(X, y=np.zeros(len(X))) == fitted.score(X)  # y is ignored


def test_score_with_a_pretext_builds_the_graph_in_its_features():
    X, _ = blobs(n_per=30)
    pretext = AutoEncoder(max_epochs=2, random_state=0)
    fitted = SCAN(n_clusters=3, pretext=pretext, self_label_epochs=1, **QUICK).fit(X)
    assert fitted.pretext_ is not None
    expected = knn_modularity(
        fitted.pretext_.transform(X), fitted.predict(X), SCORE_N_NEIGHBORS, SCORE_MUTUAL
    )
    assert fitted.score(X) == pytest.approx(expected, abs=1e-6)


def test_score_is_repeatable_and_leaves_the_random_state_alone(monkeypatch):
    from skdeepcluster import _training

    monkeypatch.setattr(_training, "SAMPLE_ROWS", 50)  # the statistics come from random rows
    X, _ = blobs()
    fitted = SCAN(n_clusters=3, pretext=None, self_label_epochs=1, **QUICK).fit(X)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = fitted.score(X)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert fitted.score(X) == first


def test_score_needs_a_fit_and_enough_samples():
    X, _ = blobs()
    with pytest.raises(NotFittedError):
        SCAN(n_clusters=3).score(X)
    fitted = SCAN(n_clusters=3, pretext=None, self_label_epochs=1, **QUICK).fit(X)
    with pytest.raises(ValueError, match=f"more than {SCORE_N_NEIGHBORS} samples"):
        fitted.score(X[:SCORE_N_NEIGHBORS])


def test_grid_search_without_labels_picks_the_number_of_blobs():
    X, _ = blobs(n_per=40, centers=3, seed=1)
    everything = np.arange(len(X))
    search = GridSearchCV(
        SCAN(pretext=None, self_label_epochs=1, **QUICK),
        {"n_clusters": [2, 3, 5]},
        cv=[(everything, everything)],
    ).fit(X)  # no y, no scoring: the estimators' score
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 3
    assert search.best_params_ == {"n_clusters": 3}, scores


# ---------------------------------------------------------------------- the scorer
def test_scorer_of_a_pipeline_ending_in_a_method_is_its_score():
    X, _ = blobs()
    pipe = make_pipeline(
        StandardScaler(), DRC(n_clusters=3, pretext=None, **QUICK).set_params(max_epochs=2)
    ).fit(X)
    assert label_free_scorer(pipe, X) == pytest.approx(pipe.score(X))
    assert label_free_scorer(pipe[-1], pipe[:-1].transform(X)) == pytest.approx(pipe.score(X))


def test_scorer_of_any_clusterer_uses_the_features_its_last_step_sees():
    X, _ = blobs()
    X[:, 0] *= 1000.0  # raw units: the scorer standardises what the clusterer sees
    pipe = make_pipeline(StandardScaler(), KMeans(3, n_init=3, random_state=0)).fit(X)
    seen = pipe[:-1].transform(X)
    expected = knn_modularity(seen, pipe.predict(X), SCORE_N_NEIGHBORS, SCORE_MUTUAL)
    assert label_free_scorer(pipe, X) == pytest.approx(expected)
    kmeans = KMeans(3, n_init=3, random_state=0).fit(seen)
    assert label_free_scorer(kmeans, seen) == pytest.approx(expected)
    assert label_free_scorer(pipe, X) > label_free_scorer(
        make_pipeline(StandardScaler(), KMeans(8, n_init=3, random_state=0)).fit(X), X
    )


def test_stability_scorer_refits_with_shifted_seeds(monkeypatch):
    X, _ = blobs()
    pipe = make_pipeline(StandardScaler(), KMeans(3, n_init=1, random_state=7)).fit(X)
    fitted_seeds = []
    original_fit = KMeans.fit

    def recording_fit(self, *args, **kwargs):
        fitted_seeds.append(self.random_state)
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(KMeans, "fit", recording_fit)
    score = stability_scorer(pipe, X, n_refits=2)
    assert fitted_seeds == [8, 9]
    assert score == pytest.approx(1.0)  # well-separated blobs: every seed finds them
    assert pipe[-1].random_state == 7  # the scored estimator is left as it was


def test_stability_scorer_is_low_for_a_split_of_one_blob():
    X = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)  # one blob
    kmeans = KMeans(4, n_init=1, random_state=0).fit(X)
    blobs_x, _ = blobs(centers=4)
    separated = KMeans(4, n_init=1, random_state=0).fit(blobs_x)
    assert stability_scorer(kmeans, X) < stability_scorer(separated, blobs_x)
    assert stability_scorer(separated, blobs_x) == pytest.approx(1.0)
