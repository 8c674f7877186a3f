"""Loss functions, one per paper equation, as pure functions of tensors.

No estimator state lives here: every function takes tensors and returns tensors, so each can be
property-tested and reused on its own.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

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
        Scalar loss, bounded below by ``-log(...)`` of the best case and equal to ``log(2N - 1)``
        when all projections are identical.
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"z_a and z_b must both be (N, D); got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)


# SCAN


class SCANLoss(NamedTuple):
    """The SCAN objective and its two terms (each a scalar tensor)."""

    total: Tensor
    consistency: Tensor
    entropy: Tensor


def scan_loss(anchor_logits: Tensor, neighbor_logits: Tensor, entropy_weight: float = 5.0) -> SCANLoss:
    """SCAN clustering loss (Van Gansbeke et al., ECCV 2020, eq. 2).

    With ``Phi(X)`` the soft assignments (softmax of the logits) of anchors ``X`` and of one mined
    neighbour ``k`` of each::

        L = -1/|D| sum_X log <Phi(X), Phi(k)>  +  lambda * sum_c Phi'^c log Phi'^c,
        Phi'^c = 1/|D| sum_X Phi^c(X)

    The first term makes neighbours agree (computed in the log domain, so it stays finite when
    the two distributions barely overlap); the second is the negative entropy of the mean
    assignment, which spreads samples over the clusters. ``total = consistency - weight * entropy``.

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
        raise ValueError("anchor_logits and neighbor_logits must both be (N, K); got "
                         f"{tuple(anchor_logits.shape)} and {tuple(neighbor_logits.shape)}")
    log_p_anchor = F.log_softmax(anchor_logits.float(), dim=1)
    log_p_neighbor = F.log_softmax(neighbor_logits.float(), dim=1)
    consistency = -torch.logsumexp(log_p_anchor + log_p_neighbor, dim=1).mean()
    mean_p = log_p_anchor.exp().mean(0)
    entropy = -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()
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
        raise ValueError("strong_logits and weak_probs must both be (N, K); got "
                         f"{tuple(strong_logits.shape)} and {tuple(weak_probs.shape)}")
    confidence, targets = weak_probs.detach().max(1)
    mask = confidence > threshold
    if not bool(mask.any()):
        return strong_logits.sum() * 0.0
    targets = targets[mask]
    k = strong_logits.shape[1]
    counts = torch.bincount(targets, minlength=k).float()
    present = counts > 0
    weights = torch.zeros(k, device=counts.device)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return F.cross_entropy(strong_logits[mask].float(), targets, weight=weights)
