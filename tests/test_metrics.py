"""Tests for skdeepcluster.metrics."""

from itertools import permutations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdeepcluster.metrics import acc_scorer, cluster_accuracy, clustering_report, format_reports

SETTINGS = settings(max_examples=60, deadline=None)


def _contingency(y_true, y_pred):
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((p.max() + 1, t.max() + 1), dtype=int)
    np.add.at(counts, (p, t), 1)
    return counts


def brute_force_acc(y_true, y_pred):
    """Maximum over all injective cluster<->class matchings, by enumeration."""
    counts = _contingency(y_true, y_pred)
    n_clusters, n_classes = counts.shape
    best = 0
    if n_clusters <= n_classes:
        for classes in permutations(range(n_classes), n_clusters):
            best = max(best, sum(counts[k, j] for k, j in enumerate(classes)))
    else:
        for clusters in permutations(range(n_clusters), n_classes):
            best = max(best, sum(counts[k, j] for j, k in enumerate(clusters)))
    return best / len(y_true)


@st.composite
def label_pairs(draw, max_true=5, max_pred=5, max_n=30):
    """Two integer label vectors of the same length (labels may be sparse)."""
    n = draw(st.integers(1, max_n))
    y_true = draw(st.lists(st.integers(0, max_true - 1), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.integers(0, max_pred - 1), min_size=n, max_size=n))
    return np.array(y_true), np.array(y_pred)


@st.composite
def pair_and_bijection(draw):
    """A label pair and a bijection of the predicted labels onto arbitrary values."""
    y_true, y_pred = draw(label_pairs())
    labels = np.unique(y_pred)
    targets = draw(
        st.lists(
            st.one_of(st.integers(-1000, 1000), st.text(min_size=1, max_size=3)).map(str),
            min_size=len(labels),
            max_size=len(labels),
            unique=True,
        )
    )
    mapping = dict(zip(labels.tolist(), targets))
    return y_true, y_pred, mapping


@SETTINGS
@given(label_pairs())
def test_matches_brute_force(pair):
    y_true, y_pred = pair
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(brute_force_acc(y_true, y_pred))


@SETTINGS
@given(label_pairs(max_true=3, max_pred=5))
def test_more_clusters_than_classes_matches_brute_force(pair):
    y_true, y_pred = pair
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(brute_force_acc(y_true, y_pred))


@SETTINGS
@given(pair_and_bijection())
def test_invariant_to_relabelling_clusters(data):
    y_true, y_pred, mapping = data
    relabelled = np.array([mapping[v] for v in y_pred.tolist()])
    assert cluster_accuracy(y_true, relabelled) == cluster_accuracy(y_true, y_pred)


@SETTINGS
@given(pair_and_bijection())
def test_invariant_to_relabelling_classes(data):
    # Reuse the drawn bijection, applied to the classes this time.
    y_pred, y_true, mapping = data
    relabelled = np.array([mapping[v] for v in y_true.tolist()])
    assert cluster_accuracy(relabelled, y_pred) == cluster_accuracy(y_true, y_pred)


@SETTINGS
@given(label_pairs(max_true=6, max_pred=6, max_n=60))
def test_bounds(pair):
    y_true, y_pred = pair
    n = len(y_true)
    acc = cluster_accuracy(y_true, y_pred)
    counts = _contingency(y_true, y_pred)
    assert 0 < acc <= 1
    # One matched (cluster, class) pair alone achieves its cell count.
    assert acc >= counts.max() / n - 1e-12
    # Padding to a square k x k matrix, the k disjoint "diagonals" partition
    # all cells, so the best one holds at least n / k samples.
    assert acc >= 1 / max(counts.shape) - 1e-12
    # Each cluster (resp. class) contributes at most its largest cell.
    assert acc <= counts.max(axis=1).sum() / n + 1e-12
    assert acc <= counts.max(axis=0).sum() / n + 1e-12
    # Symmetric in its arguments (a matching is a matching both ways round).
    assert cluster_accuracy(y_pred, y_true) == pytest.approx(acc)


@SETTINGS
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=20),
    st.permutations(range(4)),
    st.lists(st.tuples(st.integers(0, 19), st.integers(0, 3)), max_size=3),
)
def test_acc_one_iff_relabelling(y, perm, corruptions):
    # Start from a relabelling of the truth, then maybe corrupt a few entries,
    # so that both sides of the equivalence are exercised.
    y_true = np.array(y)
    y_pred = np.array(perm)[y_true]
    for i, label in corruptions:
        y_pred[i % len(y_pred)] = label
    counts = _contingency(y_true, y_pred)
    # A relabelling: every cluster holds one class and every class one cluster
    # (which forces equal numbers of clusters and classes).
    is_relabelling = bool(
        ((counts > 0).sum(axis=0) == 1).all() and ((counts > 0).sum(axis=1) == 1).all()
    )
    assert (cluster_accuracy(y_true, y_pred) == 1.0) == is_relabelling


@SETTINGS
@given(st.lists(st.integers(0, 4), min_size=1, max_size=30), st.permutations(range(5)))
def test_bijection_of_truth_scores_one(y, perm):
    y_true = np.array(y)
    y_pred = np.array(perm)[y_true] * 7 - 3  # bijective, negative labels included
    assert cluster_accuracy(y_true, y_pred) == 1.0


def test_known_values():
    assert cluster_accuracy([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    assert cluster_accuracy([0, 0, 1, 1], [0, 1, 0, 1]) == 0.5
    # More clusters than classes: the extra cluster's samples are errors.
    assert cluster_accuracy([0, 0, 0, 1], [5, 5, 6, 7]) == 0.75
    # One cluster: accuracy is the share of the largest class.
    assert cluster_accuracy(["a", "a", "b", "c"], [0, 0, 0, 0]) == 0.5
    assert cluster_accuracy(["cat", "dog", "dog"], [-1, -2, -2]) == 1.0
    assert cluster_accuracy([3], [9]) == 1.0


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [
        ([0, 1, 2], [0, 1], "same length"),
        ([], [], "empty"),
        ([[0, 1], [1, 0]], [[0, 1], [1, 0]], "1-D"),
        ([0, 1], [[0], [1]], "y_pred must be a 1-D"),
        (0, 0, "1-D"),
    ],
)
def test_bad_input(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        cluster_accuracy(y_true, y_pred)
    with pytest.raises(ValueError, match=match):
        clustering_report(y_true, y_pred)


def _blobs():
    return make_blobs(
        n_samples=150, centers=[[0, 0], [10, 0], [0, 10]], cluster_std=0.5, random_state=0
    )


def test_acc_scorer_in_grid_search():
    X, y = _blobs()
    search = GridSearchCV(
        KMeans(n_init=2, random_state=0), {"n_clusters": [2, 3, 4]}, scoring=acc_scorer, cv=3
    )
    search.fit(X, y)
    assert search.best_params_ == {"n_clusters": 3}
    assert search.best_score_ == pytest.approx(1.0)
    # Two clusters can only match two of three equal-sized classes.
    scores = dict(zip([2, 3, 4], search.cv_results_["mean_test_score"]))
    assert scores[2] < 0.7


def test_acc_scorer_on_pipeline():
    X, y = _blobs()
    pipe = make_pipeline(StandardScaler(), KMeans(n_init=2, random_state=0))
    search = GridSearchCV(pipe, {"kmeans__n_clusters": [2, 3]}, scoring=acc_scorer, cv=3)
    search.fit(X, y)
    assert search.best_params_ == {"kmeans__n_clusters": 3}
    assert search.best_score_ == pytest.approx(1.0)
    # Direct call: scorer(estimator, X, y).
    assert acc_scorer(search.best_estimator_, X, y) == pytest.approx(1.0)


def test_clustering_report():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [1, 1, 0, 0, 0, 2]
    report = clustering_report(y_true, y_pred)
    assert set(report) == {"acc", "nmi", "ari"}
    assert all(type(v) is float for v in report.values())
    assert report["acc"] == pytest.approx(5 / 6)
    assert report["nmi"] == pytest.approx(normalized_mutual_info_score(y_true, y_pred))
    assert report["ari"] == pytest.approx(adjusted_rand_score(y_true, y_pred))
    assert clustering_report(y_true, y_true) == {"acc": 1.0, "nmi": 1.0, "ari": 1.0}


def test_format_reports():
    rows = {
        "k-means": {"acc": 0.5, "nmi": 0.25, "ari": 0.75, "seconds": 1.5},
        "SCAN": {"acc": 1.0, "nmi": 1.0, "ari": 1.0},
    }
    lines = format_reports(rows, digits=2).splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["method", "ACC", "NMI", "ARI", "seconds"]
    assert [c.strip() for c in lines[1].split("|")] == ["k-means", "0.50", "0.25", "0.75", "1.50"]
    assert [c.strip() for c in lines[2].split("|")] == ["SCAN", "1.00", "1.00", "1.00", "-"]
    # Columns line up.
    assert len({line.index("|") for line in lines}) == 1
    # A single report is one row; explicit columns select and order.
    single = format_reports(clustering_report([0, 1], [1, 0]), columns=["ari", "acc"])
    assert [c.strip() for c in single.splitlines()[0].split("|")] == ["method", "ARI", "ACC"]
    assert len(single.splitlines()) == 2
