"""C2BIN: Learning Representations by Contrasting Clusters While Bootstrapping Instances
(anonymous ICLR 2021 submission)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils._param_validation import Interval, StrOptions
from torch import Tensor, nn

from .. import distributed
from .._training import DeviceData, HeadLosses, clusters_used
from ..base import (
    COMMON_CONSTRAINTS,
    LR_SCHEDULE_CONSTRAINT,
    FitInput,
    epochs_constraint,
    resolve_max_epochs,
)
from ..heads import ClusterModel, MomentumTarget, mlp_head
from ..losses import c2bin_alignment_loss, c2bin_cluster_loss
from ._base import N_CLUSTERS_CONSTRAINT, DeepClusterMixin, pretext_constraint

#: ``max_epochs="auto"``: at least this many epochs and optimisation steps.
AUTO_MIN_EPOCHS = 60
AUTO_MIN_STEPS = 3000
#: ... and at most this many epochs to reach the steps (the digits' 429 epochs were measured).
AUTO_MAX_EPOCHS = 500
#: ``head_sizes=None``: heads of these multiples of ``n_clusters`` (the paper: 10, 40, 160).
DEFAULT_SCALES = (1, 4, 16)


class C2BINModel(ClusterModel):
    """The runner: backbone, linear cluster heads, instance projector G and predictor P^a.

    ``forward`` returns the head logits, as :class:`~skdeepcluster.heads.ClusterModel` does, so
    predictions need nothing else; the objective reads the projector and predictor itself.
    """

    def __init__(
        self,
        backbone: nn.Module,
        in_features: int,
        head_sizes: Sequence[int],
        hidden: int,
        projection_dim: int,
    ) -> None:
        super().__init__(backbone, in_features, head_sizes)
        self.projector = mlp_head(in_features, hidden, projection_dim)
        self.predictor = mlp_head(projection_dim, hidden, projection_dim)


def _encoder(module: C2BINModel) -> nn.Sequential:
    """The part the follower copies: backbone then projector (modules shared, not copied)."""
    return nn.Sequential(module.backbone, module.projector)


@dataclass
class C2BINObjective:
    """Two views; the runner's predictions align with the follower's projections of the other
    view (eq. 1); every head contrasts its batch-wise cluster assignments (eqs. 2-5); the
    follower is the EMA of the runner's backbone and projector (eq. 8), updated after each
    optimiser step."""

    augment: Callable[[Tensor], Tensor]
    temperature: float
    entropy_weight: float
    cluster_weight: float
    alignment_weight: float
    momentum: float
    symmetric: bool
    contrast: str
    n_heads: int
    device: torch.device
    follower: MomentumTarget | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.head_losses = HeadLosses(self.n_heads, self.device)

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        if self.follower is None:  # from the live module: its weights, device and dtype
            self.follower = MomentumTarget(_encoder(distributed.local_module(module)))
        x = data[idx]
        n = len(x)
        v1, v2 = self.augment(x), self.augment(x)
        features = module.backbone(torch.cat([v1, v2]))  # batch norm over both views
        align = (
            self._alignment(module, features, v1, v2)
            if self.alignment_weight
            else (features.new_zeros(()))
        )
        logits = [head(features) for head in module.heads]
        terms = [
            c2bin_cluster_loss(*head.chunk(2), self.temperature, self.entropy_weight, self.contrast)
            for head in logits
        ]
        totals = torch.stack([t.total for t in terms])
        self.head_losses.add(totals)
        first = logits[0][:n].detach().argmax(1)
        used = clusters_used(first, logits[0].shape[1])
        return {
            # eqs. (6)-(7): the heads' losses summed, then weighted against the alignment
            "loss": self.alignment_weight * align + self.cluster_weight * totals.sum(),
            "align": align,
            "contrast": torch.stack([t.contrast for t in terms]).mean(),
            "entropy": torch.stack([t.entropy for t in terms]).mean(),
            "clusters_used": used,
        }

    def _alignment(self, module: nn.Module, features: Tensor, v1: Tensor, v2: Tensor) -> Tensor:
        """Eq. (1): the runner's predictions against the follower's projections of the other
        view, both directions when ``symmetric``."""
        predictions = module.predictor(module.projector(features))
        targets = self.follower(torch.cat([v2, v1]))  # swapped: q(v1) ~ z(v2), q(v2) ~ z(v1)
        if self.symmetric:
            return c2bin_alignment_loss(predictions, targets)
        n = len(v1)
        return c2bin_alignment_loss(predictions[:n], targets[:n])

    def on_batch_end(self, net: Any) -> None:
        self.follower.update(_encoder(net.module_), self.momentum)


class C2BIN(DeepClusterMixin, ClusterMixin, BaseEstimator):
    r"""C2BIN: contrasting batch-wise cluster assignments while bootstrapping instances.

    Two networks see two augmented views of each sample. The **runner** (a backbone, an instance
    projector and predictor, and linear cluster heads of several sizes) is trained; the
    **follower** (a copy of the runner's backbone and projector) gets no gradient and follows the
    runner as an exponential moving average, :math:`\phi \leftarrow \gamma \phi + (1-\gamma)
    \theta`, after every optimiser step (eq. 8, :class:`~skdeepcluster.heads.MomentumTarget`).

    - **Instance term**, eq. (1) (:func:`~skdeepcluster.losses.c2bin_alignment_loss`): 1 - cos
      between the runner's prediction of one view and the follower's projection of the other.
    - **Cluster term**, eqs. (2)-(5) (:func:`~skdeepcluster.losses.c2bin_cluster_loss`): per head,
      the columns of the two views' ``B x K`` softmax assignments are contrasted (NT-Xent, cosine,
      :math:`\tau`), minus :math:`\lambda_{ent}` times the entropy of the mean assignment.
    - **Multi-scale** (eq. 6): heads of several K, their losses summed; **total** (eq. 7):
      alignment + :math:`\lambda_{clust}` cluster.

    ``predict`` takes the argmax of the head with ``n_clusters`` clusters (the first head).
    The PDF text garbles eqs. (1) and (4); both are reconstructed (see the loss functions).

    Parameters
    ----------
    n_clusters : int, default=10
        Number of clusters (at least 2); the first head has that many.
    head_sizes : list of int or None, default=None
        Clusters of each head; None for ``[k, 4k, 16k]`` with ``k = n_clusters`` (the paper:
        10, 40, 160), each clipped to the batch size and the number of samples. A list must
        contain ``n_clusters`` and no size above the batch size.
    temperature : float, default=1.0
        :math:`\tau` of the cluster contrast (the paper's).
    entropy_weight : float, default=1.0
        :math:`\lambda_{ent}` of eq. (5) (the paper's).
    cluster_weight : float, default=1.0
        :math:`\lambda_{clust}` of eq. (7) (the paper's); 0 leaves the instance term alone.
    alignment_weight : float, default=1.0
        Weight of the instance term, eq. (7) (the paper: 1); 0 trains the cluster term alone.
    momentum : float, default=0.995
        :math:`\gamma` of the follower's update (the paper's).
    symmetric : bool, default=True
        Align both directions (view 1 -> view 2 and back), as BYOL does; False: the paper's one
        direction.
    contrast : {"nt_xent", "cross_view"}, default="nt_xent"
        Which columns are the negatives in eq. (4): the other clusters of both views
        ("nt_xent"), or of the other view only ("cross_view", PICA's form).
    hidden_dim : int, default=512
        Hidden width of the projector and predictor (the paper: 512).
    projection_dim : int, default=128
        Output width of the projector and predictor.
    pretext : {"auto", "simclr", "rotnet", "autoencoder"}, transformer or None, default="auto"
        A named pretext or a pretext transformer first learns the backbone, and the heads start as
        k-means classifiers of its features (``head_init``); None trains from scratch in one stage
        (the paper). "auto": "simclr" for images; for vectors "autoencoder" from 256 features, else
        None. Departs from the paper: a SimCLR start measured better on digits images
        (``docs/benchmarks.md``).
    {head_init_parameter}
    backbone : torch.nn.Module or None, default=None
        Network mapping a batch to ``(batch, features)`` when training from scratch; None picks
        one from X's shape.
    max_epochs : int or "auto", default="auto"
        Training epochs; "auto": at least 60 epochs and 3,000 optimisation steps, the steps
        taking at most 500 epochs.
    batch_size : int, default=256
    lr : float, default=1e-3
        Learning rate (the paper: Adam 3e-4, ``optimizer="adam"``, on 100 GPU epochs).
    lr_schedule : {"constant", "cosine"}, default="cosine"
        The paper anneals the learning rate to 0 (cosine).
    weight_decay : float, default=1e-4
        The paper: none.
    augment : callable or None, default=None
        View maker (both views are drawn from it); None for the data kind's default weak view.
    {shared_parameters}

    Attributes
    ----------
    module_ : torch.nn.Module
        Backbone and the kept head (``head_ = 0``).
    head_ : int
        Always 0.
    head_sizes_ : list of int
        Clusters of each trained head (the kept one is ``head_sizes_[best_head_]``).
    {head_selection_attributes}
    {head_init_attributes}
    n_epochs_ : int
        The number of epochs trained (``max_epochs`` resolved).
    {cluster_attributes}
        Per epoch: ``align``, ``contrast``, ``entropy`` and ``clusters_used`` (distinct argmax
        clusters of the first head per batch, mean over the batches).
    {shared_attributes}
    """

    _collapse_hint = (
        "Raise entropy_weight or cluster_weight, or start from a pretext (pretext='simclr')."
    )
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "n_clusters": N_CLUSTERS_CONSTRAINT,
        "head_sizes": ["array-like", None],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "entropy_weight": [Interval(Real, 0, None, closed="left")],
        "cluster_weight": [Interval(Real, 0, None, closed="left")],
        "alignment_weight": [Interval(Real, 0, None, closed="left")],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "symmetric": ["boolean"],
        "contrast": [StrOptions({"nt_xent", "cross_view"})],
        "hidden_dim": [Interval(Integral, 1, None, closed="left")],
        "projection_dim": [Interval(Integral, 1, None, closed="left")],
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
        head_sizes: Sequence[int] | None = None,
        temperature: float = 1.0,
        entropy_weight: float = 1.0,
        cluster_weight: float = 1.0,
        alignment_weight: float = 1.0,
        momentum: float = 0.995,
        symmetric: bool = True,
        contrast: str = "nt_xent",
        hidden_dim: int = 512,
        projection_dim: int = 128,
        pretext: Any = "auto",
        head_init: str = "auto",
        backbone: nn.Module | None = None,
        max_epochs: int | str = "auto",
        batch_size: int = 256,
        lr: float = 1e-3,
        lr_schedule: str = "cosine",
        weight_decay: float = 1e-4,
        augment: Callable | None = None,
        optimizer: str | Callable = "adamw",
        device: str = "cpu",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.head_sizes = head_sizes
        self.temperature = temperature
        self.entropy_weight = entropy_weight
        self.cluster_weight = cluster_weight
        self.alignment_weight = alignment_weight
        self.momentum = momentum
        self.symmetric = symmetric
        self.contrast = contrast
        self.hidden_dim = hidden_dim
        self.projection_dim = projection_dim
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
        """Clusters of each head, validated: more columns than batch rows cannot all be told
        apart by a contrast over the batch."""
        rows = min(self.batch_size, n_samples)
        k = self._check_n_clusters(self.n_clusters, rows, "n_clusters (per batch)")
        if self.head_sizes is None:
            return list(dict.fromkeys(min(s * k, rows) for s in DEFAULT_SCALES))
        sizes = self._head_sizes(list(self.head_sizes), 1, rows)
        if k not in sizes:
            raise ValueError(f"head_sizes {sizes} must contain n_clusters={k} (the predicted head)")
        return sizes

    def _check_params(self, X: np.ndarray) -> None:
        self._sizes(len(X))

    def _fit(self, fit: FitInput) -> None:
        sizes = self.head_sizes_ = self._sizes(len(fit.X))
        self.n_epochs_ = resolve_max_epochs(
            self.max_epochs,
            len(fit.X),
            self.batch_size,
            AUTO_MIN_EPOCHS,
            AUTO_MIN_STEPS,
            AUTO_MAX_EPOCHS,
        )
        backbone = self._initial_backbone(fit, self.pretext, body=self.backbone)
        module = C2BINModel(
            backbone, backbone.out_features, sizes, self.hidden_dim, self.projection_dim
        )
        self._init_heads(fit, module)
        weak, _ = self._views(fit.data)
        objective = C2BINObjective(
            weak,
            self.temperature,
            self.entropy_weight,
            self.cluster_weight,
            self.alignment_weight,
            self.momentum,
            self.symmetric,
            self.contrast,
            len(sizes),
            self.device_,
        )
        trained = self._train(
            "clustering",
            module,
            objective,
            fit.data,
            self.n_epochs_,
            log_terms=("align", "contrast", "entropy", "clusters_used"),
            lr_schedule=self.lr_schedule,
        )
        self._keep_best_head(trained, objective.head_losses, sizes[0])
