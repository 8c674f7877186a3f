"""What sits on top of a backbone: cluster heads, MLP heads, and the momentum (EMA) target network.

- :class:`ClusterModel`: a backbone and linear cluster heads of one or several sizes; ``forward``
  returns one logit tensor per head (the contract ``predict_proba`` relies on).
- :func:`mlp_head`: the ``Linear -> BatchNorm -> ReLU -> Linear`` head of SimCLR's projection and
  of the BYOL-style projector and predictor.
- :class:`MomentumTarget` and :func:`momentum_at`: an exponential moving average of a network,
  updated after every optimiser step (BYOL's target, C2BIN's follower).
- :func:`kmeans_heads`: start linear heads as the nearest-centroid classifier of a k-means of
  features, so the first assignments are a k-means partition instead of a random one.
- :func:`manifold_partition` and :func:`fit_linear_head`: a Ward partition of a t-SNE
  embedding (the manifold step of the vector path), and a linear head fitted to a partition.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import AgglomerativeClustering, KMeans
from torch import Tensor, nn

from . import distributed
from ._validation import check_number, check_positive_int

#: :func:`kmeans_heads` fits k-means on at most this many samples (a random subset).
KMEANS_MAX_SAMPLES = 20_000
#: :func:`manifold_heads` embeds at most this many samples (a random subset).
MANIFOLD_MAX_SAMPLES = 10_000
#: Weight decay of the linear fit in :func:`fit_linear_head`: bounds the logits (separable
#: partitions would otherwise drive them to infinity) while keeping the fit's assignments.
HEAD_FIT_WEIGHT_DECAY = 1e-3


def mlp_head(
    in_features: int, hidden: int, out_features: int, batch_norm: bool = True
) -> nn.Module:
    """``Linear(in, hidden) -> [BatchNorm] -> ReLU -> Linear(hidden, out)``.

    The projection head ``g`` of SimCLR (Chen et al., 2020) and the projector and predictor of
    BYOL (Grill et al., 2020).
    """
    layers: list[nn.Module] = [nn.Linear(in_features, hidden)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden, out_features)]
    return nn.Sequential(*layers)


class ProjectionModel(nn.Module):
    """Backbone followed by an MLP projection head (SimCLR's g(.)); forward returns projections."""

    def __init__(self, backbone: nn.Module, projection_dim: int) -> None:
        super().__init__()
        width = backbone.out_features
        self.backbone = backbone
        self.projection = mlp_head(width, width, projection_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.backbone(x))


class ClusterModel(nn.Module):
    """Backbone followed by one linear clustering head per entry of ``head_sizes``.

    ``forward`` returns a list of logits, one ``(B, k)`` tensor per head.

    Parameters
    ----------
    backbone : nn.Module
        Maps a batch to ``(B, in_features)`` features.
    in_features : int
        Width of the backbone's output.
    head_sizes : sequence of int
        Clusters of each head.
    heads : nn.ModuleList or None
        Existing heads to use instead of new ones (``head_sizes`` is then ignored).
    """

    def __init__(
        self,
        backbone: nn.Module,
        in_features: int,
        head_sizes: Sequence[int] = (),
        heads: nn.ModuleList | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.in_features = in_features
        self.heads = (
            heads
            if heads is not None
            else nn.ModuleList(nn.Linear(in_features, k) for k in head_sizes)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.backbone(x)
        return [head(features) for head in self.heads]

    def keep_heads(self, indices: Sequence[int]) -> ClusterModel:
        """This model with only the heads at ``indices`` (modules shared, not copied)."""
        kept = nn.ModuleList(self.heads[i] for i in indices)
        return ClusterModel(self.backbone, self.in_features, heads=kept)


def head_sizes_of(model: ClusterModel) -> list[int]:
    """Clusters of each head of ``model``."""
    return [head.out_features for head in model.heads]


def momentum_at(step: int, total_steps: int, base: float, schedule: str = "constant") -> float:
    r"""EMA momentum :math:`\gamma` at optimisation ``step`` of ``total_steps``.

    ``"constant"``: :math:`\gamma = \gamma_0` throughout (C2BIN). ``"cosine"``: BYOL's ramp
    :math:`\gamma = 1 - (1 - \gamma_0)(\cos(\pi t / T) + 1) / 2`, from :math:`\gamma_0` at
    :math:`t = 0` to 1 at :math:`t = T`.
    """
    base = check_number(base, "momentum", 0.0, 1.0)
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    total = check_positive_int(total_steps, "total_steps")
    t = min(max(step, 0), total) / total
    return 1.0 - (1.0 - base) * (math.cos(math.pi * t) + 1.0) / 2.0


class MomentumTarget:
    r"""A momentum (exponential moving average) copy of a network, never trained by gradients.

    After each optimiser step of the online network :math:`\theta`, the target :math:`\phi` moves
    as :math:`\phi \leftarrow \gamma \phi + (1 - \gamma) \theta` (BYOL, Grill et al. 2020, and the
    follower of C2BIN); buffers (batch-norm statistics) are copied. The target stays in training
    mode, so batch normalisation uses the statistics of the batch it sees, as in BYOL.

    The target is deliberately not an ``nn.Module`` attribute of the trained model: it never
    enters the optimiser, ``predict`` does not need it, and it is not pickled with the estimator.

    Parameters
    ----------
    online : nn.Module
        The network to follow; copied (weights, device, dtype).
    """

    def __init__(self, online: nn.Module) -> None:
        self.network = copy.deepcopy(online).requires_grad_(False)
        self.network.train()

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float) -> None:
        """:math:`\\phi \\leftarrow \\gamma \\phi + (1 - \\gamma) \\theta`, buffers copied."""
        target_params = list(self.network.parameters())
        online_params = [p.detach() for p in online.parameters()]
        if len(target_params) != len(online_params):
            raise ValueError("the online network no longer matches its momentum target")
        torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)
        for target_buffer, online_buffer in zip(self.network.buffers(), online.buffers()):
            target_buffer.copy_(online_buffer)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        # in a distributed fit: on this process's rows, the outputs of all gathered
        return distributed.sharded(self.network)(x)


def kmeans_heads(heads: Sequence[nn.Linear], features: Tensor, seed: int) -> list[float]:
    r"""Set each linear head to the nearest-centroid classifier of a k-means of ``features``.

    With centroids :math:`\mu_k` of the features :math:`f`, the nearest centroid maximises
    :math:`-\lVert f - \mu_k \rVert^2 = 2\mu_k^\top f - \lVert\mu_k\rVert^2 - \lVert f\rVert^2`,
    whose last term is the same for every cluster; so ``weight[k] = 2 mu_k / T`` and ``bias[k] =
    -||mu_k||^2 / T`` make ``argmax head(f)`` the k-means assignment exactly. ``T`` is the mean
    squared distance of the samples to their nearest centroid: the logits are distances in
    units of the typical within-cluster spread, whatever the scale of the features. Each head
    gets its own k-means seed.

    Parameters
    ----------
    heads : sequence of torch.nn.Linear
        Heads to overwrite in place; head ``h`` gets ``heads[h].out_features`` clusters.
    features : Tensor of shape (n_samples, in_features)
        Features the heads read (e.g. a pretrained backbone's embeddings).
    seed : int
        Seeds the subset (at most ``KMEANS_MAX_SAMPLES`` samples) and the k-means runs.

    Returns
    -------
    list of float
        Per head, the fraction of ``features`` whose k-means cluster is the head's argmax (1.0
        up to ties and rounding): a check that the heads reproduce the partition.
    """
    rng = np.random.default_rng(seed)
    f = features.detach().float().cpu()
    fit_rows = (
        rng.choice(len(f), KMEANS_MAX_SAMPLES, replace=False)
        if len(f) > KMEANS_MAX_SAMPLES
        else slice(None)
    )
    agreement = []
    for h, head in enumerate(heads):
        km = KMeans(head.out_features, n_init=3, random_state=seed + h).fit(f[fit_rows].numpy())
        mu = torch.as_tensor(km.cluster_centers_, dtype=torch.float32)
        sq_dist = torch.cdist(f, mu).square_()
        # floor: identical features would make every distance 0 and the logits infinite
        temperature = float(sq_dist.min(1).values.mean().clamp_min(1e-6))
        with torch.no_grad():
            head.weight.copy_(2 * mu / temperature)
            head.bias.copy_(-mu.square().sum(1) / temperature)
        logits = F.linear(f, head.weight.detach().cpu(), head.bias.detach().cpu())
        agreement.append(float((logits.argmax(1) == sq_dist.argmin(1)).float().mean()))
    return agreement


def fit_linear_head(
    head: nn.Linear, features: Tensor, labels: Tensor, max_iter: int = 100
) -> float:
    """Fit ``head`` in place as a multinomial logistic regression of ``labels`` on ``features``.

    Full-batch L-BFGS on the mean cross-entropy plus ``HEAD_FIT_WEIGHT_DECAY * ||W||^2``, started
    from zero weights, on the CPU in float32.

    Returns
    -------
    float
        The fraction of ``features`` whose argmax logit is their label.
    """
    f = features.detach().float().cpu()
    y = torch.as_tensor(labels, dtype=torch.long).cpu()
    weight = torch.zeros(head.out_features, f.shape[1], requires_grad=True)
    bias = torch.zeros(head.out_features, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(F.linear(f, weight, bias), y)
        loss = loss + HEAD_FIT_WEIGHT_DECAY * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight.device))
        head.bias.copy_(bias.to(head.bias.device))
        return float((F.linear(f, weight, bias).argmax(1) == y).float().mean())


def manifold_partition(
    manifold_input: Tensor, sizes: Sequence[int], seed: int, clustering: str = "ward"
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Ward partitions, one per size in ``sizes``, of the t-SNE embedding of
    ``manifold_input``: the manifold step of the vector path.

    On vectors, a partition of the t-SNE embedding (:func:`~skdeepcluster.neighbors.tsne_embedding`)
    follows the data's manifold, where a k-means of the features themselves cuts across it.
    Ward's agglomerative clustering of the embedding follows t-SNE's elongated clusters better
    than k-means (MNIST-test as vectors: 0.843 ACC against 0.780; digits 0.951 against 0.945,
    ``docs/benchmarks.md``) and is deterministic. ``clustering="kmeans"`` partitions with
    k-means instead (seed ``seed + h`` for partition ``h``): the images' manifold start, measured
    with it before Ward was. The embedding is computed once, on at most
    :data:`MANIFOLD_MAX_SAMPLES` rows (a random subset drawn with ``seed``).

    Returns
    -------
    rows : ndarray of int
        The embedded rows, sorted.
    labels : list of ndarray
        Per size, the partition of ``rows``.
    """
    from .neighbors import tsne_embedding

    rng = np.random.default_rng(seed)
    n = len(manifold_input)
    rows = (
        np.sort(rng.choice(n, MANIFOLD_MAX_SAMPLES, replace=False))
        if n > MANIFOLD_MAX_SAMPLES
        else np.arange(n)
    )
    embedding = tsne_embedding(manifold_input[torch.as_tensor(rows)], random_state=seed)
    if clustering == "ward":
        models = [AgglomerativeClustering(k, linkage="ward") for k in sizes]
    elif clustering == "kmeans":
        models = [KMeans(k, n_init=10, random_state=seed + h) for h, k in enumerate(sizes)]
    else:
        raise ValueError(f"clustering must be 'ward' or 'kmeans', got {clustering!r}")
    labels = [model.fit_predict(embedding).astype(np.int64) for model in models]
    return rows, labels
