"""SeLa: Self-labelling via simultaneous clustering and representation learning
(Asano, Rupprecht and Vedaldi, ICLR 2020)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from torch import Tensor, nn

from .. import distributed
from .._training import DeviceData, HeadLosses, batched_forward, select_head
from .._validation import check_positive_int
from ..base import (
    COMMON_CONSTRAINTS,
    INFERENCE_BATCH,
    LR_SCHEDULE_CONSTRAINT,
    FitInput,
    epochs_constraint,
    resolve_max_epochs,
    to_numpy,
)
from ..heads import ClusterModel
from ..ot import sinkhorn_knopp
from ._base import DeepClusterMixin, pretext_constraint

#: Sinkhorn stops when the cluster sums are off by at most this much in L1 (twice the fraction of
#: the mass that is misplaced): well below one sample's share of the argmax labels on data of up
#: to ~10^5 samples, and reached in tens to hundreds of iterations at lambda=25.
SINKHORN_TOL = 1e-3
#: The relabelling's Sinkhorn tests convergence every this many iterations: each test reads
#: the error on the host (a device sync), and a few extra iterations cost less than a sync.
SINKHORN_CHECK_EVERY = 10
#: ``max_epochs="auto"``: at least this many epochs and optimisation steps.
AUTO_MIN_EPOCHS = 100
AUTO_MIN_STEPS = 0


#: Heads of ``n_clusters`` when ``n_heads=None`` and ``n_clusters`` is an int.
DEFAULT_N_HEADS = 3


def label_update_epochs(n_updates: int, max_epochs: int) -> np.ndarray:
    """Epochs at whose start SeLa recomputes its labels (Appendix A.1 of the paper).

    The ``M = n_updates`` updates happen at the fractions ``t_i = (i / (M - 1))**2``,
    ``i = 0 .. M-1``, of training (``t_0 = 0`` when ``M = 1``): dense at the start, when the
    representation changes fast, sparse at the end. Fraction ``t`` maps to the start of epoch
    ``round(t * (max_epochs - 1))``, so the first update is at epoch 0 and the last at the start of
    the last epoch (which trains on the final labels). Updates that round to the same epoch are
    moved to the next free epochs, so the result always holds ``M`` distinct epochs.

    Parameters
    ----------
    n_updates : int
        ``M >= 1``, at most ``max_epochs``.
    max_epochs : int
        Training epochs, ``>= 1``.

    Returns
    -------
    ndarray of shape (n_updates,), dtype int64
        Strictly increasing epoch indices in ``[0, max_epochs - 1]``, the first one 0.
    """
    m = check_positive_int(n_updates, "n_label_updates")
    e = check_positive_int(max_epochs, "max_epochs")
    if m > e:
        raise ValueError(
            f"n_label_updates={m} must not exceed max_epochs={e} "
            "(at most one label update per epoch)"
        )
    t = (np.arange(m) / (m - 1)) ** 2 if m > 1 else np.zeros(1)
    epochs = np.rint(t * (e - 1)).astype(np.int64)
    for i in range(1, m):  # distinct: push crowded updates later...
        epochs[i] = max(epochs[i], epochs[i - 1] + 1)
    for i in range(m - 1, -1, -1):  # ...without running past the last epoch
        epochs[i] = min(epochs[i], e - m + i)
    return epochs


#: In a distributed fit, Sinkhorn is solved on row shards across the processes from this many
#: logits of a head (rows x clusters) up; smaller problems are solved whole on each process.
DISTRIBUTED_SINKHORN_MIN_ENTRIES = 1 << 24


@dataclass
class SeLaObjective:
    """Step 1, eq. (1) per head on an augmented view against its current labels; step 2, the
    Sinkhorn self-labelling of eq. (7)/(8) of the whole data set at the scheduled epochs.

    Parameters
    ----------
    augment : callable
        View maker used for training and for the predictions the labels are computed from.
    labels : Tensor of shape (n_heads, n_samples), int64
        Initial labels (replaced at each update).
    update_epochs : sequence of int
        Epoch indices at whose start the labels are recomputed.
    sinkhorn_lambda : float
        ``lambda`` of eq. (7).
    marginals : list of Tensor or None
        Per head, the cluster marginal ``r`` (None for uniform).
    """

    augment: Callable[[Tensor], Tensor]
    labels: Tensor
    update_epochs: Sequence[int]
    sinkhorn_lambda: float
    marginals: list[Tensor | None]

    def __post_init__(self) -> None:
        self.update_epochs = {int(e) for e in self.update_epochs}
        self.head_losses = HeadLosses(self.labels.shape[0], self.labels.device)
        self.epoch = -1
        self.sinkhorn_error = 0.0

    def on_epoch_begin(self, net: Any) -> None:
        self.epoch += 1
        if self.epoch in self.update_epochs:
            changed = self.update_labels(net.module_, net.data)
            net.history.record("label_change", changed)
            net.history.record("sinkhorn_error", self.sinkhorn_error)

    @torch.no_grad()
    def update_labels(self, module: nn.Module, data: DeviceData) -> float:
        """Sinkhorn labels of every head from its log-softmax on augmented data (eval mode).

        Returns the fraction of labels that changed, averaged over the heads. Sinkhorn's
        convergence warnings are not raised here (on confident predictions it can stop short of
        ``SINKHORN_TOL``, which only skews the cluster sizes a little): the largest error over the
        heads is kept in ``sinkhorn_error`` and checked once at the end of ``fit``.
        """
        logits = batched_forward(module, data, INFERENCE_BATCH, amp=True, views=self.augment)
        # a distributed fit with large logits: each process solves for its rows, the cluster
        # sums all-reduced every iteration; below that every process solves the whole problem
        # (the same result without a collective per iteration, which costs more)
        spread = (
            distributed.current() is not None
            and logits[0].numel() >= DISTRIBUTED_SINKHORN_MIN_ENTRIES
        )
        first, last = distributed.shard_of(len(data)) if spread else (0, len(data))
        labels, errors = [], []
        for head_logits, marginal in zip(logits, self.marginals):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                result = sinkhorn_knopp(
                    F.log_softmax(head_logits[first:last], dim=1),
                    lam=self.sinkhorn_lambda,
                    cluster_marginal=marginal,
                    tol=SINKHORN_TOL,
                    check_every=SINKHORN_CHECK_EVERY,
                    return_labels=True,
                    distributed=spread,
                )
            head_labels = (
                distributed.gather_shards(result.labels, len(data)) if spread else result.labels
            )
            labels.append(head_labels.to(self.labels))
            errors.append(result.marginal_error)
        new = torch.stack(labels)
        changed = float((new != self.labels).float().mean())
        self.labels = new
        self.sinkhorn_error = max(errors)
        return changed

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        targets = self.labels[:, idx]  # each head's labels of the batch's rows
        logits = module(self.augment(data[idx]))
        losses = torch.stack(
            [F.cross_entropy(head.float(), target) for head, target in zip(logits, targets)]
        )
        self.head_losses.add(losses)
        return {"loss": losses.mean()}  # eq. (1) per head, averaged over the heads


class SeLa(DeepClusterMixin, ClusterMixin, BaseEstimator):
    r"""SeLa: self-labelling by optimal transport, alternating with representation learning.

    Asano, Rupprecht and Vedaldi, "Self-labelling via simultaneous clustering and representation
    learning", ICLR 2020.

    A network (backbone and ``n_heads`` linear heads) is trained with the cross-entropy of
    eqs. (1)-(2), :math:`E(p, q) = -\frac{1}{N}\sum_i \sum_y q(y|x_i) \log p(y|x_i)`, against
    labels ``q`` that
    are themselves chosen to minimise the same cross-entropy, under the constraint that the labels
    split the data in the given proportions (equal by default), which rules out the degenerate
    solution of one cluster. Writing :math:`P_{yi} = p(y|x_i)/N` and relaxing the labels to a
    transport plan :math:`Q` with cluster marginal :math:`r` (uniform :math:`1/K`) and sample
    marginal :math:`c = 1/N`, the label step is the entropy-regularised transport problem

    .. math::

        \min_{Q \in U(r, c)} \langle Q, -\log P \rangle
        + \frac{1}{\lambda} \mathrm{KL}(Q \| r c^\top),
        \qquad U(r, c) = \{Q \in \mathbb{R}_+^{K \times N} : Q 1 = r,\ Q^\top 1 = c\}  \tag{7}

    whose solution is

    .. math::

        Q = \operatorname{diag}(\alpha) \, P^{\lambda} \, \operatorname{diag}(\beta)  \tag{8}

    (power taken element-wise) with the scaling vectors :math:`\alpha, \beta` found by
    Sinkhorn-Knopp iterations (:func:`skdeepcluster.ot.sinkhorn_knopp`, log domain). Each sample
    then takes the cluster of its largest entry in :math:`Q`.

    ``fit`` alternates the two steps on the shared training loop:

    1. **representation learning**: every epoch, the cross-entropy of each head on an augmented
       view of each batch against that head's current labels, averaged over the heads, trains
       backbone and heads together;
    2. **self-labelling**: at the start of the scheduled epochs the whole data set goes through
       the network (eval mode, augmented view), and each head's labels are recomputed from its
       log-softmax by eqs. (7)-(8) (Sinkhorn stopped at an L1 error of the cluster sums of
       ``SINKHORN_TOL``; a ``ConvergenceWarning`` is raised once, at the end of ``fit``, if the
       last update is far off). Labels start as a random equal split (in the proportions of
       ``cluster_marginal`` when it is given); as the first update is at epoch 0 they are only a
       placeholder: the first real labels come from the heads, which start either random (the
       paper) or as a k-means classifier of the pretext features (``head_init``).

    **Schedule.** The ``M = n_label_updates`` label updates are spread over training as in
    Appendix A.1 of the paper: at the fractions :math:`t_i = (i / (M-1))^2` of training, mapped to
    the start of epoch ``round(t_i * (max_epochs - 1))`` (see :func:`label_update_epochs`): the
    first at epoch 0, dense at the start, the last at the start of the last epoch.

    **Heads.** ``n_clusters`` is an int (every head has that many clusters) or a list of ints,
    one per head (heads of several granularities share the backbone; the paper's multi-head
    variant). ``predict`` uses one head with ``K0`` clusters, ``K0`` being ``n_clusters`` or its
    first entry.

    **Head selection (label-free).** Among the heads with ``K0`` clusters, the kept one (``head_``)
    is the one with the lowest cross-entropy against its own Sinkhorn labels, averaged over the
    batches of the last epoch: the head whose predictions agree best with the balanced partition it
    induces. The others stay in ``module_``.

    **Input.** By default (``pretext="auto"``) a backbone for images is first learnt by SimCLR
    self-supervision, and SeLa fine-tunes it. For vectors, and with ``pretext=None``, a backbone
    is built for X's shape (an MLP for vectors, a small CNN or a ResNet-18 for images,
    :func:`skdeepcluster.backbones.build_backbone`) and trained from scratch as in the paper.
    Both train on views from :func:`skdeepcluster.augment.default_augmentations` (noise and
    masking for vectors, crops, flips and colour jitter for images). Vectors ``(n, d)`` that are
    already features (embeddings, the output of a ``SimCLR`` step in a ``Pipeline``) need no
    special mode: with ``pretext=None`` SeLa trains an MLP on them with the vector views, which
    is what self-labelling needs (a representation that moves with the labels; linear heads on
    frozen features would only re-partition them).

    Parameters
    ----------
    n_clusters : int or list of int, default=10
        Clusters of each head: one int for all ``n_heads`` heads, or one int per head (then the
        list gives the number of heads). Each ``>= 2`` and at most the number of samples.
    n_heads : int or None, default=None
        Number of heads; None for ``len(n_clusters)`` when it is a list, else 3 (the paper: 10;
        measured: ``docs/benchmarks.md``). With a list it must be None or ``len(n_clusters)``.
    sinkhorn_lambda : float, default=25.0
        ``lambda > 0`` of eq. (7): large values give a sharper (closer to hard) plan, at the cost
        of more Sinkhorn iterations. 25 as in the paper.
    n_label_updates : int or None, default=None
        ``M``: how many times the labels are recomputed (at most ``max_epochs``); None for one
        update per epoch (the paper: about 80 in 160 epochs; measured: ``docs/benchmarks.md``).
        With fewer updates than epochs the squared schedule decides when they happen.
    cluster_marginal : array-like of shape (K0,) or None, default=None
        The cluster marginal ``r`` of eq. (7) for the heads with ``K0`` clusters: the share of the
        samples each cluster receives (positive, normalised to sum 1). None for uniform ``1/K0``.
        Use it when the cluster sizes are known or estimated not to be equal (imbalanced data);
        heads with another number of clusters always use a uniform marginal. Cluster ``j`` of the
        kept head gets about ``cluster_marginal[j] * n_samples`` samples in ``pseudo_labels_``.
    pretext : {"auto", "simclr", "rotnet", "autoencoder"}, transformer or None, default="auto"
        Where the backbone starts: a named pretext (:class:`~skdeepcluster.SimCLR`,
        :class:`~skdeepcluster.RotNet`) or an (unfitted) pretext transformer exposing ``backbone_``
        after fit (cloned, never modified), either given this estimator's ``device``,
        ``random_state`` and ``verbose`` unless set on it; None trains from scratch (the paper).
        "auto": "simclr" for images; for vectors "autoencoder" from 256 features, else None
        (measured: ``docs/benchmarks.md``).
    {head_init_parameter}
    backbone : torch.nn.Module or None, default=None
        Network mapping a batch of raw inputs to ``(batch, features)`` when training from scratch
        (copied, never modified); None picks one from X's shape. Ignored with a ``pretext``.
    max_epochs : int or "auto", default="auto"
        Training epochs; "auto": 100 (the paper: 400 on CIFAR; measured: ``docs/benchmarks.md``).
    batch_size : int, default=256
    lr : float, default=2e-3
        Learning rate of backbone and heads (the paper: SGD 0.05, ``optimizer="sgd"``, with step
        decay).
    lr_schedule : {"constant", "cosine"}, default="constant"
        "constant" keeps the learning rate (the paper decays it in steps; measured:
        ``docs/benchmarks.md``); "cosine" anneals it to 0 over training.
    weight_decay : float, default=5e-2
        Weight decay (decoupled with AdamW); strong, so that the network does not simply
        memorise its current labels between updates (the paper: 5e-4 with SGD; measured:
        ``docs/benchmarks.md``).
    augment : callable or None, default=None
        ``view = augment(batch)`` on the device, for training and for the predictions the labels
        are computed from; None for the data kind's default weak view
        (:func:`skdeepcluster.augment.default_augmentations`).
    {shared_parameters}

    Attributes
    ----------
    pseudo_labels_ : ndarray of shape (n_samples,)
        The last Sinkhorn labels of head ``head_``.
    head_pseudo_labels_ : ndarray of shape (n_heads, n_samples)
        The last Sinkhorn labels of every head.
    module_ : torch.nn.Module
        Backbone and all the heads (``module_(x)`` returns one logit tensor per head).
    head_ : int
        Index of the head used by ``predict`` (see head selection above).
    head_sizes_ : list of int
        Clusters of each head.
    head_losses_ : ndarray of shape (n_heads,)
        Mean cross-entropy of each head against its labels over the last epoch.
    label_update_epochs_ : ndarray of shape (n_label_updates,)
        Epochs at whose start the labels were recomputed.
    {head_init_attributes}
    n_epochs_ : int
        The number of epochs trained (``max_epochs`` resolved).
    {cluster_attributes}
        Per epoch ``train_loss``; at the update epochs also ``label_change`` (fraction of labels
        changed, mean over the heads) and ``sinkhorn_error`` (largest L1 error of the cluster
        sums of the Sinkhorn plans over the heads).
    {shared_attributes}

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skdeepcluster import SeLa
    >>> X, y = load_digits(return_X_y=True)
    >>> labels = SeLa(n_clusters=10, random_state=0).fit_predict(X)  # doctest: +SKIP
    """

    _collapse_hint = "Check cluster_marginal, or train longer between label updates."
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "n_clusters": [Interval(Integral, 2, None, closed="left"), "array-like"],
        "n_heads": [Interval(Integral, 1, None, closed="left"), None],
        "sinkhorn_lambda": [Interval(Real, 0, None, closed="neither")],
        "n_label_updates": [Interval(Integral, 1, None, closed="left"), None],
        "cluster_marginal": ["array-like", None],
        "pretext": pretext_constraint("auto"),
        "head_init": [StrOptions({"auto", "kmeans", "manifold", "random"})],
        "backbone": [nn.Module, None],
        "max_epochs": epochs_constraint(1),
        "lr_schedule": LR_SCHEDULE_CONSTRAINT,
    }

    def __init__(
        self,
        n_clusters: int | Sequence[int] = 10,
        *,
        n_heads: int | None = None,
        sinkhorn_lambda: float = 25.0,
        n_label_updates: int | None = None,
        cluster_marginal: Any = None,
        pretext: Any = "auto",
        head_init: str = "auto",
        backbone: nn.Module | None = None,
        max_epochs: int | str = "auto",
        batch_size: int = 256,
        lr: float = 2e-3,
        lr_schedule: str = "constant",
        weight_decay: float = 5e-2,
        augment: Callable | None = None,
        optimizer: str | Callable = "adamw",
        device: str = "cpu",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_heads = n_heads
        self.sinkhorn_lambda = sinkhorn_lambda
        self.n_label_updates = n_label_updates
        self.cluster_marginal = cluster_marginal
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

    # ------------------------------------------------------------------ validation
    def _sizes(self, n_samples: int) -> list[int]:
        """Clusters per head from ``n_clusters`` and ``n_heads``, validated."""
        listed = isinstance(self.n_clusters, (list, tuple, np.ndarray))
        if listed and self.n_heads is not None and self.n_heads != len(self.n_clusters):
            raise ValueError(
                f"n_heads={self.n_heads!r} does not match n_clusters, a list of "
                f"{len(self.n_clusters)} head sizes; leave n_heads=None with a list"
            )
        n_heads = DEFAULT_N_HEADS if self.n_heads is None else self.n_heads
        return self._head_sizes(self.n_clusters, n_heads, n_samples)

    def _check_marginal(self, k: int) -> np.ndarray | None:
        if self.cluster_marginal is None:
            return None
        try:
            marginal = np.asarray(self.cluster_marginal, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                "cluster_marginal must be None or an array of cluster shares, got "
                f"{self.cluster_marginal!r}"
            ) from exc
        if marginal.shape != (k,):
            raise ValueError(
                f"cluster_marginal must have one entry per cluster, shape ({k},); got "
                f"shape {marginal.shape}"
            )
        if not np.all(np.isfinite(marginal)) or np.any(marginal <= 0):
            raise ValueError(f"cluster_marginal entries must be finite and > 0, got {marginal}")
        return marginal / marginal.sum()

    def _check_params(self, X: np.ndarray) -> None:
        self._check_marginal(self._sizes(len(X))[0])

    # ------------------------------------------------------------------ fit
    def _fit(self, fit: FitInput) -> None:
        sizes = self.head_sizes_ = self._sizes(len(fit.X))
        marginal = self._check_marginal(sizes[0])
        self.n_epochs_ = resolve_max_epochs(
            self.max_epochs, len(fit.X), self.batch_size, AUTO_MIN_EPOCHS, AUTO_MIN_STEPS
        )
        self.label_update_epochs_ = label_update_epochs(
            self.n_epochs_ if self.n_label_updates is None else self.n_label_updates, self.n_epochs_
        )
        backbone = self._initial_backbone(fit, self.pretext, body=self.backbone)
        module = ClusterModel(backbone, backbone.out_features, sizes)
        self._init_heads(fit, module)
        weak, _ = self._views(fit.data)
        objective = SeLaObjective(
            weak,
            self._initial_labels(len(fit.X), sizes, marginal),
            self.label_update_epochs_,
            self.sinkhorn_lambda,
            self._marginals(sizes, marginal),
        )
        self.module_ = self._train(
            "clustering", module, objective, fit.data, self.n_epochs_, lr_schedule=self.lr_schedule
        )
        self.head_losses_ = objective.head_losses.means()
        self.head_ = select_head(self.head_losses_, sizes, sizes[0])
        self.head_pseudo_labels_ = to_numpy(objective.labels)
        self.pseudo_labels_ = self.head_pseudo_labels_[self.head_]
        if objective.sinkhorn_error > 0.05:
            warnings.warn(
                f"SeLa: the last Sinkhorn label update stopped at a cluster-marginal L1 error of "
                f"{objective.sinkhorn_error:.3f} (tol {SINKHORN_TOL}), so the cluster sizes of "
                "pseudo_labels_ are only roughly the asked ones; a smaller sinkhorn_lambda "
                "converges faster.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _marginals(self, sizes: list[int], marginal: np.ndarray | None) -> list[Tensor | None]:
        if marginal is None:
            return [None] * len(sizes)
        r = torch.as_tensor(marginal, dtype=torch.float32, device=self.device_)
        return [r if k == sizes[0] else None for k in sizes]

    def _initial_labels(self, n: int, sizes: list[int], marginal: np.ndarray | None) -> Tensor:
        """A random split per head: equal, or in the proportions of ``marginal``."""
        rows = []
        for k in sizes:
            if marginal is not None and k == sizes[0]:
                counts = np.floor(marginal * n).astype(np.int64)
                counts[: n - counts.sum()] += 1  # n in all
                split = torch.repeat_interleave(torch.arange(k), torch.as_tensor(counts))
            else:
                split = torch.arange(n) % k
            rows.append(split[torch.randperm(n)])
        return torch.stack(rows).to(self.device_)
