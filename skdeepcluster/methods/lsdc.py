"""LSD-C: Linearly Separable Deep Clusters (Rebuffi, Ehrhardt, Han, Vedaldi and Zisserman, 2020)."""

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

from .. import distributed
from .._training import DeviceData, batches_per_epoch
from ..base import COMMON_CONSTRAINTS, FitInput, epochs_constraint, resolve_max_epochs
from ..heads import ClusterModel
from ..losses import consistency_mse, lsdc_pairwise_bce, rampup_weight
from ..mixing import composite_targets, mixup, ricap
from ..neighbors import neighbor_graph_embedding
from ..pairwise_labels import calibrate_similarity, calibrated_parameter, pairwise_adjacency
from ._base import N_CLUSTERS_CONSTRAINT, DeepClusterMixin, pretext_constraint, resolve_pretext

#: ``threshold=None`` / ``n_neighbors=None`` are calibrated on this many random batches.
CALIBRATION_BATCHES = 20
#: Neighbours per sample in the graph behind ``label_features="spectral"`` (measured:
#: docs/benchmarks.md, "where the pairwise labels come from").
SPECTRAL_NEIGHBORS = 30
#: ``max_epochs="auto"``: at least this many epochs and this many optimisation steps.
AUTO_MIN_EPOCHS = 30
AUTO_MIN_STEPS = 5000


def _calibrated(
    batches: list[Tensor], similarity: str, params: dict, n_clusters: int
) -> float | int:
    """The value of that parameter labelling 1 / n_clusters of the pairs of ``batches`` similar."""
    key = calibrated_parameter(similarity)
    others = {k: v for k, v in params.items() if k != key}
    return calibrate_similarity(batches, similarity, 1.0 / n_clusters, **others)


@dataclass
class LSDCObjective:
    """One LSD-C step: pairwise labels from the clean view's features, eq. (5) against the
    (composite) augmented view, eq. (8) between clean and augmented predictions.

    Parameters
    ----------
    augment : callable
        View maker for x'.
    similarity : str
        Criterion of :func:`skdeepcluster.pairwise_labels.pairwise_adjacency`.
    similarity_params : dict
        Its keyword parameters (``threshold``, ``temperature`` or ``n_neighbors``).
    composition : callable or None
        :func:`~skdeepcluster.mixing.ricap` or :func:`~skdeepcluster.mixing.mixup`;
        None to compare the clean view with the augmented view itself.
    consistency_weight : float
        Final weight of eq. (8).
    rampup_steps : int
        Optimisation steps of the ramp-up of that weight.
    label_features : Tensor of shape (n_samples, d) or None
        Fixed features of every sample to make the pairwise labels from (``label_features=
        "pretext"`` or ``"spectral"``); None for the network's own features of the clean view
        (the paper).
    n_clusters : int or None
        With a ``None`` threshold (or ``n_neighbors``) in ``similarity_params``: it is set on
        the first batch so that ``1 / n_clusters`` of its pairs are similar.
    """

    augment: Callable[[Tensor], Tensor]
    similarity: str
    similarity_params: dict
    composition: Callable | None
    consistency_weight: float
    rampup_steps: int
    label_features: Tensor | None = None
    n_clusters: int | None = None
    step: int = 0

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        x = data[idx]
        n = len(x)
        x_aug = self.augment(x)
        views = [x, x_aug]
        if self.composition is not None:
            composites, sources, weights = self.composition(x_aug)
            views.append(composites)
        features = module.backbone(torch.cat(views))
        probs = torch.softmax(module.heads[0](features).float(), dim=1)
        p_clean, p_aug, *p_comp = probs.split(n)
        # pairwise labels of the batch from the clean view's penultimate features (Sec. 3.2),
        # or from the fixed pretext features of the same samples
        source = (
            features[:n].detach() if self.label_features is None else self.label_features[idx]
        ).float()
        key = calibrated_parameter(self.similarity)
        if self.similarity_params[key] is None:  # calibrate on the first batch's features
            self.similarity_params = {
                **self.similarity_params,
                key: _calibrated(
                    [source], self.similarity, self.similarity_params, self.n_clusters
                ),
            }
        adjacency = pairwise_adjacency(source, self.similarity, **self.similarity_params)
        if self.composition is not None:  # eq. (6): T[i, j] = sum_s w[j, s] A[i, sources[j, s]]
            target, p_other = composite_targets(adjacency, sources, weights), p_comp[0]
        else:
            target, p_other = adjacency, p_aug
        bce = lsdc_pairwise_bce(p_clean, p_other, target)  # eq. (5)
        mse = consistency_mse(p_clean, p_aug)  # eq. (8)
        weight = rampup_weight(self.step, self.rampup_steps, self.consistency_weight)
        self.step += 1
        return {
            "loss": bce + weight * mse,
            "bce": bce,
            "consistency": mse,
            "similar": adjacency.mean(),
        }


class LSDC(DeepClusterMixin, ClusterMixin, BaseEstimator):
    r"""LSD-C clustering: pairwise labels in feature space, pairwise BCE, composition, consistency.

    Rebuffi, Ehrhardt, Han, Vedaldi and Zisserman, "LSD-C: Linearly Separable Deep Clusters"
    (2020). A network (backbone and a linear head of ``n_clusters`` outputs) is trained on
    mini-batches; for each batch of clean samples :math:`x` and their augmented views :math:`x'`:

    1. **pairwise labels** (Sec. 3.2, Table 1): features :math:`f_i` of the batch give a 0/1
       adjacency :math:`A_{ij}` (:func:`skdeepcluster.pairwise_labels.pairwise_adjacency`) by
       thresholding their cosine similarity (``"cosine"``: :math:`\cos(f_i, f_j) > \tau`), their
       squared distance (``"l2"``: :math:`\lVert f_i - f_j\rVert^2 < \tau`), the symmetric SNE
       similarity of eqs. (1)-(2) (``"sne"``: :math:`(p_{j|i} + p_{i|j}) / 2 > \tau`,
       :math:`p_{j|i} \propto \exp(-\lVert f_i - f_j\rVert^2 / T^2)`), or symmetrised k
       nearest neighbours (``"knn"``). In the paper the features are the network's own
       penultimate features of the clean view (``label_features="online"``);
    2. **clustering loss**, eq. (5) (:func:`skdeepcluster.losses.lsdc_pairwise_bce`): the binary
       cross-entropy between :math:`A_{ij}` and :math:`p_i^\top p'_j`, the probability that the
       clean sample :math:`i` and the augmented sample :math:`j` share a cluster;
    3. **composition**, eq. (6) (:mod:`skdeepcluster.mixing`): :math:`x'` is replaced by
       composites of the augmented batch (RICAP patches for images, MixUp for vectors), and the
       target of composite :math:`j` built from sources :math:`\sigma` with weights
       :math:`w_\sigma` becomes :math:`\sum_\sigma w_\sigma A_{i \sigma(j)}`;
    4. **consistency**, eq. (8) (:func:`skdeepcluster.losses.consistency_mse`): the mean squared
       error between the predictions :math:`p` and :math:`p'` of the clean and the (not composed)
       augmented views, weighted by :math:`\omega(t) = \lambda e^{-5 (1 - t/T)^2}` over the first
       :math:`T` optimisation steps (:func:`skdeepcluster.losses.rampup_weight`), then
       :math:`\lambda`.

    The clusters are the argmax of the linear head, hence linearly separable in feature space.
    The paper initialises the network by RotNet self-supervision and trains only the last block
    of the backbone and the head; the paper's setting is ``pretext="rotnet",
    freeze_backbone=True, label_features="online", threshold=0.9, center_features=False,
    consistency_weight=5``. The defaults differ where measured better (``docs/benchmarks.md``,
    "paper setting -> parameters" in ``docs/paper_settings.md``).

    Parameters
    ----------
    n_clusters : int, default=10
        Number of clusters (at least 2).
    similarity : {"cosine", "l2", "sne", "knn"}, default="cosine"
        Criterion making the pairwise labels.
    threshold : float or None, default=None
        :math:`\tau` of the criterion (not used by "knn"): cosine in ``[-1, 1]``, squared distance
        ``>= 0``, SNE similarity in ``[0, 1]``. None (not in the paper, which fixes 0.9 for the
        cosine): calibrated so that ``1 / n_clusters`` of the pairs are similar, by
        :func:`skdeepcluster.pairwise_labels.calibrate_similarity`, on 20 random batches of
        fixed label features, or on the first training batch with ``label_features="online"``.
        The value used is ``threshold_``.
    center_features : bool, default=True
        ``"cosine"`` only: compare the batch-centred features :math:`\cos(f_i - \bar f, f_j -
        \bar f)` (:func:`skdeepcluster.pairwise_labels.cosine_adjacency`); not in the paper, which
        uses the raw cosine (``False``), measured to collapse on ReLU features.
    temperature : float, default=1.0
        SNE temperature :math:`T` of eq. (1) (``"sne"`` only).
    n_neighbors : int or None, default=None
        :math:`k` of ``"knn"`` (only), neighbours within each batch. None: the smallest ``k``
        that labels at least ``1 / n_clusters`` of the pairs similar (``n_neighbors_``).
    composition : {"auto", "ricap", "mixup"} or None, default="auto"
        Composition of eq. (6): "auto" is RICAP for images and MixUp for vectors; None compares
        clean and augmented views without composition. RICAP needs images.
    consistency_weight : float, default=10.0
        :math:`\lambda`, the final weight of the consistency loss, eq. (8) (MSE averaged over the
        batch and the clusters); the paper: 5 (measured: ``docs/benchmarks.md``).
    rampup_epochs : int, default=10
        Length of its ramp-up in epochs (counted in optimisation steps); 0 for none. The paper
        ramps up over 100 of 220 epochs (measured: ``docs/benchmarks.md``).
    pretext : {"auto", "simclr", "rotnet", "autoencoder"}, transformer or None, default="auto"
        Self-supervised initialisation of the backbone: a name for
        :class:`~skdeepcluster.SimCLR` / :class:`~skdeepcluster.RotNet` (images only) with their
        defaults, or an (unfitted) pretext transformer exposing ``backbone_`` after fit (cloned,
        never modified); either gets this estimator's ``device``, ``random_state`` and
        ``verbose`` unless set on it. None trains from scratch. "auto": "simclr" for images;
        for vectors "autoencoder" from 256 features, else None (measured:
        ``docs/benchmarks.md``). The paper: "rotnet".
    freeze_backbone : bool or "auto", default="auto"
        With a pretext, keep the early layers fixed (weights and batch-norm statistics) and train
        only the backbone's last block and the linear head, as the paper does
        (:func:`skdeepcluster.backbones.freeze_early_layers`). "auto": True with a pretext.
    label_features : {"auto", "online", "pretext", "spectral"}, default="auto"
        Features the pairwise labels are made from. "online": the network's own penultimate
        features of the clean view, detached, every batch (the paper). "pretext": the pretext
        backbone's features (without a pretext, vectors only: the standardised input), computed
        once and held fixed. "spectral": the spectral embedding of those features'
        30-nearest-neighbour graph in ``n_clusters`` dimensions
        (:func:`skdeepcluster.neighbors.neighbor_graph_embedding`), held fixed. "auto":
        "spectral" with a pretext or on vectors (not the paper: measured 0.54 -> 0.97 on
        MNIST-test, and online labels collapse on vectors without a pretext,
        ``docs/benchmarks.md``), "online" for images without one.
    {head_init_parameter}
    max_epochs : int or "auto", default="auto"
        Training epochs. "auto": at least 30 epochs and 5,000 optimisation steps, the steps
        taking at most 250 epochs (179 epochs on the 1,797 digits, 33 on MNIST-test; the
        paper: 220).
    batch_size : int, default=64
        Samples per batch (the paper: 256; measured: ``docs/benchmarks.md``).
    lr : float, default=1e-3
        Learning rate (the paper: SGD 0.1, ``optimizer="sgd"``, with step decay).
    weight_decay : float, default=1e-4
    augment : callable or None, default=None
        View maker :math:`x' = \mathrm{augment}(x)` on the device; None for the data kind's weak
        view (:func:`skdeepcluster.augment.default_augmentations`).
    {shared_parameters}

    Attributes
    ----------
    module_ : torch.nn.Module
        Backbone and linear head (``head_ = 0``).
    head_ : int
        Always 0 (one head).
    threshold_ : float or None
        The threshold used (None for "knn").
    n_neighbors_ : int or None
        The ``k`` used ("knn" only, else None).
    composition_ : str or None
        The composition used ("ricap", "mixup" or None).
    {head_init_attributes}
    n_epochs_ : int
        The number of epochs trained (``max_epochs`` resolved).
    freeze_backbone_ : bool
        Whether the early layers were kept fixed (``freeze_backbone`` resolved).
    label_features_ : str
        "online", "pretext" or "spectral" (``label_features`` resolved).
    {cluster_attributes}
        Per epoch: ``train_loss``, ``bce`` (eq. 5), ``consistency`` (eq. 8, unweighted) and
        ``similar`` (fraction of similar pairs in the batches).
    {shared_attributes}

    Examples
    --------
    >>> from skdeepcluster import LSDC
    >>> from skdeepcluster.datasets import load_digits_images
    >>> X, y = load_digits_images()
    >>> labels = LSDC(n_clusters=10, random_state=0).fit_predict(X)  # doctest: +SKIP
    """

    _pretext_head_init = "random"  # the paper: heads at random after the RotNet pretext
    _collapse_hint = (
        "Raise the similarity threshold in similarity_params (fewer pairs labelled similar), "
        "or start from a pretext."
    )
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "n_clusters": N_CLUSTERS_CONSTRAINT,
        "similarity": [StrOptions({"cosine", "l2", "sne", "knn"})],
        "threshold": [Real, None],
        "center_features": ["boolean"],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left"), None],
        "composition": [StrOptions({"auto", "ricap", "mixup"}), None],
        "consistency_weight": [Interval(Real, 0, None, closed="left")],
        "rampup_epochs": [Interval(Integral, 0, None, closed="left")],
        "pretext": pretext_constraint("auto"),
        "freeze_backbone": ["boolean", StrOptions({"auto"})],
        "label_features": [StrOptions({"auto", "online", "pretext", "spectral"})],
        "head_init": [StrOptions({"auto", "kmeans", "manifold", "random"})],
        "max_epochs": epochs_constraint(1),
    }

    def __init__(
        self,
        n_clusters: int = 10,
        *,
        similarity: str = "cosine",
        threshold: float | None = None,
        center_features: bool = True,
        temperature: float = 1.0,
        n_neighbors: int | None = None,
        composition: str | None = "auto",
        consistency_weight: float = 10.0,
        rampup_epochs: int = 10,
        pretext: Any = "auto",
        freeze_backbone: Any = "auto",
        label_features: str = "auto",
        head_init: str = "auto",
        max_epochs: int | str = "auto",
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        augment: Callable | None = None,
        optimizer: str | Callable = "adamw",
        device: str = "cpu",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.similarity = similarity
        self.threshold = threshold
        self.center_features = center_features
        self.temperature = temperature
        self.n_neighbors = n_neighbors
        self.composition = composition
        self.consistency_weight = consistency_weight
        self.rampup_epochs = rampup_epochs
        self.pretext = pretext
        self.freeze_backbone = freeze_backbone
        self.label_features = label_features
        self.head_init = head_init
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.augment = augment
        self.optimizer = optimizer
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    # ------------------------------------------------------------------ validation
    def _similarity_params(self) -> dict:
        """Keyword parameters of the pairwise criterion (a ``None`` threshold or ``n_neighbors``
        is calibrated later)."""
        if self.similarity == "knn":
            return {"n_neighbors": self.n_neighbors}
        tau = self.threshold
        if tau is not None:
            low, high, what = {
                "cosine": (-1.0, 1.0, "cosine similarity"),
                "sne": (0.0, 1.0, "SNE probability"),
                "l2": (0.0, np.inf, "squared L2 distance"),
            }[self.similarity]
            if not low <= tau <= high:
                raise ValueError(
                    f"threshold ({what}) must be in [{low}, {high}] for "
                    f"similarity={self.similarity!r}, got {tau!r}"
                )
            tau = float(tau)
        if self.similarity == "sne":
            return {"threshold": tau, "temperature": float(self.temperature)}
        if self.similarity == "cosine":
            return {"threshold": tau, "center": bool(self.center_features)}
        return {"threshold": tau}

    def _check_params(self, X: np.ndarray) -> None:
        self._check_n_clusters(self.n_clusters, len(X))
        self._similarity_params()
        if self.composition == "ricap" and X.ndim != 4:
            raise ValueError(
                "composition='ricap' needs images (n, h, w) or (n, c, h, w); X holds "
                "vectors: use composition='mixup' (or 'auto')"
            )
        pretext = resolve_pretext(self.pretext, X)
        if self.freeze_backbone is True and pretext is None:
            raise ValueError(
                "freeze_backbone=True needs a pretext to initialise the frozen layers "
                "(pretext='rotnet', 'simclr' or a transformer)"
            )
        if self.label_features in ("pretext", "spectral") and pretext is None and X.ndim != 2:
            raise ValueError(
                f"label_features={self.label_features!r} on images needs a pretext "
                "(pretext='simclr', 'rotnet' or a transformer); use 'online' to "
                "train from scratch"
            )

    # ------------------------------------------------------------------ fit
    def _fit(self, fit: FitInput) -> None:
        pretext = resolve_pretext(self.pretext, fit.X)
        with_pretext = pretext is not None
        self.composition_ = (
            ("ricap" if fit.X.ndim == 4 else "mixup")
            if self.composition == "auto"
            else self.composition
        )
        self.freeze_backbone_ = (
            with_pretext if self.freeze_backbone == "auto" else bool(self.freeze_backbone)
        )
        self.label_features_ = (
            ("spectral" if with_pretext or fit.X.ndim == 2 else "online")
            if self.label_features == "auto"
            else self.label_features
        )
        self.n_epochs_ = resolve_max_epochs(
            self.max_epochs, len(fit.X), self.batch_size, AUTO_MIN_EPOCHS, AUTO_MIN_STEPS
        )
        backbone = self._initial_backbone(fit, pretext, freeze=self.freeze_backbone_)
        fixed = self._fixed_label_features(backbone, fit, fit.seed)
        params = self._calibrate(self._similarity_params(), fixed, fit.seed)
        weak, _ = self._views(fit.data)
        objective = LSDCObjective(
            weak,
            self.similarity,
            params,
            {"ricap": ricap, "mixup": mixup, None: None}[self.composition_],
            float(self.consistency_weight),
            self.rampup_epochs * batches_per_epoch(len(fit.X), self.batch_size),
            fixed,
            self.n_clusters,
        )
        model = ClusterModel(backbone, backbone.out_features, [self.n_clusters])
        self._init_heads(fit, model)
        self.module_ = self._train(
            "clustering",
            model,
            objective,
            fit.data,
            self.n_epochs_,
            log_terms=("bce", "consistency", "similar"),
        )
        self.head_ = 0
        self.threshold_ = objective.similarity_params.get("threshold")
        self.n_neighbors_ = objective.similarity_params.get("n_neighbors")

    def _fixed_label_features(self, backbone: nn.Module, fit: FitInput, seed: int) -> Tensor | None:
        """The features pairwise labels are made from when they are held fixed, else None: the
        pretext's, or without a pretext the standardised input (an untrained backbone's
        features are no better than its input)."""
        if self.label_features_ == "online":
            return None
        if self.pretext_ is None:
            features = self._standardized_input(fit)
        else:
            features = self._forward_data(backbone, fit.data)
        n = len(features)
        if self.label_features_ == "spectral" and n >= 3:
            # tiny data: the graph and the eigenvectors (plus the dropped trivial one) must fit
            features = neighbor_graph_embedding(
                features,
                min(self.n_clusters, n - 2),
                min(SPECTRAL_NEIGHBORS, n - 1),
                random_state=seed,
            )
            # the eigenvectors may differ in their last bits between processes
            features = distributed.same_on_every_process(features)
        return features

    def _calibrate(self, params: dict, fixed: Tensor | None, seed: int) -> dict:
        """Fill a ``None`` threshold / ``n_neighbors`` so that 1 / n_clusters of the pairs of 20
        random batches of the fixed label features are similar. Online labels are calibrated by
        the objective instead, on its first batch, where the features are exactly those the
        loss sees (training-mode batch norm over all the views)."""
        key = calibrated_parameter(self.similarity)
        if params[key] is None and fixed is not None:
            gen = torch.Generator().manual_seed(seed)
            batch = min(self.batch_size, len(fixed))
            n_batches = max(1, min(CALIBRATION_BATCHES, len(fixed) // batch))
            order = torch.randperm(len(fixed), generator=gen)[: n_batches * batch]
            batches = [fixed[i.to(fixed.device)].float() for i in order.view(n_batches, batch)]
            params = {**params, key: _calibrated(batches, self.similarity, params, self.n_clusters)}
        return params
