"""Loss functions, one per paper equation, as pure functions of tensors.

No estimator state lives here: every function takes tensors and returns tensors, so each can be
property-tested and reused on its own.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validation import (
    check_float_matrix,
    check_number,
    check_real,
    check_same_shape,
    checking_values,
)

# SimCLR


def nt_xent(z_a: Tensor, z_b: Tensor, temperature: float = 0.5) -> Tensor:
    """Normalised temperature-scaled cross-entropy (SimCLR, Chen et al. 2020, eq. 1).

    For the 2N projections of N pairs of views, with ``sim(u, v) = u.v / (|u| |v|)``::

        l(i, j) = -log exp(sim(z_i, z_j) / t) / sum_{k != i} exp(sim(z_i, z_k) / t)

    averaged over all 2N ordered positive pairs ``(i, j)``.

    Parameters
    ----------
    z_a, z_b : Tensor of shape (N, D)
        Projections of the two views; row ``i`` of each comes from the same sample.
    temperature : float
        ``t > 0``.

    Returns
    -------
    Tensor
        Scalar loss in float32. It equals ``log(2N - 1)`` when all projections are identical, and
        ``log(1 + (2N - 2) exp(-1 / t))`` when the two views of each pair coincide and the N pairs
        are mutually orthogonal.

    Raises
    ------
    ValueError
        If ``z_a`` and ``z_b`` are not 2-D of one shape, or ``temperature`` is not a finite number
        ``> 0``.
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(
            f"z_a and z_b must both be (N, D); got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    temperature = check_number(temperature, "temperature", 0.0, low_open=True, high_open=True)
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)


# Shared terms
# ------------
# Pieces that several methods' objectives are built from.

_INFO_NCE_SIMILARITIES = ("cosine", "dot")


def marginal_entropy(probs: Tensor) -> Tensor:
    r"""Entropy of the batch-mean cluster assignment, in nats.

    With :math:`p_i` the cluster distribution of sample :math:`i` of a batch of :math:`N`,

    .. math::

        \bar p = \frac{1}{N} \sum_{i=1}^{N} p_i, \qquad
        H(\bar p) = -\sum_{k=1}^{K} \bar p_k \log \bar p_k,

    the entropy term of SCAN's eq. (2) (Van Gansbeke et al., ECCV 2020, where
    :math:`\bar p` is written :math:`\Phi'`) and of C2BIN's eq. (5) (which
    prints the summed mass :math:`s_k = \sum_i p_{ik}`; normalised here to the
    mean so that :math:`H` is an entropy, a reconstruction). It is largest,
    :math:`\log K`, when the batch uses every cluster equally and zero when
    every sample sits in the same single cluster, so a bonus on it spreads the
    samples over the clusters.

    Parameters
    ----------
    probs : Tensor of shape (N, K)
        Soft assignments, one probability vector per row (e.g. a softmax over
        the cluster axis). The values are not checked.

    Returns
    -------
    Tensor
        Scalar (0-d) in the dtype of ``probs`` promoted to at least float32,
        in :math:`[0, \log K]` for rows on the probability simplex.

    Raises
    ------
    ValueError
        If ``probs`` is not a 2-D floating tensor with at least one row and
        one column.

    Notes
    -----
    :math:`\bar p_k` is floored at :math:`10^{-12}` inside the logarithm
    only, so an empty cluster contributes :math:`0` (the limit of
    :math:`x \log x`) with a finite gradient. The value is invariant to
    permuting the rows (samples) and to permuting the columns (clusters).
    """
    check_float_matrix(probs, "probs", "(N, K)", "one probability vector over K clusters per row")
    mean_p = probs.to(torch.promote_types(probs.dtype, torch.float32)).mean(0)
    return -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()


def info_nce(
    anchors: Tensor,
    candidates: Tensor,
    temperature: float,
    similarity: str = "cosine",
    groups: Tensor | None = None,
) -> Tensor:
    r"""One-directional InfoNCE: each anchor picks its own candidate out of the batch.

    Row :math:`i` of ``candidates`` is the positive of anchor :math:`a_i` and
    every other row :math:`c_j` (:math:`j \ne i`) is one of its negatives:

    .. math::

        \mathcal{L} = -\frac{1}{N} \sum_{i=1}^{N} \log
            \frac{\exp(s(a_i, c_i) / \tau)}{\sum_{j=1}^{N} \exp(s(a_i, c_j) / \tau)},

    with :math:`s(a, c) = a^\top c / (\lVert a\rVert \lVert c\rVert)`
    (``"cosine"``) or :math:`s(a, c) = a^\top c` (``"dot"``). The positive is
    part of the denominator, and there are no negatives from the anchors' own
    side (unlike :func:`nt_xent`). This is the form of eq. (5) (rows of
    assignment features, dot product as printed) and eq. (8) (columns of
    assignment probabilities, i.e. ``info_nce(P.T, P_aug.T, ...)``) of Zhong
    et al., "Deep Robust Clustering by Contrastive Learning" (DRC).

    Parameters
    ----------
    anchors : Tensor of shape (N, D)
        Anchors :math:`a_i`, one per row.
    candidates : Tensor of shape (N, D)
        Candidates :math:`c_j`; row :math:`i` is the positive of anchor
        :math:`i`. Gradients flow into both arguments; detach one to use it
        as a fixed target.
    temperature : float
        :math:`\tau > 0`.
    similarity : {"cosine", "dot"}, default="cosine"
        :math:`s`. Under ``"cosine"`` every row is L2-normalised first, and a
        zero row has similarity 0 with every other row.
    groups : Tensor of shape (N,) or None, default=None
        Integer group of each row (e.g. the sample a repeated copy comes
        from). Candidates of the anchor's group other than its positive are
        left out of its denominator: they are copies of the same sample, not
        negatives. None: every other row is a negative (the formula above).

    Returns
    -------
    Tensor
        Scalar (0-d), in float32 for half-precision inputs (bfloat16 and
        float16 are upcast), else in the dtype of the inputs.

    Raises
    ------
    ValueError
        If the inputs are not 2-D floating tensors of one shape,
        ``temperature`` is not a finite number ``> 0``, or ``similarity`` is
        not one of ``"cosine"``, ``"dot"``.

    Notes
    -----
    Computed with a log-softmax over each anchor's row of logits, so large
    similarities or small temperatures do not overflow. Closed forms:
    :math:`\log N` when all rows of ``candidates`` are identical, and
    :math:`\log(1 + (N - 1) e^{-1/\tau})` under ``"cosine"`` when
    ``anchors`` and ``candidates`` are the same :math:`N` mutually orthogonal
    rows. Under ``"cosine"`` the loss is invariant to a positive rescaling of
    each row of either argument; under ``"dot"`` scaling both arguments by
    :math:`c` is the same as dividing :math:`\tau` by :math:`c^2`.
    """
    check_float_matrix(anchors, "anchors", "(N, D)", "one anchor vector per row")
    check_float_matrix(candidates, "candidates", "(N, D)", "the positive of anchor i in row i")
    check_same_shape(anchors, candidates, "anchors and candidates", "(N, D)")
    temperature = check_number(temperature, "temperature", 0.0, low_open=True, high_open=True)
    if similarity not in _INFO_NCE_SIMILARITIES:
        raise ValueError(
            f"similarity must be one of {', '.join(map(repr, _INFO_NCE_SIMILARITIES))}; "
            f"got {similarity!r}."
        )
    dtype = torch.promote_types(torch.promote_types(anchors.dtype, candidates.dtype), torch.float32)
    a, c = anchors.to(dtype), candidates.to(dtype)
    if similarity == "cosine":
        a, c = F.normalize(a, dim=1), F.normalize(c, dim=1)
    logits = a @ c.T / temperature
    if groups is not None:
        if groups.shape != (len(a),):
            raise ValueError(f"groups must have shape ({len(a)},), got {tuple(groups.shape)}")
        same = groups.unsqueeze(0) == groups.unsqueeze(1)
        same.fill_diagonal_(False)  # the positive stays
        logits = logits.masked_fill(same, float("-inf"))
    log_probs = F.log_softmax(logits, dim=1)
    return -log_probs.diagonal().mean()


# SCAN


class SCANLoss(NamedTuple):
    """The SCAN objective and its two terms (each a scalar tensor)."""

    total: Tensor
    consistency: Tensor
    entropy: Tensor


def scan_loss(
    anchor_logits: Tensor, neighbor_logits: Tensor, entropy_weight: float = 5.0
) -> SCANLoss:
    """SCAN clustering loss (Van Gansbeke et al., ECCV 2020, eq. 2).

    With ``Phi(X)`` the soft assignments (softmax of the logits) of anchors ``X`` and of one mined
    neighbour ``k`` of each::

        L = -1/|D| sum_X log <Phi(X), Phi(k)>  +  lambda * sum_c Phi'^c log Phi'^c,
        Phi'^c = 1/|D| sum_X Phi^c(X)

    The first term makes neighbours agree (computed in the log domain, so it stays finite when
    the two distributions barely overlap); the second is the negative entropy of the mean
    assignment (:func:`marginal_entropy`), which spreads samples over the clusters.
    ``total = consistency - weight * entropy``.

    Parameters
    ----------
    anchor_logits, neighbor_logits : Tensor of shape (N, K)
        Cluster logits of the anchors and of their neighbours.
    entropy_weight : float
        ``lambda >= 0``.

    Returns
    -------
    SCANLoss
        ``(total, consistency, entropy)``; entropy of the mean anchor assignment, in nats.
    """
    if anchor_logits.shape != neighbor_logits.shape or anchor_logits.ndim != 2:
        raise ValueError(
            "anchor_logits and neighbor_logits must both be (N, K); got "
            f"{tuple(anchor_logits.shape)} and {tuple(neighbor_logits.shape)}"
        )
    log_p_anchor = F.log_softmax(anchor_logits.float(), dim=1)
    log_p_neighbor = F.log_softmax(neighbor_logits.float(), dim=1)
    consistency = -torch.logsumexp(log_p_anchor + log_p_neighbor, dim=1).mean()
    entropy = marginal_entropy(log_p_anchor.exp())
    return SCANLoss(consistency - entropy_weight * entropy, consistency, entropy)


def self_label_loss(strong_logits: Tensor, weak_probs: Tensor, threshold: float = 0.99) -> Tensor:
    """SCAN self-labelling loss (Sec. 2.3): class-balanced cross-entropy on confident samples.

    A sample is confident when ``max_c p_c(weak view) > threshold``; its pseudo-label is
    ``argmax_c p_c``. The loss is the cross-entropy of the strong view's logits against the
    pseudo-labels, each class weighted by the inverse of its share among the batch's confident
    samples (weights normalised to mean 1 over the classes present)::

        L = sum_{i confident} w_{y_i} CE(strong_i, y_i) / sum_{i confident} w_{y_i}

    Returns a zero that keeps the graph when no sample is confident.

    Parameters
    ----------
    strong_logits : Tensor of shape (N, K)
        Logits of the strongly augmented view.
    weak_probs : Tensor of shape (N, K)
        Probabilities of the weak view (no gradient needed).
    threshold : float
        Confidence threshold in ``[0, 1)``.
    """
    if strong_logits.shape != weak_probs.shape or strong_logits.ndim != 2:
        raise ValueError(
            "strong_logits and weak_probs must both be (N, K); got "
            f"{tuple(strong_logits.shape)} and {tuple(weak_probs.shape)}"
        )
    confidence, targets = weak_probs.detach().max(1)
    confident = (confidence > threshold).float()
    # no boolean indexing and no test of "any confident sample": each a host sync on a GPU.
    # The weighted mean over the confident samples, written out, is the same number.
    k = strong_logits.shape[1]
    counts = torch.zeros(k, device=confident.device).scatter_add_(0, targets, confident)
    present = counts > 0
    class_weights = torch.where(
        present, counts.sum() / (present.sum() * counts.clamp_min(1)), counts.new_zeros(())
    )
    sample_weights = confident * class_weights[targets]
    losses = F.cross_entropy(strong_logits.float(), targets, reduction="none")
    # 0 (with a zero gradient) when no sample is confident
    return (sample_weights * losses).sum() / sample_weights.sum().clamp_min(1e-12)


# C2BIN
# -----
# "Learning Representations by Contrasting Clusters While Bootstrapping Instances" (ICLR 2021
# submission). The PDF text garbles eqs. (1) and (4): both are reconstructed from the prose.


def c2bin_alignment_loss(prediction: Tensor, target: Tensor) -> Tensor:
    r"""Instance alignment of C2BIN, eq. (1) (reconstructed): the mean cosine distance.

    .. math::

        \mathcal{L}_{\text{align}} = \frac{1}{B} \sum_{i=1}^{B}
            \Big[1 - \frac{q_i^\top \bar z_i}{\lVert q_i\rVert\,\lVert \bar z_i\rVert}\Big],

    with :math:`q_i` the runner's prediction of one view and :math:`\bar z_i` the follower's
    projection of the other view (BYOL-style bootstrapping, no negatives). The printed equation is
    unreadable; the text calls it the cosine distance "motivated from" BYOL, whose
    :math:`\lVert \hat q - \hat z\rVert^2 = 2 - 2\cos` is twice this value.

    Parameters
    ----------
    prediction : Tensor of shape (B, d)
        Runner predictions (gradient flows into them).
    target : Tensor of shape (B, d)
        Follower projections; detached here (the follower gets no gradient).

    Returns
    -------
    Tensor
        Scalar in :math:`[0, 2]`, at least float32; 0 when every pair points the same way.
    """
    check_same_shape(prediction, target, "prediction and target", "(B, d)")
    dtype = torch.promote_types(prediction.dtype, torch.float32)
    cos = F.cosine_similarity(prediction.to(dtype), target.detach().to(dtype), dim=1, eps=1e-8)
    return (1.0 - cos).mean()


class C2BINClusterLoss(NamedTuple):
    """C2BIN's cluster loss of one head, eq. (5), and its two terms (scalar tensors)."""

    total: Tensor
    contrast: Tensor
    entropy: Tensor


def c2bin_cluster_loss(
    logits_a: Tensor,
    logits_b: Tensor,
    temperature: float = 1.0,
    entropy_weight: float = 1.0,
    contrast: str = "nt_xent",
) -> C2BINClusterLoss:
    r"""Contrast of batch-wise cluster assignments of one head, C2BIN eqs. (2)-(5).

    With :math:`P' = \operatorname{softmax}(\text{logits}_a)` and :math:`P''` the same of the
    other view (``B x K``), column :math:`c'_k = P'_{:,k} \in \mathbb{R}^B` is the batch-wise
    cluster assignment (BCA) of cluster :math:`k` (eq. 3). Eq. (4) (reconstructed) contrasts the
    columns with cosine similarity :math:`\hat c = c / \lVert c \rVert`: the same cluster in the
    other view is the positive, the other clusters' columns the negatives.

    - ``contrast="nt_xent"`` (Reading A of the spec): NT-Xent over the :math:`2K` columns, each
      column's negatives being the other :math:`2K - 2` columns of both views,
      :func:`nt_xent` of :math:`P'^\top, P''^\top`;
    - ``contrast="cross_view"`` (Reading B, PICA's form): negatives from the other view only,
      :func:`info_nce` of :math:`P'^\top` against :math:`P''^\top`.

    Eq. (5) subtracts the entropy of the batch's mean assignment, averaged over the two views:

    .. math::

        \mathcal{L}^{(K)} = \mathcal{L}_{\text{bca}}
            - \lambda_{\text{ent}} \tfrac12 \big[H(\bar p') + H(\bar p'')\big]

    (:func:`marginal_entropy`). Uniform columns give :math:`\mathcal{L}_{\text{bca}} = \log(2K-1)`
    (``"nt_xent"``) or :math:`\log K` (``"cross_view"``).

    Parameters
    ----------
    logits_a, logits_b : Tensor of shape (B, K)
        One head's logits for the two views of the same samples.
    temperature : float, default=1.0
        :math:`\tau > 0`.
    entropy_weight : float, default=1.0
        :math:`\lambda_{\text{ent}} \ge 0`.
    contrast : {"nt_xent", "cross_view"}, default="nt_xent"

    Returns
    -------
    C2BINClusterLoss
        ``(total, contrast, entropy)``; the entropy in nats.
    """
    check_same_shape(logits_a, logits_b, "logits_a and logits_b", "(B, K)")
    if contrast not in ("nt_xent", "cross_view"):
        raise ValueError(f"contrast must be 'nt_xent' or 'cross_view', got {contrast!r}")
    check_number(entropy_weight, "entropy_weight")
    p_a = torch.softmax(logits_a.float(), dim=1)
    p_b = torch.softmax(logits_b.float(), dim=1)
    if contrast == "nt_xent":
        bca = nt_xent(p_a.T, p_b.T, temperature)
    else:
        bca = info_nce(p_a.T, p_b.T, temperature)
    entropy = 0.5 * (marginal_entropy(p_a) + marginal_entropy(p_b))
    return C2BINClusterLoss(bca - entropy_weight * entropy, bca, entropy)


# DRC
# ---
# Zhong, Chen, Jin and Hua, "Deep Robust Clustering by Contrastive Learning". Theorem 1's eq. (3)
# prints its loss without the minus sign; eqs. (5) and (8) carry it, as here.


def drc_feature_loss(
    features: Tensor,
    features_aug: Tensor,
    temperature: float = 0.5,
    similarity: str = "dot",
    groups: Tensor | None = None,
) -> Tensor:
    r"""Assignment-feature contrast of DRC, eq. (5): instance level, over the logits.

    .. math::

        \mathcal{L}_{AF} = -\frac{1}{N} \sum_{i=1}^{N} \log
            \frac{\exp(z_i^\top z'_i / T_{AF})}{\sum_{j=1}^{N} \exp(z_i^\top z'_j / T_{AF})},

    :func:`info_nce` of the assignment features (the ``K`` logits) :math:`Z` of the original
    views against :math:`Z'` of the augmented views: one-directional, the positive in the
    denominator. The paper prints a raw dot product (``similarity="dot"``), which scaling the
    logits up keeps lowering; ``"cosine"`` normalises them.

    Parameters
    ----------
    features, features_aug : Tensor of shape (N, K)
        Logits of the original and of the augmented views (row ``i`` the same sample).
    temperature : float, default=0.5
        :math:`T_{AF}`.
    similarity : {"dot", "cosine"}, default="dot"
    groups : Tensor of shape (N,) or None, default=None
        The sample each row is a copy of, when the batch repeats its samples (the paper's
        repetition): the other copies of row ``i``'s sample are then left out of its
        denominator, since they are not negatives. The paper does not (None).

    Returns
    -------
    Tensor
        Scalar, ``>= 0``; :math:`\log N` when the rows of ``features_aug`` are all equal.
    """
    return info_nce(features, features_aug, temperature, similarity, groups)


def drc_probability_loss(
    probs: Tensor, probs_aug: Tensor, temperature: float = 0.95, similarity: str = "cosine"
) -> Tensor:
    r"""Assignment-probability contrast of DRC, eq. (8): cluster level, over the columns.

    .. math::

        \mathcal{L}_{AP} = -\frac{1}{K} \sum_{k=1}^{K} \log
            \frac{\exp(s(q_k, q'_k) / T_{AP})}{\sum_{j=1}^{K} \exp(s(q_k, q'_j) / T_{AP})},

    with :math:`q_k = P_{:,k}` the column of cluster :math:`k` over the batch: :func:`info_nce` of
    :math:`P^\top` against :math:`P'^\top`. The text writes a dot product; the similarity is
    reconstructed as the cosine (``similarity="cosine"``), since :math:`T_{AP} = 0.95` only makes
    sense for similarities of order one and raw dot products of columns saturate the loss.

    Parameters
    ----------
    probs, probs_aug : Tensor of shape (N, K)
        Assignment probabilities (softmax of the logits) of the original and augmented views.
    temperature : float, default=0.95
        :math:`T_{AP}`.
    similarity : {"cosine", "dot"}, default="cosine"

    Returns
    -------
    Tensor
        Scalar; :math:`\log K` for identical (e.g. uniform) columns, and in
        :math:`[\log(1 + (K-1)e^{-1/T}), \log(1 + (K-1)e^{1/T})]` under the cosine.
    """
    check_same_shape(probs, probs_aug, "probs and probs_aug", "(N, K)")
    return info_nce(probs.T, probs_aug.T, temperature, similarity)


def drc_cluster_regularization(probs: Tensor) -> Tensor:
    r"""Cluster regularisation of DRC, eq. (9): the squared norm of the cluster sizes over N.

    .. math::

        \mathcal{L}_{CR} = \frac{1}{N} \sum_{k=1}^{K} \Big(\sum_{j=1}^{N} P_{jk}\Big)^2
            = \frac{\lVert 1^\top P \rVert^2}{N} \in \Big[\frac{N}{K}, N\Big],

    smallest for balanced clusters (:math:`N/K`), largest when one cluster takes every sample
    (:math:`N`). The value grows with :math:`N` but its gradient, :math:`2 s_k / N` for every
    entry of column :math:`k` (:math:`s_k` the size of cluster :math:`k`), does not.

    Parameters
    ----------
    probs : Tensor of shape (N, K)
        Assignment probabilities (rows on the simplex).

    Returns
    -------
    Tensor
        Scalar, at least float32.
    """
    check_float_matrix(probs, "probs", "(N, K)", "one probability vector over K clusters per row")
    sizes = probs.to(torch.promote_types(probs.dtype, torch.float32)).sum(0)
    return sizes.square().sum() / probs.shape[0]


# LSD-C
# -----
# Rebuffi, Ehrhardt, Han, Vedaldi and Zisserman, "LSD-C: Linearly Separable
# Deep Clusters" (2020). Helpers prefixed ``_lsdc_`` are private to this group.


def _lsdc_check_probs(probs: Tensor, name: str) -> None:
    check_float_matrix(probs, name, "(N, K)", "one probability vector over K clusters per row")


def lsdc_pairwise_bce(
    probs_a: Tensor, probs_b: Tensor, adjacency: Tensor, *, eps: float = 1e-7
) -> Tensor:
    r"""Pairwise binary cross-entropy of LSD-C, eq. (5).

    With :math:`s_{ij} = p_i^\top p'_j` the probability that sample
    :math:`i` (cluster distribution :math:`p_i`) and sample :math:`j`
    (:math:`p'_j`) fall in the same cluster, eq. (5) of Rebuffi et al.,
    "LSD-C: Linearly Separable Deep Clusters" (2020) is

    .. math::

        \mathcal{L}_{\text{BCE}} = -\frac{1}{N M} \sum_{i=1}^{N} \sum_{j=1}^{M}
            \Big[ A_{ij} \log s_{ij} + (1 - A_{ij}) \log (1 - s_{ij}) \Big],

    the mean over all :math:`N \times M` pairs (:math:`N^2` in the paper,
    where both sides are the same batch or its augmented/composite version).
    It is computed as

    .. math::

        -\frac{1}{N M} \sum_{i,j} \Big[ A_{ij} \log (\hat s_{ij} + \epsilon)
            + (1 - A_{ij}) \log (1 - \hat s_{ij} + \epsilon) \Big],

    with :math:`\hat s_{ij}` the value of :math:`s_{ij}` clipped to
    :math:`[0, 1]` (see ``eps``).

    Parameters
    ----------
    probs_a : Tensor of shape (N, K)
        Cluster probabilities :math:`p_i` (rows are softmax outputs).
    probs_b : Tensor of shape (M, K)
        Cluster probabilities :math:`p'_j` of the second view, e.g. the
        augmented or composite batch.
    adjacency : Tensor of shape (N, M)
        Target :math:`A_{ij}`. Either hard 0/1 pairwise labels (see
        :mod:`skdeepcluster.pairwise_labels`) or soft targets in :math:`[0, 1]`
        (see :func:`skdeepcluster.mixing.composite_targets`). With soft
        targets the minimum of the loss is (up to terms of order
        :math:`\epsilon`) the mean binary entropy of the targets, not zero.
        The target gets no gradient.
    eps : float, default=1e-7
        :math:`\epsilon`, added inside both logarithms so that they stay
        finite when :math:`s_{ij}` is exactly 0 or 1, while the gradient
        stays non-zero there: a confidently wrong pair (:math:`s_{ij} \approx 0`
        with :math:`A_{ij} = 1`, or :math:`s_{ij} \approx 1` with
        :math:`A_{ij} = 0`) is pushed towards its target with
        :math:`\partial \mathcal{L} / \partial s_{ij}` of order
        :math:`1 / (N M \epsilon)`. The clip of :math:`s_{ij}` to
        :math:`[0, 1]` only guards against rounding (a product of two
        probability vectors can come out a few ulps above 1); its gradient is
        passed straight through. Must lie in :math:`(0, 0.5)`. With hard
        targets the smallest value of the loss is
        :math:`-\log(1 + \epsilon) \approx -\epsilon`, reached by one-hot
        predictions consistent with :math:`A`.

    Returns
    -------
    Tensor
        Scalar loss (0-d), in at least float32.

    Raises
    ------
    ValueError
        If the shapes disagree, a tensor is not floating point, ``eps`` is
        not a number in :math:`(0, 0.5)`, or ``adjacency`` has values outside
        :math:`[0, 1]`.

    Notes
    -----
    The loss is invariant to relabelling the clusters (the same permutation
    of the columns of ``probs_a`` and ``probs_b``), since it depends on the
    probabilities only through the inner products :math:`s_{ij}`.
    """
    _lsdc_check_probs(probs_a, "probs_a")
    _lsdc_check_probs(probs_b, "probs_b")
    if probs_a.shape[1] != probs_b.shape[1]:
        raise ValueError(
            "probs_a and probs_b must have the same number of clusters K; "
            f"got shapes {tuple(probs_a.shape)} and {tuple(probs_b.shape)}."
        )
    if not isinstance(adjacency, Tensor):
        raise ValueError(f"adjacency must be a torch.Tensor; got {type(adjacency).__name__}.")
    expected = (probs_a.shape[0], probs_b.shape[0])
    if tuple(adjacency.shape) != expected:
        raise ValueError(
            f"adjacency must have shape (N, M) = {expected} (rows match probs_a, columns "
            f"probs_b); got {tuple(adjacency.shape)}."
        )
    eps = check_number(eps, "eps", 0.0, 0.5, low_open=True, high_open=True)
    dtype = torch.promote_types(torch.promote_types(probs_a.dtype, probs_b.dtype), torch.float32)
    target = adjacency.detach().to(dtype)
    if checking_values() and bool(((target < 0) | (target > 1) | torch.isnan(target)).any()):
        raise ValueError("adjacency values must lie in [0, 1] (hard 0/1 labels or soft targets).")
    s = probs_a.to(dtype) @ probs_b.to(dtype).T
    s = s + (s.clamp(0.0, 1.0) - s).detach()  # value clipped to [0, 1], gradient of s itself
    # (1 - s) is exact for s near 1, where the second log matters, so no log1p here
    loss = -(target * torch.log(s + eps) + (1.0 - target) * torch.log((1.0 - s) + eps))
    return loss.mean()


def consistency_mse(probs_a: Tensor, probs_b: Tensor) -> Tensor:
    r"""Consistency (mean squared error) loss of LSD-C, eq. (8).

    Eq. (8) of Rebuffi et al., "LSD-C: Linearly Separable Deep Clusters"
    (2020) asks the predictions of a sample and of its augmented version to
    agree. We implement

    .. math::

        \mathcal{L}_{\text{MSE}} = \frac{1}{N K} \sum_{i=1}^{N}
            \lVert p_i - p'_i \rVert_2^2,

    i.e. the mean over the batch **and** over the :math:`K` clusters (the
    element-wise mean, like ``torch.nn.functional.mse_loss`` with its default
    reduction). The version summed over clusters is :math:`K` times larger,
    so a weight :math:`\lambda` tuned for one convention must be scaled by
    :math:`K` for the other.

    Parameters
    ----------
    probs_a : Tensor of shape (N, K)
        Cluster probabilities :math:`p_i` of the batch.
    probs_b : Tensor of shape (N, K)
        Cluster probabilities :math:`p'_i` of the augmented batch. Gradients
        flow into both arguments; detach one of them to use it as a fixed
        target.

    Returns
    -------
    Tensor
        Scalar loss (0-d).

    Raises
    ------
    ValueError
        If the arguments are not 2-D floating tensors of the same shape.
    """
    _lsdc_check_probs(probs_a, "probs_a")
    _lsdc_check_probs(probs_b, "probs_b")
    if probs_a.shape != probs_b.shape:
        raise ValueError(
            "probs_a and probs_b must have the same shape (N, K); "
            f"got {tuple(probs_a.shape)} and {tuple(probs_b.shape)}."
        )
    return (probs_a - probs_b).pow(2).mean()


def rampup_weight(step: float, rampup_steps: float, max_weight: float) -> float:
    r"""Sigmoid-shaped ramp-up of the consistency weight used by LSD-C.

    The weight of the consistency loss (eq. 8) in Rebuffi et al., "LSD-C:
    Linearly Separable Deep Clusters" (2020) is ramped up as

    .. math::

        \omega(t) = \begin{cases}
            \lambda \exp\!\left(-5 \left(1 - t / T\right)^2\right) & 0 \le t < T, \\
            \lambda & t \ge T,
        \end{cases}

    (the ramp-up of Laine and Aila's temporal ensembling, 2017), with
    :math:`t` clipped at 0 from below, so :math:`\omega(0) = \lambda
    e^{-5}` and :math:`\omega(T) = \lambda`. :math:`T = 0` means no ramp-up
    (:math:`\omega \equiv \lambda`).

    Parameters
    ----------
    step : float
        Current step or epoch :math:`t` (fractional values allowed; negative
        values count as 0).
    rampup_steps : float
        Length :math:`T \ge 0` of the ramp-up, in the same unit as ``step``.
    max_weight : float
        Final weight :math:`\lambda \ge 0`.

    Returns
    -------
    float
        :math:`\omega(t)`.

    Raises
    ------
    ValueError
        If an argument is not a finite real number, or ``rampup_steps`` or
        ``max_weight`` is negative.
    """
    t = check_real(step, "step")
    big_t = check_number(rampup_steps, "rampup_steps", 0.0, high_open=True)
    lam = check_number(max_weight, "max_weight", 0.0, high_open=True)
    t = max(t, 0.0)
    if big_t == 0 or t >= big_t:
        return lam
    phase = 1.0 - t / big_t
    return lam * math.exp(-5.0 * phase * phase)
