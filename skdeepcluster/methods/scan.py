"""SCAN: Learning to Classify Images without Labels (Van Gansbeke et al., ECCV 2020)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils._param_validation import Interval, StrOptions
from torch import Tensor, nn

from .._training import DeviceData, HeadLosses, batched_forward
from ..augment import identity
from ..backbones import Frozen, build_backbone
from ..base import (
    COMMON_CONSTRAINTS,
    INFERENCE_BATCH,
    FitInput,
    epochs_constraint,
    resolve_max_epochs,
    to_numpy,
)
from ..heads import ClusterModel
from ..losses import scan_loss, self_label_loss
from ..neighbors import mine_neighbors, neighbors_of
from ._base import N_CLUSTERS_CONSTRAINT, DeepClusterMixin, pretext_constraint, resolve_pretext

#: ``max_epochs="auto"`` of the clustering step: at least this many epochs and steps.
AUTO_MIN_EPOCHS = 30
AUTO_MIN_STEPS = 0
#: ``self_label_epochs="auto"`` stops when the confident samples stop growing, at the latest here.
SELF_LABEL_MAX_EPOCHS = 100


@dataclass
class SCANObjective:
    """Anchors and one random mined neighbour each, through every head; SCAN loss (eq. 2) per
    head, summed in ``head_losses`` so the head with the lowest loss can be kept."""

    augment: Callable[[Tensor], Tensor]
    neighbors: Tensor
    entropy_weight: float
    n_heads: int

    def __post_init__(self) -> None:
        self.head_losses = HeadLosses(self.n_heads, self.neighbors.device)

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        pick = torch.randint(self.neighbors.shape[1], (len(idx),), device=idx.device)
        neighbor_idx = self.neighbors[idx, pick]
        x = torch.cat([self.augment(data[idx]), self.augment(data[neighbor_idx])])
        terms = [scan_loss(*logits.chunk(2), self.entropy_weight) for logits in module(x)]
        totals = torch.stack([t.total for t in terms])
        self.head_losses.add(totals)
        return {
            "loss": totals.mean(),  # mean over heads: readable log, same Adam steps
            "consistency": torch.stack([t.consistency for t in terms]).mean(),
            "entropy": torch.stack([t.entropy for t in terms]).mean(),
        }


@dataclass
class SelfLabelObjective:
    """Sec. 2.3: confident predictions on a weak view become pseudo-labels for a class-balanced
    cross-entropy on a strong view.

    With ``stop_when_stalled`` the step ends when an epoch does not raise the number of
    confident training samples (the paper's "while Len(Y) increases").
    """

    weak: Callable[[Tensor], Tensor]
    strong: Callable[[Tensor], Tensor]
    threshold: float
    n_confident: int
    stop_when_stalled: bool = False

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        x = data[idx]
        with torch.no_grad():
            weak_probs = torch.softmax(module(self.weak(x))[0].float(), dim=1)
        strong_logits = module(self.strong(x))[0]
        confident = (weak_probs.max(1).values > self.threshold).float().mean()
        return {
            "loss": self_label_loss(strong_logits, weak_probs, self.threshold),
            "confident": confident,
        }

    def on_epoch_end(self, net: Any) -> None:
        count = count_confident(net.module_, net.data, self.threshold)
        net.history.record("n_confident", count)
        stalled = count <= self.n_confident
        self.n_confident = max(count, self.n_confident)
        if self.stop_when_stalled and stalled:
            raise KeyboardInterrupt  # skorch's way to end training early (as EarlyStopping)


def top_probabilities(module: nn.Module, data: DeviceData) -> Tensor:
    """Each sample's highest cluster probability (unaugmented, first head)."""
    probs = torch.softmax(batched_forward(module, data, INFERENCE_BATCH, amp=True)[0], dim=1)
    return probs.max(1).values


def count_confident(module: nn.Module, data: DeviceData, threshold: float) -> int:
    """Samples of ``data`` whose prediction exceeds ``threshold`` (strictly)."""
    return int((top_probabilities(module, data) > threshold).sum())


class SCAN(DeepClusterMixin, ClusterMixin, BaseEstimator):
    """SCAN clustering: pretext features, mined neighbours, neighbour consistency, self-labelling.

    On raw data (the default) ``fit`` runs the whole method of the paper:

    1. **pretext**: learn features with ``pretext`` (SimCLR by default);
    2. **mining**: the ``n_neighbors`` nearest neighbours of every sample in that feature space;
    3. **clustering**: ``n_heads`` clustering heads trained together with the SCAN loss (eq. 2,
       :func:`skdeepcluster.losses.scan_loss`): a sample and a random one of its neighbours, each
       augmented, must get the same cluster, while the entropy of the mean assignment keeps the
       clusters from collapsing. The backbone is fine-tuned from the pretext weights
       (``update_backbone``). The head with the lowest loss over the last epoch is kept;
    4. **self-labelling** (Sec. 2.3): samples whose prediction on a weak view is confident
       (``> confidence_threshold``) become pseudo-labels for a class-balanced cross-entropy on a
       strongly augmented view (:func:`skdeepcluster.losses.self_label_loss`).

    Features instead of raw data: with ``pretext=None``, X already holds feature vectors (steps
    2-4 run on them, with heads on the standardised features). After a
    :class:`~skdeepcluster.NeighborMiner` in a ``Pipeline``, X carries its mined neighbours and
    steps 1-2 are skipped.

    Parameters
    ----------
    n_clusters : int, default=10
        Number of clusters (at least 2).
    pretext : {"auto", "simclr", "rotnet", "autoencoder"}, transformer or None, default="auto"
        Pretext learner for raw data: a name for :class:`~skdeepcluster.SimCLR` /
        :class:`~skdeepcluster.RotNet` with their defaults, or an (unfitted) pretext transformer
        exposing ``backbone_`` after fit (cloned, never modified); either gets this estimator's
        ``device``, ``random_state`` and ``verbose`` unless set on it. None when X holds feature
        vectors: neighbours mined and heads trained in the input space. "auto": "simclr" for
        images; for vectors "autoencoder" from 256 features, else None (not the paper, which
        has images only; measured: ``docs/benchmarks.md``). Ignored when X carries mined
        neighbours.
    n_neighbors : int, default=5
        Neighbours mined per sample (the paper's text; its released configuration: 20).
    include_self : bool, default=True
        Also draw the sample itself as its "neighbour", so that its two views must agree too (the
        released code samples from the ``n_neighbors + 1`` nearest, the sample included).
    n_heads : int, default=10
        Clustering heads trained together; the one with the lowest SCAN loss is kept.
    entropy_weight : float, default=5.0
        Weight ``lambda`` of the entropy term of eq. (2) (the paper's text: 2; its released
        configuration: 5).
    clustering_views : {"weak", "strong"}, default="weak"
        The views of anchors and neighbours in the clustering step: the weak view, or the
        strong view (the paper: RandAugment-like operations and cutout).
    confidence_threshold : float, default=0.99
        Self-labelling confidence threshold (a sample is confident when its top probability is
        strictly above it).
    {head_init_parameter}
    max_epochs : int or "auto", default="auto"
        Epochs of the clustering step; "auto": 30 (the paper: 100; see ``docs/benchmarks.md``).
    self_label_epochs : int or "auto", default=10
        Epochs of self-labelling (0 skips it); "auto" trains while the number of confident
        samples grows, as the paper does (at most 100 epochs).
    update_backbone : bool, default=True
        Fine-tune the pretext backbone during clustering and self-labelling (the paper); False
        trains only the heads, on the frozen backbone's features of the augmented views.
    batch_size : int, default=128
        Anchors per batch of the clustering and self-labelling steps (the paper: 256).
    lr : float, default=1e-3
        Learning rate of the backbone in the clustering step (the paper: Adam 1e-4,
        ``optimizer="adam"``; measured: ``docs/benchmarks.md``).
    head_lr : float, default=1e-2
        Learning rate of the clustering heads in the clustering step (they start from
        scratch).
    self_label_lr : float, default=1e-4
        Learning rate of the whole model during self-labelling (the paper's).
    weight_decay : float, default=1e-4
    augment : callable or None, default=None
        Weak view maker for raw data; None for the data kind's default
        (:func:`skdeepcluster.augment.default_augmentations`); the strong view is built on it.
        Feature vectors (``pretext=None``) are not augmented during clustering; self-labelling
        uses vector noise and masking on them.
    {shared_parameters}

    Attributes
    ----------
    module_ : torch.nn.Module
        Backbone (or feature standardisation) and the kept head (``head_ = 0``).
    head_ : int
        Always 0.
    {head_selection_attributes}
    {head_init_attributes}
    neighbors_ : ndarray of shape (n_samples, n_neighbors)
        The mined neighbours (the sample itself not included).
    n_confident_ : int
        Training samples above ``confidence_threshold`` before self-labelling.
    n_epochs_ : int
        Clustering epochs (``max_epochs`` resolved).
    {cluster_attributes}
        The ``"self_labelling"`` stage records ``n_confident`` per epoch.
    {shared_attributes}

    Examples
    --------
    >>> from skdeepcluster import SCAN
    >>> from skdeepcluster.datasets import load_digits_images
    >>> X, y = load_digits_images()
    >>> labels = SCAN(n_clusters=10, random_state=0).fit_predict(X)  # doctest: +SKIP
    """

    _pretext_head_init = "random"  # the paper's heads start at random after the pretext
    _collapse_hint = "Raise entropy_weight, or check the mined neighbours (n_neighbors)."
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "n_clusters": N_CLUSTERS_CONSTRAINT,
        "pretext": pretext_constraint("auto"),
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "include_self": ["boolean"],
        "n_heads": [Interval(Integral, 1, None, closed="left")],
        "entropy_weight": [Interval(Real, 0, None, closed="left")],
        "clustering_views": [StrOptions({"weak", "strong"})],
        "confidence_threshold": [Interval(Real, 0, 1, closed="both")],
        "head_init": [StrOptions({"auto", "kmeans", "manifold", "random"})],
        "max_epochs": epochs_constraint(1),
        "self_label_epochs": epochs_constraint(0),
        "update_backbone": ["boolean"],
        "head_lr": [Interval(Real, 0, None, closed="neither")],
        "self_label_lr": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        n_clusters: int = 10,
        *,
        pretext: Any = "auto",
        n_neighbors: int = 5,
        include_self: bool = True,
        n_heads: int = 10,
        entropy_weight: float = 5.0,
        clustering_views: str = "weak",
        confidence_threshold: float = 0.99,
        head_init: str = "auto",
        max_epochs: int | str = "auto",
        self_label_epochs: int | str = 10,
        update_backbone: bool = True,
        batch_size: int = 128,
        lr: float = 1e-3,
        head_lr: float = 1e-2,
        self_label_lr: float = 1e-4,
        weight_decay: float = 1e-4,
        augment: Callable | None = None,
        optimizer: str | Callable = "adamw",
        device: str = "cpu",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.pretext = pretext
        self.n_neighbors = n_neighbors
        self.include_self = include_self
        self.n_heads = n_heads
        self.entropy_weight = entropy_weight
        self.clustering_views = clustering_views
        self.confidence_threshold = confidence_threshold
        self.head_init = head_init
        self.max_epochs = max_epochs
        self.self_label_epochs = self_label_epochs
        self.update_backbone = update_backbone
        self.batch_size = batch_size
        self.lr = lr
        self.head_lr = head_lr
        self.self_label_lr = self_label_lr
        self.weight_decay = weight_decay
        self.augment = augment
        self.optimizer = optimizer
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    def _check_params(self, X: np.ndarray) -> None:
        self._check_n_clusters(self.n_clusters, len(X))
        if self.n_neighbors >= len(X):
            raise ValueError(
                f"n_neighbors={self.n_neighbors} must be smaller than the number of "
                f"samples ({len(X)})"
            )

    # ------------------------------------------------------------------ fit
    def _fit(self, fit: FitInput) -> None:
        carried = neighbors_of(fit.raw, len(fit.X))
        pretext = None if carried is not None else resolve_pretext(self.pretext, fit.X)
        weak, strong = self._views(fit.data)
        if pretext is None:  # X holds features: heads on them, standardised, not augmented
            if fit.X.ndim != 2:
                raise ValueError(
                    "pretext=None means X holds feature vectors (n_samples, n_features); got "
                    f"images of shape {fit.X.shape}. Use a pretext (e.g. pretext='simclr') to "
                    "cluster images, or pass their embeddings."
                )
            self.pretext_ = None
            backbone = build_backbone(fit.data.sample, nn.Identity())
            # mined in the standardised input, as the head sees it: raw tabular units would let
            # the widest column choose the neighbours
            embeddings = self._standardized_input(fit)
            views = weak_view = identity
        else:
            backbone = self._initial_backbone(fit, pretext)
            embeddings = self._forward_data(backbone, fit.data)
            weak_view = weak
            views = strong if self.clustering_views == "strong" else weak
            if not self.update_backbone:
                backbone = Frozen(backbone)
        neighbors = self._neighbors(carried, embeddings)
        model = ClusterModel(backbone, embeddings.shape[1], [self.n_clusters] * self.n_heads)
        self._init_heads(fit, model)
        self._cluster(fit, model, views, neighbors)
        self._self_label(fit, weak_view, strong)

    def _neighbors(self, carried: np.ndarray | None, embeddings: Tensor) -> Tensor:
        """The mined neighbour table (``neighbors_``), with each sample itself prepended as a
        candidate when ``include_self``."""
        if carried is not None:
            neighbors = torch.as_tensor(carried, device=self.device_)
        else:
            neighbors = mine_neighbors(embeddings, self.n_neighbors)
        self.neighbors_ = to_numpy(neighbors)
        if self.include_self:
            itself = torch.arange(len(neighbors), device=neighbors.device).unsqueeze(1)
            neighbors = torch.cat([itself, neighbors], dim=1)
        return neighbors

    def _cluster(
        self, fit: FitInput, model: ClusterModel, views: Callable, neighbors: Tensor
    ) -> None:
        """The clustering step (eq. 2 on every head); keeps the head with the lowest loss."""
        self.n_epochs_ = resolve_max_epochs(
            self.max_epochs, len(fit.X), self.batch_size, AUTO_MIN_EPOCHS, AUTO_MIN_STEPS
        )
        objective = SCANObjective(views, neighbors, self.entropy_weight, self.n_heads)
        trained = self._train(
            "clustering",
            model,
            objective,
            fit.data,
            self.n_epochs_,
            log_terms=("consistency", "entropy"),
            group_lrs={"heads.*": self.head_lr},
        )
        self._keep_best_head(trained, objective.head_losses, self.n_clusters)

    def _self_label(self, fit: FitInput, weak: Callable, strong: Callable) -> None:
        """Sec. 2.3, from the kept head (skipped when no sample is confident)."""
        confidence = top_probabilities(self.module_, fit.data)
        self.n_confident_ = int((confidence > self.confidence_threshold).sum())
        if self.self_label_epochs == 0:
            return
        if self.n_confident_ == 0:
            warnings.warn(
                f"SCAN self-labelling skipped: no training sample has a confidence above "
                f"confidence_threshold={self.confidence_threshold} (highest: "
                f"{float(confidence.max()):.3f}). Lower confidence_threshold or train the "
                "clustering step longer (max_epochs).",
                UserWarning,
                stacklevel=4,
            )
            return
        auto = self.self_label_epochs == "auto"
        objective = SelfLabelObjective(
            weak, strong, self.confidence_threshold, self.n_confident_, stop_when_stalled=auto
        )
        self.module_ = self._train(
            "self_labelling",
            self.module_,
            objective,
            fit.data,
            SELF_LABEL_MAX_EPOCHS if auto else self.self_label_epochs,
            lr=self.self_label_lr,
            log_terms=("confident",),
        )
