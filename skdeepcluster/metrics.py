"""Metrics for clusterings: against ground-truth labels, and without labels.

With labels: the clustering accuracy (ACC) used throughout the deep clustering
literature, a scikit-learn scorer for it, and a report helper that also computes
NMI and ARI. Without labels: :func:`knn_modularity`, the criterion behind every
method's ``score`` (:doc:`/user_guide/model_selection`), and
:func:`label_free_scorer`, the same criterion for any clustering Pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score, make_scorer, normalized_mutual_info_score

from .neighbors import mine_neighbors

__all__ = [
    "SCORE_MUTUAL",
    "SCORE_N_NEIGHBORS",
    "acc_scorer",
    "cluster_accuracy",
    "clustering_report",
    "format_reports",
    "knn_modularity",
    "label_free_scorer",
    "stability_scorer",
]

#: Neighbours per sample in the graph of :func:`knn_modularity` when a method scores itself
#: (``score``) and in :func:`label_free_scorer` (measured: ``docs/benchmarks.md``).
SCORE_N_NEIGHBORS = 10
#: ``score`` and :func:`label_free_scorer` keep only mutual neighbour pairs (measured against
#: the plain k-NN graph: ``docs/benchmarks.md``, "label-free model selection").
SCORE_MUTUAL = True


def _check_label_vectors(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Convert both label vectors to 1-D arrays of equal, non-zero length."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.ndim != 1:
            raise ValueError(
                f"{name} must be a 1-D array of labels, got an array of shape {y.shape}."
            )
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            "y_true and y_pred must have the same length, got "
            f"{y_true.shape[0]} and {y_pred.shape[0]}."
        )
    if y_true.shape[0] == 0:
        raise ValueError("y_true and y_pred must not be empty.")
    return y_true, y_pred


def _contingency(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Counts matrix ``C[k, j]`` = number of samples in cluster ``k`` and class ``j``."""
    _, true_idx = np.unique(y_true, return_inverse=True)
    _, pred_idx = np.unique(y_pred, return_inverse=True)
    true_idx = true_idx.ravel()
    pred_idx = pred_idx.ravel()
    n_classes = int(true_idx.max()) + 1
    n_clusters = int(pred_idx.max()) + 1
    counts = np.bincount(pred_idx * n_classes + true_idx, minlength=n_clusters * n_classes)
    return counts.reshape(n_clusters, n_classes)


def cluster_accuracy(y_true: Any, y_pred: Any) -> float:
    r"""Clustering accuracy under the best one-to-one cluster-to-class matching.

    Cluster ids are arbitrary, so predictions are compared with the classes
    after relabelling them with the matching ``m`` (an injective map between
    clusters and classes) that agrees with the most samples:

    .. math::

        \mathrm{ACC} = \max_{m} \frac{1}{n} \sum_{i=1}^{n} \mathbf{1}\{y_i = m(c_i)\}

    where :math:`y_i` is the class and :math:`c_i` the cluster of sample
    :math:`i`. The maximisation is solved exactly with the Hungarian algorithm
    (:func:`scipy.optimize.linear_sum_assignment`) on the contingency matrix.

    The numbers of clusters and classes may differ. Then only
    ``min(n_clusters, n_classes)`` pairs can be matched, and every sample of an
    unmatched cluster or class counts as an error.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Ground-truth class labels. Any hashable, sortable values (ints,
        negative ints, strings, ...).
    y_pred : array-like of shape (n_samples,)
        Predicted cluster labels, same requirements as ``y_true``. The label
        values of ``y_true`` and ``y_pred`` need not be related.

    Returns
    -------
    float
        Fraction of samples correctly assigned under the best matching, in
        ``(0, 1]``; ``1.0`` exactly when ``y_pred`` is a relabelling of
        ``y_true``.

    Raises
    ------
    ValueError
        If an input is not 1-D, the lengths differ, or the inputs are empty.

    Examples
    --------
    >>> cluster_accuracy([0, 0, 1, 1], ["b", "b", "a", "a"])
    1.0
    >>> cluster_accuracy([0, 0, 0, 0], [0, 0, 1, 1])
    0.5
    """
    y_true, y_pred = _check_label_vectors(y_true, y_pred)
    counts = _contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / y_true.shape[0])


#: Scorer for :class:`~sklearn.model_selection.GridSearchCV` and friends:
#: calls ``estimator.predict(X)`` and returns :func:`cluster_accuracy` against
#: ``y``. Works with any clustering estimator (or pipeline ending in one) that
#: implements ``predict``; greater is better.
acc_scorer = make_scorer(cluster_accuracy, greater_is_better=True)


def clustering_report(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Standard external clustering metrics in one dictionary.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Ground-truth class labels.
    y_pred : array-like of shape (n_samples,)
        Predicted cluster labels.

    Returns
    -------
    dict
        ``{"acc": ..., "nmi": ..., "ari": ...}``: :func:`cluster_accuracy`,
        :func:`sklearn.metrics.normalized_mutual_info_score` (arithmetic
        normalisation) and :func:`sklearn.metrics.adjusted_rand_score`, as
        Python floats.
    """
    y_true, y_pred = _check_label_vectors(y_true, y_pred)
    return {
        "acc": cluster_accuracy(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
    }


_HEADERS = {"acc": "ACC", "nmi": "NMI", "ari": "ARI"}


def _format_cell(value: Any, digits: int) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def format_reports(
    reports: Mapping[str, Mapping[str, Any]] | Mapping[str, Any],
    *,
    columns: Sequence[str] | None = None,
    digits: int = 4,
    name: str = "method",
) -> str:
    """Format one or several reports as a plain-text table.

    Parameters
    ----------
    reports : dict
        Either a single report (e.g. the output of :func:`clustering_report`,
        possibly with extra entries such as ``"seconds"``) or a mapping from a
        row name (method) to such a report.
    columns : sequence of str, optional
        Keys to show, in order. By default ``acc``, ``nmi``, ``ari`` first
        (those present), then any other keys in order of first appearance.
        Missing entries are shown as ``-``.
    digits : int, default=4
        Decimal places for floats.
    name : str, default="method"
        Header of the first column.

    Returns
    -------
    str
        Lines like ``method | ACC | NMI | ARI | seconds``, columns padded to a
        common width, without a trailing newline.

    Examples
    --------
    >>> print(format_reports({"kmeans": {"acc": 0.5, "nmi": 0.25, "ari": 0.75}}, digits=2))
    method | ACC  | NMI  | ARI
    kmeans | 0.50 | 0.25 | 0.75
    """
    if reports and all(not isinstance(v, Mapping) for v in reports.values()):
        reports = {"": reports}
    if columns is None:
        seen: list[str] = []
        for report in reports.values():
            seen.extend(k for k in report if k not in seen)
        columns = [k for k in _HEADERS if k in seen] + [k for k in seen if k not in _HEADERS]
    table = [[name] + [_HEADERS.get(c, c) for c in columns]]
    for row_name, report in reports.items():
        table.append(
            [str(row_name)]
            + [_format_cell(report[c], digits) if c in report else "-" for c in columns]
        )
    widths = [max(len(row[j]) for row in table) for j in range(len(table[0]))]
    return "\n".join(
        " | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table
    )


def knn_modularity(
    features: Any, labels: Any, n_neighbors: int = SCORE_N_NEIGHBORS, mutual: bool = False
) -> float:
    r"""Modularity of a partition on the k-nearest-neighbour graph of the features.

    A label-free criterion of a clustering: how many more neighbour pairs share a cluster than
    they would by chance given the clusters' sizes (Newman, *Modularity and community structure
    in networks*, PNAS 2006, eq. 3). With :math:`A` the directed k-NN graph (cosine similarity,
    each sample linked to its ``n_neighbors`` nearest others), :math:`W = A + A^\top` (or, with
    ``mutual=True``, :math:`W = A \odot A^\top`: only pairs that are each other's
    neighbours), degrees :math:`d_i = \sum_j W_{ij}` and :math:`2m = \sum_i d_i`,

    .. math::

        Q = \sum_c \Big[ \frac{1}{2m} \sum_{i, j \in c} W_{ij}
            - \Big( \frac{1}{2m} \sum_{i \in c} d_i \Big)^2 \Big].

    Splitting a real cluster cuts the neighbour pairs across the split, and merging two
    clusters raises the chance term, so :math:`Q` compares partitions with different numbers
    of clusters. One cluster scores 0, random labels about 0, and :math:`Q \le 1 - 1/K` for
    :math:`K` clusters.

    Parameters
    ----------
    features : array-like or Tensor of shape (n_samples, n_features)
        The space whose neighbours define the graph (a pretext's features, the standardised
        input). Images are flattened.
    labels : array-like of shape (n_samples,)
        Cluster labels (any hashable, sortable values).
    n_neighbors : int, default=SCORE_N_NEIGHBORS
        Neighbours per sample, ``1 <= n_neighbors < n_samples``.
    mutual : bool, default=False
        Keep only mutual neighbour pairs: fewer edges, and fewer of them between classes (a
        sample at the edge of its class, or a hub, is rarely its neighbour's neighbour).

    Returns
    -------
    float
        The modularity :math:`Q`; greater is better. 0 when the graph has no edge.

    Examples
    --------
    >>> X = [[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]
    >>> round(knn_modularity(X, [0, 0, 1, 1], n_neighbors=1), 3)
    0.5
    >>> knn_modularity(X, [0, 0, 0, 0], n_neighbors=1)
    0.0
    """
    features = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features)
    features = features.reshape(len(features), -1)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(features):
        raise ValueError(
            f"labels must be a 1-D array with one label per row of features ({len(features)}), "
            f"got an array of shape {labels.shape}."
        )
    _, clusters = np.unique(labels, return_inverse=True)
    clusters = clusters.ravel()
    neighbors = mine_neighbors(features, n_neighbors).cpu().numpy()
    n, k = neighbors.shape
    source = np.repeat(np.arange(n), k)
    target = neighbors.ravel()
    if mutual:  # both directions of each mutual pair stay: W is symmetric
        keep = np.isin(target * n + source, source * n + target)
        source, target = source[keep], target[keep]
    else:  # W = A + A^T: every directed edge once as it is and once reversed
        source, target = np.concatenate([source, target]), np.concatenate([target, source])
    if len(source) == 0:
        return 0.0
    two_m = float(len(source))
    within = np.count_nonzero(clusters[source] == clusters[target]) / two_m
    shares = np.bincount(clusters[source], minlength=clusters.max() + 1) / two_m
    return float(within - np.sum(shares**2))


def label_free_scorer(estimator: Any, X: Any, y: Any = None) -> float:
    """Scorer for model selection without labels: :func:`knn_modularity` of the predictions.

    For a skdeepcluster method, or a Pipeline ending in one, this is its ``score(X)``: the
    modularity in the method's reference space (the fitted pretext's features, else the
    standardised input). For any other clusterer with ``predict`` (k-means after a
    :class:`~skdeepcluster.SimCLR`, say) the graph is built in the features its last step sees:
    the output of the Pipeline's earlier steps, or X itself. Use it as
    ``GridSearchCV(..., scoring=label_free_scorer)``, alone or beside
    :data:`acc_scorer` when labels exist; ``y`` is ignored.

    Parameters
    ----------
    estimator : fitted estimator or Pipeline
        Must have ``predict``.
    X : array-like
        The samples to score.
    y : None
        Ignored.

    Returns
    -------
    float
        The modularity; greater is better.
    """
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if hasattr(final, "_reference_features"):
        return float(estimator.score(X))
    features = estimator[:-1].transform(X) if hasattr(estimator, "steps") else X
    features = np.asarray(features, dtype=np.float32)
    features = features.reshape(len(features), -1)
    spread = features.std(0)
    standardised = (features - features.mean(0)) / np.where(spread > 0, spread, 1.0)
    return knn_modularity(standardised, estimator.predict(X), SCORE_N_NEIGHBORS, SCORE_MUTUAL)


def stability_scorer(estimator: Any, X: Any, y: Any = None, n_refits: int = 1) -> float:
    """Scorer for model selection without labels that refits: agreement across seeds.

    The mean adjusted Rand index between ``estimator.predict(X)`` and the predictions of
    ``n_refits`` clones of the estimator fitted on X with other seeds (every ``random_state``
    parameter, a Pipeline's and a pretext's included, shifted by 1, 2, ...; a None seed stays
    None). A configuration that finds structure in the data finds it again from another seed; a
    number of clusters that cuts a real cluster cuts it somewhere else. It costs ``n_refits``
    extra fits per configuration; :func:`label_free_scorer` costs none, and chooses as well on
    most grids measured (:doc:`/user_guide/model_selection`).

    Parameters
    ----------
    estimator : fitted estimator or Pipeline
        Must have ``predict`` and ``get_params``.
    X : array-like
        The samples to fit the clones on and to compare the predictions of.
    y : None
        Ignored.
    n_refits : int, default=1
        Clones to fit. Bind another value with ``functools.partial``.

    Returns
    -------
    float
        The mean adjusted Rand index, at most 1; greater is better.
    """
    reference = estimator.predict(X)
    seeds = {
        name: value
        for name, value in estimator.get_params(deep=True).items()
        if name == "random_state" or name.endswith("__random_state")
    }
    agreement = []
    for shift in range(1, n_refits + 1):
        shifted = {
            name: value + shift if isinstance(value, (int, np.integer)) else value
            for name, value in seeds.items()
        }
        refit = clone(estimator).set_params(**shifted).fit(X)
        agreement.append(adjusted_rand_score(reference, refit.predict(X)))
    return float(np.mean(agreement))
