"""Pairwise labelling of a batch in feature space, as in LSD-C.

Rebuffi, Ehrhardt, Han, Vedaldi and Zisserman, "LSD-C: Linearly Separable
Deep Clusters" (2020), Sec. 3.2 and Table 1. Given a batch of features
``f`` of shape ``(B, d)`` each function returns an adjacency matrix ``A`` of
shape ``(B, B)``: a float tensor of zeros and ones, on the device of ``f``,
where ``A[i, j] = 1`` marks samples ``i`` and ``j`` as "similar" (to be put in
the same cluster) and ``0`` as "dissimilar".

Conventions shared by every function here:

* ``A`` is symmetric: the underlying similarity matrix is symmetrised exactly
  before it is thresholded, so rounding in the matrix product cannot make
  ``A[i, j]`` and ``A[j, i]`` disagree.
* The diagonal is always one: a sample is similar to itself. This holds
  whatever the threshold, so that ``A`` is a valid "same cluster" relation
  (reflexive) and the pair ``(i, i)`` always pushes ``p_i`` towards a
  confident prediction in the pairwise loss (eq. 5).
* The features only serve to make labels: they are detached, so no gradient
  flows through ``A``.
* Computation happens in at least float32 (float16/bfloat16 inputs are
  upcast); ``A`` is returned in the floating dtype of ``f``.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ._numerics import unit_rows
from ._validation import check_float_matrix, check_real

__all__ = [
    "calibrate_similarity",
    "calibrated_parameter",
    "cosine_adjacency",
    "knn_adjacency",
    "l2_adjacency",
    "pairwise_adjacency",
    "sne_adjacency",
    "sne_joint_probabilities",
]


# ---------------------------------------------------------------------------
# validation and shared pieces
# ---------------------------------------------------------------------------


def _check_features(f: Tensor, name: str = "f", min_samples: int = 1) -> Tensor:
    """Validate a (B, d) floating feature batch; return it detached, >= float32."""
    check_float_matrix(
        f,
        name,
        "(B, d)",
        "one feature vector per row",
        min_samples,
        hint=" Flatten image features first.",
    )
    return f.detach().to(torch.promote_types(f.dtype, torch.float32))


def _finish(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Boolean (B, B) similarity mask -> float 0/1 adjacency with ones on the diagonal."""
    mask = mask | mask.T  # no-op for an already symmetric mask; guards exact symmetry
    mask.fill_diagonal_(True)
    return mask.to(dtype)


def _cosine_similarity_matrix(f: Tensor) -> Tensor:
    """Exactly symmetric matrix of cosine similarities; zero vectors have cosine 0 to all."""
    fn = unit_rows(f)
    s = fn @ fn.T
    return (s + s.T) / 2


def _squared_distance_matrix(f: Tensor) -> Tensor:
    """Exactly symmetric matrix of squared Euclidean distances with a zero diagonal."""
    # Distances are translation invariant; centring reduces cancellation in
    # ||a||^2 + ||b||^2 - 2 a.b when the features share a large offset.
    f = f - f.mean(dim=0, keepdim=True)
    g = f @ f.T
    g = (g + g.T) / 2
    sq = g.diagonal()
    d = (sq[:, None] + sq[None, :] - 2 * g).clamp_min_(0.0)
    d.fill_diagonal_(0.0)
    return d


# ---------------------------------------------------------------------------
# public similarity criteria
# ---------------------------------------------------------------------------


def cosine_adjacency(f: Tensor, threshold: float, *, center: bool = False) -> Tensor:
    r"""Pairwise labels by thresholding the cosine similarity (LSD-C, Sec. 3.2).

    Implements, for a batch of features :math:`f_1, \dots, f_B`,

    .. math::

        A_{ij} = \mathbb{1}\left[\cos(f_i, f_j) > \tau\right],
        \qquad \cos(f_i, f_j) = \frac{f_i^\top f_j}{\lVert f_i\rVert\,\lVert f_j\rVert},

    the "cosine" row of Table 1 of Rebuffi et al., "LSD-C: Linearly Separable
    Deep Clusters" (2020), with :math:`A_{ii} = 1` for every :math:`i`
    (a sample is always similar to itself).

    Parameters
    ----------
    f : Tensor of shape (B, d)
        Batch of features (detached inside; no gradient flows through ``A``).
        A zero vector has cosine similarity 0 with every other sample.
    threshold : float
        :math:`\tau \in [-1, 1]`. The comparison is strict, so larger
        :math:`\tau` gives a subset of the ones.
    center : bool, default=False
        Subtract the batch mean :math:`\bar f` first, i.e. threshold
        :math:`\cos(f_i - \bar f, f_j - \bar f)`. Features after a ReLU and
        average pooling are all non-negative and share a large common
        component, so their raw cosines crowd near 1 and a fixed threshold
        labels almost every pair similar; centred cosines spread over
        :math:`[-1, 1]` whatever that offset.

    Returns
    -------
    Tensor of shape (B, B)
        Symmetric 0/1 adjacency in the dtype and on the device of ``f``.

    Raises
    ------
    ValueError
        If ``f`` is not a 2-D floating tensor or ``threshold`` is not a real
        number in ``[-1, 1]``.

    Notes
    -----
    Invariant to positive rescaling of each feature vector; with ``center``
    invariant instead to adding one vector to every feature (and to a common
    positive rescaling).
    """
    dtype = f.dtype if isinstance(f, Tensor) else None
    f = _check_features(f)
    tau = check_real(threshold, "threshold")
    if not -1.0 <= tau <= 1.0:
        raise ValueError(f"threshold for cosine similarity must lie in [-1, 1]; got {tau}.")
    if center:
        f = f - f.mean(dim=0, keepdim=True)
    return _finish(_cosine_similarity_matrix(f) > tau, dtype)


def l2_adjacency(f: Tensor, threshold: float, *, normalize: bool = False) -> Tensor:
    r"""Pairwise labels by thresholding the squared Euclidean distance (LSD-C, Table 1).

    Implements

    .. math::

        A_{ij} = \mathbb{1}\left[\lVert f_i - f_j \rVert_2^2 < \tau\right],

    the "L2" criterion compared in Table 1 of Rebuffi et al., "LSD-C:
    Linearly Separable Deep Clusters" (2020), with :math:`A_{ii} = 1`.

    Parameters
    ----------
    f : Tensor of shape (B, d)
        Batch of features (detached inside).
    threshold : float
        :math:`\tau \ge 0`. The comparison is strict, so larger :math:`\tau`
        gives a superset of the ones (and :math:`\tau = 0` leaves only the
        diagonal).
    normalize : bool, default=False
        If True, L2-normalise each feature vector first. On the unit sphere
        :math:`\lVert f_i - f_j\rVert^2 = 2 - 2\cos(f_i, f_j)`, so this is
        exactly :func:`cosine_adjacency` with threshold :math:`1 - \tau/2`
        for :math:`\tau \le 4` (and every pair is similar for :math:`\tau > 4`).

    Returns
    -------
    Tensor of shape (B, B)
        Symmetric 0/1 adjacency in the dtype and on the device of ``f``.

    Raises
    ------
    ValueError
        If ``f`` is not a 2-D floating tensor or ``threshold`` is negative or
        not a finite real number.

    Notes
    -----
    Raw (un-normalised) features are the default because, normalised, the
    criterion is only a re-parametrisation of the cosine one; listing "L2"
    as a separate criterion in Table 1 is meaningful only on raw features.
    The price is that :math:`\tau` depends on the scale of the features,
    which can drift during training; pass ``normalize=True`` for a
    scale-free threshold in :math:`[0, 4]`.
    """
    dtype = f.dtype if isinstance(f, Tensor) else None
    f = _check_features(f)
    tau = check_real(threshold, "threshold")
    if tau < 0:
        raise ValueError(f"threshold for squared L2 distance must be >= 0; got {tau}.")
    if normalize:
        d = (2.0 - 2.0 * _cosine_similarity_matrix(f)).clamp_min_(0.0)
    else:
        d = _squared_distance_matrix(f)
    return _finish(d < tau, dtype)


def sne_joint_probabilities(
    f: Tensor, temperature: float = 1.0, *, normalize: bool = False
) -> Tensor:
    r"""Symmetric SNE joint probabilities of a batch (LSD-C, eqs. 1-2).

    Computes, with one shared bandwidth (temperature :math:`T`) for all
    points,

    .. math::

        p_{j|i} = \frac{\exp(-\lVert f_i - f_j\rVert^2 / T^2)}
                       {\sum_{k \ne i} \exp(-\lVert f_i - f_k\rVert^2 / T^2)}
                = \frac{\exp(-\lVert f_i - f_j\rVert^2 / T^2)}{Z_i},
        \qquad p_{i|i} = 0,

    .. math::

        p_{ij} = \frac{p_{j|i} + p_{i|j}}{2}
               = \frac{\exp(-\lVert f_i - f_j\rVert^2 / T^2)}{H(Z_i, Z_j)},

    eqs. (1)-(2) of Rebuffi et al., "LSD-C: Linearly Separable Deep
    Clusters" (2020), with :math:`H` the harmonic mean of the partition
    functions. Hence :math:`p_{ij} = p_{ji}`, :math:`p_{ii} = 0`,
    :math:`0 \le p_{ij} \le 1` and :math:`\sum_{i,j} p_{ij} = B` (each
    conditional distribution sums to one), so the mean off-diagonal value is
    :math:`1/(B-1)`. This is the symmetric SNE of van der Maaten and Hinton
    without their division by the number of points, and with an equal
    variance :math:`T^2/2` for every point.

    Parameters
    ----------
    f : Tensor of shape (B, d)
        Batch of features with :math:`B \ge 2` (detached inside).
    temperature : float, default=1.0
        :math:`T > 0`. Scaling all features by :math:`c` is the same as
        dividing :math:`T` by :math:`c`.
    normalize : bool, default=False
        L2-normalise the features first.

    Returns
    -------
    Tensor of shape (B, B)
        The matrix :math:`(p_{ij})`, in at least float32, on the device of ``f``.

    Raises
    ------
    ValueError
        If ``f`` is not a 2-D floating tensor with at least two rows or
        ``temperature`` is not a positive finite number.

    Notes
    -----
    The conditional probabilities are formed in log space
    (:math:`\log p_{j|i} = -D_{ij}/T^2 - \operatorname{logsumexp}_{k\ne i}(-D_{ik}/T^2)`),
    after shifting each row by its nearest neighbour's :math:`D_{ik}/T^2`, so
    small temperatures or far-apart points neither underflow the denominator
    nor round it at the scale of :math:`D/T^2`.
    """
    f = _check_features(f, min_samples=2)
    t = check_real(temperature, "temperature")
    if t <= 0:
        raise ValueError(f"temperature must be > 0; got {t}.")
    if normalize:
        d = (2.0 - 2.0 * _cosine_similarity_matrix(f)).clamp_min_(0.0)
    else:
        d = _squared_distance_matrix(f)
    logits = -d / (t * t)
    logits.fill_diagonal_(-math.inf)  # k != i in the normaliser, p_{i|i} = 0
    # Shift each row to its nearest neighbour first (exact, and cancels in p_{j|i}): the
    # normaliser is then of order 1, not of order D/T^2, and is rounded at that scale.
    logits -= logits.max(dim=1, keepdim=True).values
    log_cond = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    cond = log_cond.exp()  # cond[i, j] = p_{j|i}
    return (cond + cond.T) / 2


def sne_adjacency(
    f: Tensor, threshold: float, temperature: float = 1.0, *, normalize: bool = False
) -> Tensor:
    r"""Pairwise labels by thresholding symmetric SNE probabilities (LSD-C, eqs. 1-2).

    Implements

    .. math::

        A_{ij} = \mathbb{1}\left[p_{ij} > \tau\right],

    with :math:`p_{ij} = (p_{j|i} + p_{i|j}) / 2` the symmetric SNE
    probability of :func:`sne_joint_probabilities` (eq. 2 of Rebuffi et al.,
    "LSD-C: Linearly Separable Deep Clusters", 2020), and :math:`A_{ii} = 1`
    (a sample is always similar to itself, although :math:`p_{ii} = 0`).

    Parameters
    ----------
    f : Tensor of shape (B, d)
        Batch of features with :math:`B \ge 2` (detached inside).
    threshold : float
        :math:`\tau \ge 0`, compared with a probability :math:`p_{ij} \in
        [0, 1]`: :math:`\tau \ge 1` leaves only the diagonal, and
        :math:`\tau = 0` labels similar every pair whose probability has not
        underflowed to zero. A pair is similar when the mean of
        :math:`p_{j|i}` (the share of :math:`i`'s neighbour distribution on
        :math:`j`) and :math:`p_{i|j}` exceeds :math:`\tau`. Since the mean
        off-diagonal :math:`p_{ij}` is :math:`1/(B-1)`, a useful threshold
        depends on the batch size (the paper uses :math:`\tau = 0.01`). The
        comparison is strict: larger :math:`\tau` gives a subset of the ones.
    temperature : float, default=1.0
        Shared bandwidth :math:`T > 0` of eq. (1).
    normalize : bool, default=False
        L2-normalise the features first.

    Returns
    -------
    Tensor of shape (B, B)
        Symmetric 0/1 adjacency in the dtype and on the device of ``f``.

    Raises
    ------
    ValueError
        For a bad ``f`` (see :func:`sne_joint_probabilities`), a negative or
        non-finite ``threshold`` or a non-positive ``temperature``.
    """
    dtype = f.dtype if isinstance(f, Tensor) else None
    tau = check_real(threshold, "threshold")
    if tau < 0:
        raise ValueError(f"threshold for SNE probabilities must be >= 0; got {tau}.")
    p = sne_joint_probabilities(f, temperature, normalize=normalize)
    return _finish(p > tau, dtype)


def knn_adjacency(f: Tensor, n_neighbors: int) -> Tensor:
    r"""Pairwise labels from symmetrised k-nearest neighbours (LSD-C, Table 1).

    With :math:`\mathcal{N}_k(i)` the :math:`k` samples other than :math:`i`
    with the largest cosine similarity to :math:`f_i`,

    .. math::

        A_{ij} = \mathbb{1}\left[j \in \mathcal{N}_k(i) \ \lor\ i \in \mathcal{N}_k(j)\right],
        \qquad A_{ii} = 1,

    the "kNN" criterion of Table 1 of Rebuffi et al., "LSD-C: Linearly
    Separable Deep Clusters" (2020). Every row has at least
    :math:`\min(k, B-1)` off-diagonal ones.

    Parameters
    ----------
    f : Tensor of shape (B, d)
        Batch of features (detached inside).
    n_neighbors : int
        :math:`k \ge 1`. If :math:`k \ge B` (e.g. a small last batch) every
        pair is labelled similar.

    Returns
    -------
    Tensor of shape (B, B)
        Symmetric 0/1 adjacency in the dtype and on the device of ``f``.

    Raises
    ------
    ValueError
        If ``f`` is not a 2-D floating tensor or ``n_neighbors`` is not an
        integer >= 1.

    Notes
    -----
    Ties are included: every sample whose similarity equals that of the
    k-th neighbour, up to a rounding tolerance of :math:`64\,\epsilon`
    (machine epsilon of the computation dtype, about :math:`7.6 \cdot 10^{-6}`
    in float32), counts as a neighbour. This keeps the result independent
    of the order of the batch (rounding in the matrix product may depend on
    it) and monotone in :math:`k` (a larger :math:`k` gives a superset), at
    the cost of rows with more than :math:`k` ones when there are ties
    (e.g. duplicated samples).
    """
    dtype = f.dtype if isinstance(f, Tensor) else None
    f = _check_features(f)
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral):
        raise ValueError(f"n_neighbors must be an integer >= 1; got {n_neighbors!r}.")
    k = int(n_neighbors)
    if k < 1:
        raise ValueError(f"n_neighbors must be >= 1; got {k}.")
    b = f.shape[0]
    k = min(k, b - 1)
    if k == 0:  # a single sample: only the diagonal
        return _finish(torch.zeros(b, b, dtype=torch.bool, device=f.device), dtype)
    s = _cosine_similarity_matrix(f)
    s.fill_diagonal_(-math.inf)  # self is not one of its own k neighbours
    kth = s.topk(k, dim=1).values[:, -1:]
    # near[i, j]: j is among the k nearest of i, ties (up to rounding) included
    near = s >= kth - _knn_tie_tolerance(s.dtype)
    return _finish(near | near.T, dtype)


def _knn_tie_tolerance(dtype: torch.dtype) -> float:
    return 64 * torch.finfo(dtype).eps


_SIMILARITIES: dict[str, Callable[..., Tensor]] = {
    "cosine": cosine_adjacency,
    "l2": l2_adjacency,
    "sne": sne_adjacency,
    "knn": knn_adjacency,
}


def pairwise_adjacency(f: Tensor, similarity: str, **params: object) -> Tensor:
    r"""Pairwise labels of a batch with a named criterion (LSD-C, Sec. 3.2, Table 1).

    Dispatches to the criterion compared in Table 1 of Rebuffi et al.,
    "LSD-C: Linearly Separable Deep Clusters" (2020):

    ``"cosine"``
        :math:`A_{ij} = 1[\cos(f_i, f_j) > \tau]`; :func:`cosine_adjacency`
        (``threshold``, ``center``).
    ``"l2"``
        :math:`A_{ij} = 1[\lVert f_i - f_j\rVert^2 < \tau]`;
        :func:`l2_adjacency` (``threshold``, ``normalize``).
    ``"sne"``
        :math:`A_{ij} = 1[p_{ij} > \tau]` with :math:`p_{ij}` of eqs. (1)-(2);
        :func:`sne_adjacency` (``threshold``, ``temperature``, ``normalize``).
    ``"knn"``
        :math:`A_{ij} = 1[j \in \mathcal{N}_k(i) \lor i \in \mathcal{N}_k(j)]`;
        :func:`knn_adjacency` (``n_neighbors``).

    In every case ``A`` is symmetric, 0/1 and has ones on the diagonal.

    Parameters
    ----------
    f : Tensor of shape (B, d)
        Batch of features.
    similarity : {"cosine", "l2", "sne", "knn"}
        Name of the criterion (case-insensitive).
    **params
        Keyword parameters of the chosen function.

    Returns
    -------
    Tensor of shape (B, B)
        The adjacency matrix.

    Raises
    ------
    ValueError
        For an unknown ``similarity``, missing or unexpected parameters, or
        anything the chosen function rejects.
    """
    if not isinstance(similarity, str) or similarity.lower() not in _SIMILARITIES:
        raise ValueError(
            f"unknown similarity {similarity!r}; accepted names are "
            + ", ".join(repr(name) for name in _SIMILARITIES)
            + "."
        )
    fn = _SIMILARITIES[similarity.lower()]
    sig = inspect.signature(fn)
    accepted = [name for name in sig.parameters if name != "f"]
    try:
        sig.bind(f, **params)
    except TypeError as exc:
        raise ValueError(
            f"bad parameters {sorted(params)} for similarity {similarity!r}: {exc}. "
            f"It accepts: {', '.join(accepted)}."
        ) from None
    return fn(f, **params)


def _similar_fraction(batches: list[Tensor], similarity: str, params: dict) -> float:
    """Share of the off-diagonal pairs of ``batches`` that ``similarity`` labels similar."""
    similar = total = 0.0
    for f in batches:
        b = f.shape[0]
        similar += float(pairwise_adjacency(f, similarity, **params).sum()) - b
        total += b * (b - 1)
    return similar / total


def calibrated_parameter(similarity: str) -> str:
    """Name of the parameter :func:`calibrate_similarity` finds: ``n_neighbors`` for ``"knn"``,
    ``threshold`` for the other criteria."""
    return "n_neighbors" if similarity.lower() == "knn" else "threshold"


def calibrate_similarity(
    batches: list[Tensor], similarity: str, fraction: float, *, n_steps: int = 40, **params: object
) -> float | int:
    r"""The threshold (or ``k``) that labels ``fraction`` of the pairs of ``batches`` similar.

    Every criterion of :func:`pairwise_adjacency` is monotone in its parameter (more pairs as the
    cosine or SNE threshold falls, as the L2 threshold or ``k`` grows), so the value is found by
    bisection on the share of similar off-diagonal pairs over the given batches. With
    ``fraction = 1 / K`` the labels match the share of same-cluster pairs of ``K`` equal clusters,
    whatever the scale of the features, which a fixed threshold cannot do (a squared distance of
    40 is tight for one backbone and labels every pair similar for another).

    Parameters
    ----------
    batches : list of Tensor of shape (B, d)
        Batches of features, as the criterion will see them (e.g. random batches of the data).
    similarity : {"cosine", "l2", "sne", "knn"}
    fraction : float
        Target share of similar pairs, in ``(0, 1)``.
    n_steps : int, default=40
        Bisection steps for the real thresholds.
    **params
        The criterion's other parameters (``center``, ``temperature``, ``normalize``).

    Returns
    -------
    float or int
        The cosine / SNE threshold, the squared-distance threshold (similar share at least
        ``fraction``, as close as the bisection gets), or for ``"knn"`` the smallest ``k`` whose
        share reaches ``fraction`` (capped at ``B - 1``).

    Warns
    -----
    UserWarning
        When no value gets within a factor 1.5 of ``fraction`` (e.g. SNE with a squared
        temperature :math:`T^2` far below the squared distances: its probabilities underflow to
        zero beyond each sample's nearest neighbour), naming the share reached.
    """
    fraction = check_real(fraction, "fraction")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1); got {fraction}.")
    if not batches:
        raise ValueError("batches must hold at least one batch of features.")
    name = similarity.lower() if isinstance(similarity, str) else similarity
    value = _bisect_similarity(batches, name, fraction, n_steps, params)
    key = calibrated_parameter(name)
    reached = _similar_fraction(batches, name, {**params, key: value})
    if not fraction / 1.5 <= reached <= fraction * 1.5:
        warnings.warn(
            f"calibrating {name!r}: no {key} labels {fraction:.3g} of the pairs "
            f"similar; {key}={value:.4g} gives {reached:.3g}"
            + (
                " (raise the SNE temperature: T² towards the squared distances)"
                if name == "sne"
                else ""
            ),
            UserWarning,
            stacklevel=2,
        )
    return value


def _bisect_similarity(
    batches: list[Tensor], name: str, fraction: float, n_steps: int, params: dict
) -> float | int:
    """The search behind :func:`calibrate_similarity` (``name`` lower case)."""
    if name == "knn":
        smallest = min(f.shape[0] for f in batches)
        for k in range(1, smallest - 1):
            if _similar_fraction(batches, name, {**params, "n_neighbors": k}) >= fraction:
                return k
        return max(1, smallest - 1)

    def share(tau: float) -> float:
        return _similar_fraction(batches, name, {**params, "threshold": tau})

    if name == "l2":  # share grows with tau: find the smallest tau reaching the fraction
        lo, hi = 0.0, 1.0
        while share(hi) < fraction and hi < 1e30:
            lo, hi = hi, hi * 4.0
        for _ in range(n_steps):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if share(mid) < fraction else (lo, mid)
        return hi
    if name == "sne":  # probabilities span many decades: bisect on log10(tau) in [-300, 0]
        lo, hi = -300.0, 0.0
        for _ in range(n_steps + 10):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if share(10.0**mid) >= fraction else (lo, mid)
        return 10.0**lo
    lo, hi = -1.0, 1.0  # cosine: the share falls as tau grows
    for _ in range(n_steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if share(mid) >= fraction else (lo, mid)
    return lo
