"""DRC: Deep Robust Clustering by Contrastive Learning (Zhong, Chen, Jin and Hua)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils._param_validation import Interval, StrOptions
from torch import Tensor, nn

from .._training import DeviceData, clusters_used
from ..augment import ImageAugment, identity
from ..base import (
    COMMON_CONSTRAINTS,
    LR_SCHEDULE_CONSTRAINT,
    FitInput,
    epochs_constraint,
    resolve_max_epochs,
)
from ..heads import ClusterModel
from ..losses import drc_cluster_regularization, drc_feature_loss, drc_probability_loss
from ._base import N_CLUSTERS_CONSTRAINT, DeepClusterMixin, pretext_constraint

#: ``max_epochs="auto"``: at least this many epochs and optimisation steps.
AUTO_MIN_EPOCHS = 60
AUTO_MIN_STEPS = 1200


def original_view(sample: Tensor) -> Callable[[Tensor], Tensor]:
    """DRC's "original" view: a small random translation of images (PICA's resize to 1.25x and
    crop back), nothing for vectors."""
    if sample.ndim == 2:
        return identity
    return ImageAugment(
        crop_scale=(0.64, 0.64),
        crop_ratio=(1.0, 1.0),
        flip_prob=0.0,
        jitter=0.0,
        grayscale_prob=0.0,
    )


@dataclass
class DRCObjective:
    """Original and augmented views of the batch (each sample repeated ``n_repeats`` times); per
    head, eq. (10): AF contrast (eq. 5) + AP contrast (eq. 8) + lambda * CR (eq. 9)."""

    original: Callable[[Tensor], Tensor]
    augment: Callable[[Tensor], Tensor]
    feature_temperature: float
    probability_temperature: float
    regularization_weight: float
    feature_weight: float
    probability_weight: float
    feature_similarity: str
    probability_similarity: str
    n_repeats: int
    mask_repeats: bool = False

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        x = data[idx].repeat_interleave(self.n_repeats, dim=0)
        logits = module(torch.cat([self.original(x), self.augment(x)]))
        groups = None
        if self.mask_repeats and self.n_repeats > 1:  # row r is a copy of sample r // n_repeats
            groups = torch.arange(len(idx), device=x.device).repeat_interleave(self.n_repeats)
        af, ap, cr = [], [], []
        for head in logits:
            z, z_aug = head.float().chunk(2)
            p, p_aug = torch.softmax(z, dim=1), torch.softmax(z_aug, dim=1)
            af.append(
                drc_feature_loss(
                    z, z_aug, self.feature_temperature, self.feature_similarity, groups
                )
            )
            ap.append(
                drc_probability_loss(
                    p, p_aug, self.probability_temperature, self.probability_similarity
                )
            )
            cr.append(drc_cluster_regularization(p))  # the originals only, as the paper
        af, ap, cr = torch.stack(af), torch.stack(ap), torch.stack(cr)
        main = logits[0][: len(x)].detach()
        used = clusters_used(main.argmax(1), main.shape[1])
        return {
            # eq. (10), heads summed; the term weights are 1 in the paper (0: an ablation)
            "loss": (
                self.feature_weight * af
                + self.probability_weight * ap
                + self.regularization_weight * cr
            ).sum(),
            "feature": af[0],
            "probability": ap[0],
            "regularization": cr[0] / len(x),  # CR / N: 1/K when balanced, 1 when collapsed
            "logit_norm": main.norm(dim=1).mean(),
            "clusters_used": used,
        }


class DRC(DeepClusterMixin, ClusterMixin, BaseEstimator):
    r"""DRC: contrast of assignment features and assignment probabilities, with cluster
    regularisation.

    One network (a backbone and a linear head of ``n_clusters`` logits) sees an "original" and an
    augmented view of each sample; both get gradients. The logits :math:`z` are the *assignment
    feature*, :math:`p = \operatorname{softmax}(z)` the *assignment probability*.

    - **AF contrast**, eq. (5) (:func:`~skdeepcluster.losses.drc_feature_loss`): each sample's
      logits in the original view against every sample's logits in the augmented view
      (instance level, :math:`T_{AF}`).
    - **AP contrast**, eq. (8) (:func:`~skdeepcluster.losses.drc_probability_loss`): each
      cluster's column of :math:`P` against every column of :math:`P'` (cluster level,
      :math:`T_{AP}`, cosine).
    - **CR**, eq. (9) (:func:`~skdeepcluster.losses.drc_cluster_regularization`):
      :math:`\lVert 1^\top P \rVert^2 / N`, smallest for balanced clusters.
    - **Total**, eq. (10): :math:`\mathcal{L}_{AF} + \mathcal{L}_{AP} + \lambda \mathcal{L}_{CR}`,
      summed over the heads with an over-clustering head.

    ``predict`` takes the argmax of the main head. Paper slips, for the record: Theorem 1's eq.
    (3) lacks its minus sign, and the regulariser's ablation is Table 3 (the text says 4).

    Parameters
    ----------
    n_clusters : int, default=10
        Number of clusters of the main head (at least 2).
    n_overclusters : int or None, default=None
        Clusters of an auxiliary over-clustering head trained beside the main one (PICA's
        idiom; the paper uses one on STL-10); None for none. Both heads train jointly (PICA
        alternates them by epoch).
    feature_temperature : float, default=0.5
        :math:`T_{AF}` (the paper's).
    probability_temperature : float, default=0.95
        :math:`T_{AP}` (the paper's).
    regularization_weight : float, default=0.005
        :math:`\lambda` of eq. (10) (the paper's); 0 drops the regulariser (Table 3's ablation).
    feature_weight : float, default=0.1
        Weight of the AF contrast in eq. (10) (the paper: 1); 0 drops it (Table 2's ablation).
        Departs from the paper: 0.1 measured better on digits and MNIST-test images
        (``docs/benchmarks.md``).
    probability_weight : float, default=1.0
        Weight of the AP contrast in eq. (10) (the paper's); 0 drops it (Table 2's ablation).
    feature_similarity : {"cosine", "dot"}, default="cosine"
        Similarity of eq. (5): the cosine of the logits, or the paper's raw dot product ("dot"),
        which rewards ever-growing logits. Departs from the paper: the cosine measured better on
        digits images (``docs/benchmarks.md``).
    probability_similarity : {"cosine", "dot"}, default="cosine"
        Similarity of eq. (8): the cosine (reconstructed), or the printed dot product.
    n_repeats : int, default=1
        Each sample of a batch is repeated this many times, each copy with its own views (the
        paper: 2).
    mask_repeats : bool, default=False
        With ``n_repeats > 1``: leave the other copies of a sample out of its AF negatives
        (eq. 5), which are the same image, not another one. The paper does not mask them.
    views : {"original", "symmetric"}, default="original"
        "original": a lightly translated original view and an augmented view (the paper);
        "symmetric": two augmented views.
    pretext : {"auto", "simclr", "rotnet", "autoencoder"}, transformer or None, default="auto"
        A named pretext or a pretext transformer first learns the backbone, and the heads start from
        its features (``head_init``); None trains from scratch in one stage (the paper). "auto":
        "simclr" for images; for vectors "autoencoder" from 256 features, else None. Departs from
        the paper: a SimCLR start measured better on digits and MNIST-test images
        (``docs/benchmarks.md``).
    {head_init_parameter}
    backbone : torch.nn.Module or None, default=None
        Network mapping a batch to ``(batch, features)`` when training from scratch; None picks
        one from X's shape.
    max_epochs : int or "auto", default="auto"
        Training epochs; "auto": at least 60 epochs and 1,200 optimisation steps, the steps
        taking at most 250 epochs (the paper: 500 epochs).
    batch_size : int, default=256
        Samples per batch before repetition (the paper's).
    lr : float, default=1e-3
        Learning rate (the paper: Adam 1e-4, ``optimizer="adam"``).
    lr_schedule : {"constant", "cosine"}, default="constant"
    weight_decay : float, default=1e-4
        The paper: none; weight decay also bounds the logit growth the dot-product AF rewards.
    augment : callable or None, default=None
        The augmented view; None for the data kind's default weak view.
    {shared_parameters}

    Attributes
    ----------
    module_ : torch.nn.Module
        Backbone and the main head (``head_ = 0``; the over-clustering head is dropped).
    head_ : int
        Always 0.
    {head_init_attributes}
    n_epochs_ : int
        The number of epochs trained (``max_epochs`` resolved).
    {cluster_attributes}
        Per epoch: ``feature``, ``probability``, ``regularization`` (CR / N), ``logit_norm`` and
        ``clusters_used`` of the main head.
    {shared_attributes}
    """

    #: ``head_init="auto"`` after a pretext: the manifold start (the paper: random heads, from
    #: scratch). MNIST-test seed 2: 0.971 against 0.795 with k-means heads (docs/benchmarks.md).
    _pretext_head_init = "manifold"
    _collapse_hint = "Raise regularization_weight, or start from a pretext (pretext='simclr')."
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "n_clusters": N_CLUSTERS_CONSTRAINT,
        "n_overclusters": [Interval(Integral, 2, None, closed="left"), None],
        "feature_temperature": [Interval(Real, 0, None, closed="neither")],
        "probability_temperature": [Interval(Real, 0, None, closed="neither")],
        "regularization_weight": [Interval(Real, 0, None, closed="left")],
        "feature_weight": [Interval(Real, 0, None, closed="left")],
        "probability_weight": [Interval(Real, 0, None, closed="left")],
        "feature_similarity": [StrOptions({"dot", "cosine"})],
        "probability_similarity": [StrOptions({"dot", "cosine"})],
        "n_repeats": [Interval(Integral, 1, None, closed="left")],
        "mask_repeats": ["boolean"],
        "views": [StrOptions({"original", "symmetric"})],
        "pretext": pretext_constraint("auto"),
        "head_init": [StrOptions({"auto", "kmeans", "manifold", "random"})],
        "backbone": [nn.Module, None],
        "max_epochs": epochs_constraint(1),
        "lr_schedule": LR_SCHEDULE_CONSTRAINT,
    }

    def __init__(
        self,
        n_clusters: int = 10,
        *,
        n_overclusters: int | None = None,
        feature_temperature: float = 0.5,
        probability_temperature: float = 0.95,
        regularization_weight: float = 0.005,
        feature_weight: float = 0.1,
        probability_weight: float = 1.0,
        feature_similarity: str = "cosine",
        probability_similarity: str = "cosine",
        n_repeats: int = 1,
        mask_repeats: bool = False,
        views: str = "original",
        pretext: Any = "auto",
        head_init: str = "auto",
        backbone: nn.Module | None = None,
        max_epochs: int | str = "auto",
        batch_size: int = 256,
        lr: float = 1e-3,
        lr_schedule: str = "constant",
        weight_decay: float = 1e-4,
        augment: Callable | None = None,
        optimizer: str | Callable = "adamw",
        device: str = "cpu",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_overclusters = n_overclusters
        self.feature_temperature = feature_temperature
        self.probability_temperature = probability_temperature
        self.regularization_weight = regularization_weight
        self.feature_weight = feature_weight
        self.probability_weight = probability_weight
        self.feature_similarity = feature_similarity
        self.probability_similarity = probability_similarity
        self.n_repeats = n_repeats
        self.mask_repeats = mask_repeats
        self.views = views
        self.pretext = pretext
        self.head_init = head_init
        self.backbone = backbone
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_schedule = lr_schedule
        self.weight_decay = weight_decay
        self.augment = augment
        self.optimizer = optimizer
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    def _sizes(self, n_samples: int) -> list[int]:
        sizes = [self._check_n_clusters(self.n_clusters, n_samples)]
        if self.n_overclusters is not None:
            sizes.append(self._check_n_clusters(self.n_overclusters, n_samples, "n_overclusters"))
        return sizes

    def _check_params(self, X: np.ndarray) -> None:
        self._sizes(len(X))

    def _fit(self, fit: FitInput) -> None:
        sizes = self._sizes(len(fit.X))
        self.n_epochs_ = resolve_max_epochs(
            self.max_epochs, len(fit.X), self.batch_size, AUTO_MIN_EPOCHS, AUTO_MIN_STEPS
        )
        backbone = self._initial_backbone(fit, self.pretext, body=self.backbone)
        module = ClusterModel(backbone, backbone.out_features, sizes)
        self._init_heads(fit, module)
        weak, _ = self._views(fit.data)
        original = original_view(fit.data.sample) if self.views == "original" else weak
        objective = DRCObjective(
            original,
            weak,
            self.feature_temperature,
            self.probability_temperature,
            self.regularization_weight,
            self.feature_weight,
            self.probability_weight,
            self.feature_similarity,
            self.probability_similarity,
            self.n_repeats,
            self.mask_repeats,
        )
        trained = self._train(
            "clustering",
            module,
            objective,
            fit.data,
            self.n_epochs_,
            log_terms=("feature", "probability", "regularization", "logit_norm", "clusters_used"),
            lr_schedule=self.lr_schedule,
        )
        self.module_ = trained.keep_heads([0])
        self.head_ = 0
