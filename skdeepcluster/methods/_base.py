"""What every clustering method shares beyond the fit skeleton: predictions, ``labels_``, the
initial backbone (from a pretext or new), head sizes, and ``pretext__<param>`` settings."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import TransformerTags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from torch import nn

from .. import distributed
from .._training import DeviceData, HeadLosses, select_head
from .._validation import check_positive_int
from ..backbones import Backbone, Standardize, build_backbone, freeze_early_layers
from ..base import DeepEstimatorMixin, FitInput, resolve_max_epochs, to_numpy
from ..heads import ClusterModel, fit_linear_head, head_sizes_of, kmeans_heads, manifold_partition
from ..metrics import SCORE_MUTUAL, SCORE_N_NEIGHBORS, knn_modularity
from ..pretext import NAMED_PRETEXTS, fit_pretext, named_pretext, pretext_backbone

#: The manifold start (:meth:`DeepClusterMixin._manifold_start`) trains at least this many
#: epochs and this many optimisation steps, and at most ``MANIFOLD_START_MAX_EPOCHS`` epochs
#: (small data sets make few batches per epoch).
MANIFOLD_START_MIN_EPOCHS = 5
MANIFOLD_START_MIN_STEPS = 100
MANIFOLD_START_MAX_EPOCHS = 20

#: ``n_clusters``: at least two clusters (one cluster is no clustering).
N_CLUSTERS_CONSTRAINT = [Interval(Integral, 2, None, closed="left")]


#: ``pretext="auto"`` fits an :class:`~skdeepcluster.pretext.AutoEncoder` on vectors with at
#: least this many features, and none on narrower ones (measured: ``docs/benchmarks.md``).
AUTOENCODER_MIN_FEATURES = 256


def resolve_pretext(pretext: Any, X: np.ndarray) -> Any:
    """``pretext`` with "auto" resolved for X: "simclr" for images (4-d X); for vectors
    "autoencoder" from :data:`AUTOENCODER_MIN_FEATURES` features up (wide vectors, MNIST's
    784 pixels: its t-SNE partition 0.843 ACC from the input, 0.95 from the autoencoder), else
    None (narrow vectors, the 64-d digits: 0.951 from the input, 0.822 from the autoencoder)."""
    if not (isinstance(pretext, str) and pretext == "auto"):
        return pretext
    if X.ndim == 4:
        return "simclr"
    return "autoencoder" if X.shape[1] >= AUTOENCODER_MIN_FEATURES else None


def pretext_constraint(*extra_names: str) -> list:
    """``pretext``: a named pretext (or one of ``extra_names``), a pretext transformer, None."""
    return [StrOptions({*NAMED_PRETEXTS, *extra_names}), HasMethods(["fit", "get_params"]), None]


#: A cluster holding more than this share of the training samples is reported as a collapse.
COLLAPSE_LARGEST_SHARE = 0.9

#: The fitted attributes every clustering method shares: ``{cluster_attributes}`` in a
#: method's docstring stands for them.
CLUSTER_ATTRIBUTES_DOC = """labels_ : ndarray of shape (n_samples,)
        Clusters of the training samples (``predict`` on them).
    pretext_ : transformer or None
        The fitted pretext learner (None when the method fitted none).
    histories_ : dict of skorch.History
        One per stage: ``"pretext"`` (when the method fitted one), ``"clustering"`` and the
        method's later stages.
    history_ : skorch.History
        Every epoch of the method's own stages in order, each tagged with its ``"stage"``.
    cluster_sizes_ : ndarray of shape (n_clusters,)
        Training samples in each cluster (of ``labels_``).
    n_clusters_used_ : int
        Clusters holding at least one training sample. A warning reports a collapse: fewer
        than half the clusters used, or one holding more than 90 % of the samples."""

#: ``{head_selection_attributes}``: the attributes of :meth:`DeepClusterMixin._keep_best_head`.
HEAD_SELECTION_ATTRIBUTES_DOC = """best_head_ : int
        The head kept: among the trained heads of ``n_clusters`` clusters, the one with the
        lowest mean loss over the last epoch (the others are dropped from ``module_``).
    head_losses_ : ndarray of shape (n_heads,)
        Mean loss of each trained head over the last epoch."""


#: ``{head_init_parameter}``: the ``head_init`` parameter of the methods that have one.
HEAD_INIT_DOC = """head_init : {"auto", "kmeans", "manifold", "random"}, default="auto"
        How the heads start. "random": PyTorch's default initialisation (the papers). "kmeans":
        each head is the nearest-centroid classifier of a k-means of the backbone's features
        (:func:`skdeepcluster.heads.kmeans_heads`). "manifold": the manifold start, network and
        heads trained briefly to reproduce a partition of a t-SNE embedding (Ward for vectors,
        k-means for images) of the pretext features (or of the input without a pretext).
        "auto": "manifold" for vectors (not the papers; measured: ``docs/benchmarks.md``),
        {pretext_head_init} for images with a pretext, "random" for images from scratch."""

#: ``{head_init_attributes}``: the fitted attributes that go with ``head_init``.
HEAD_INIT_ATTRIBUTES_DOC = """head_init_ : str
        "kmeans", "manifold" or "random" (``head_init`` resolved).
    manifold_agreement_ : list of float
        With the manifold start only: per head, the fraction of the partitioned samples the
        head assigns to their partition cluster when the start ends."""


class DeepClusterMixin(ClassNamePrefixFeaturesOutMixin, TransformerMixin, DeepEstimatorMixin):
    """``predict`` / ``predict_proba`` / ``labels_`` for estimators whose ``module_`` returns a
    list of head logits (``head_`` is the one the method selected), and the pieces of ``fit``
    every clustering method shares.

    ``transform`` gives the soft assignments, named ``<method>0``, ``<method>1``... by
    ``get_feature_names_out``, so that ``set_output(transform="pandas")`` works on the method
    and on a Pipeline ending in it.
    """

    head_: int
    #: ``head_init="auto"`` for images after a pretext.
    _pretext_head_init = "kmeans"
    _docstring_entries = {
        **DeepEstimatorMixin._docstring_entries,
        "{cluster_attributes}": CLUSTER_ATTRIBUTES_DOC,
        "{head_selection_attributes}": HEAD_SELECTION_ATTRIBUTES_DOC,
        "{head_init_parameter}": HEAD_INIT_DOC,
        "{head_init_attributes}": HEAD_INIT_ATTRIBUTES_DOC,
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__:
            cls.__doc__ = cls.__doc__.replace("{pretext_head_init}", f'"{cls._pretext_head_init}"')

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # transform gives the soft assignments, float32 whatever X's dtype (as predict_proba)
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])
        return tags

    # ------------------------------------------------------------------ predictions
    def predict_proba(self, X: Any) -> np.ndarray:
        """Soft cluster assignments.

        Parameters
        ----------
        X : array-like
            Samples shaped like the training data.

        Returns
        -------
        ndarray of shape (n_samples, n_clusters)
            Softmax of the selected head's logits; rows sum to 1.
        """
        self._check_fitted()
        return self._proba(self._validate_input(X, reset=False))

    def predict(self, X: Any) -> np.ndarray:
        """Cluster index of each sample (the argmax of :meth:`predict_proba`)."""
        return self.predict_proba(X).argmax(1)

    def score(self, X: Any, y: Any = None) -> float:
        """Label-free quality of the clustering of X, for model selection without labels.

        The modularity (:func:`skdeepcluster.metrics.knn_modularity`) of ``predict(X)`` on the
        graph that links the samples that are among each other's
        :data:`~skdeepcluster.metrics.SCORE_N_NEIGHBORS` nearest neighbours (mutual pairs), in
        a reference space that training does not change: the fitted pretext's
        features (``pretext_.transform``), or without a pretext the standardised input. It
        compares hyperparameters and numbers of clusters on the same data and pretext, so
        ``GridSearchCV(method, grid)`` with no ``scoring`` chooses without labels (how well it
        chooses, and what it costs: :doc:`/user_guide/model_selection`). It does not compare
        pretexts: each has its own space.

        Parameters
        ----------
        X : array-like
            Samples shaped like the training data, at least ``SCORE_N_NEIGHBORS + 1``.
        y : None
            Ignored; present for scikit-learn's API.

        Returns
        -------
        float
            The modularity, below 1; greater is better, 0 for a single cluster.
        """
        self._check_fitted()
        checked = self._validate_input(X, reset=False)
        if len(checked) <= SCORE_N_NEIGHBORS:
            raise ValueError(
                f"score needs more than {SCORE_N_NEIGHBORS} samples (the neighbours of each "
                f"sample define the criterion), got {len(checked)}."
            )
        labels = self._proba(checked).argmax(1)
        reference = self._reference_features(checked)
        return knn_modularity(reference, labels, SCORE_N_NEIGHBORS, SCORE_MUTUAL)

    def _reference_features(self, X: np.ndarray) -> torch.Tensor:
        """The space :meth:`score` builds its neighbour graph in: the fitted pretext's features,
        else the standardised input (validated X)."""
        if self.pretext_ is not None:
            return torch.as_tensor(np.asarray(self.pretext_.transform(X), dtype=np.float32))
        cuda = [self.device_.index or 0] if self.device_.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(0)  # the rows behind the statistics: the same score on every call
            return self._standardized(DeviceData(X, self.device_))

    def transform(self, X: Any) -> np.ndarray:
        """Soft cluster assignments as features, e.g. for a later step of a Pipeline.

        The same values as :meth:`predict_proba`: for the embedding of the trained network,
        use ``module_.backbone`` or a pretext's ``transform``.

        Parameters
        ----------
        X : array-like
            Samples shaped like the training data.

        Returns
        -------
        ndarray of shape (n_samples, n_clusters)
            Each sample's probability of each cluster; rows sum to 1.
        """
        return self.predict_proba(X)

    @property
    def _n_features_out(self) -> int:
        """Columns of :meth:`transform` (``get_feature_names_out``); AttributeError unfitted."""
        return len(self.cluster_sizes_)

    def _proba(self, X: np.ndarray) -> np.ndarray:
        logits = self._forward_all(self.module_, X)[self.head_]
        return to_numpy(torch.softmax(logits, dim=1))

    def _end_fit(self, X: np.ndarray) -> None:
        super()._end_fit(X)
        # from the validated X, not predict(X): no feature-name warning after a DataFrame fit
        proba = self._proba(X)
        self.labels_ = proba.argmax(1)
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=proba.shape[1])
        self.n_clusters_used_ = int(np.count_nonzero(self.cluster_sizes_))
        self._warn_if_collapsed()

    #: What to try when a fit collapses (the end of the collapse warning).
    _collapse_hint = "Try a pretext, or a stronger entropy or balance term."

    def _warn_if_collapsed(self) -> None:
        """Warn when the training samples use fewer than half the clusters, or when one cluster
        holds more than :data:`COLLAPSE_LARGEST_SHARE` of them."""
        n, k = len(self.labels_), len(self.cluster_sizes_)
        largest = self.cluster_sizes_.max() / n
        if self.n_clusters_used_ < k / 2 or (n >= 2 * k and largest > COLLAPSE_LARGEST_SHARE):
            warnings.warn(
                f"{type(self).__name__} collapsed: the {n} training samples fall in "
                f"{self.n_clusters_used_} of {k} clusters, the largest holding {largest:.0%} "
                f"(cluster_sizes_). {self._collapse_hint}",
                UserWarning,
                stacklevel=4,
            )

    # ------------------------------------------------------------------ parameters
    def set_params(self, **params: Any) -> DeepClusterMixin:
        """Set parameters; ``pretext__<param>`` also reaches a *named* pretext.

        With ``pretext="simclr"`` (a name), ``set_params(pretext__max_epochs=20)`` replaces the
        name by ``SimCLR(max_epochs=20)``, which the method then fits exactly as it would the
        named one (with its own device and seed), so a grid search can tune the pretext.
        """
        nested = {k.split("__", 1)[1]: v for k, v in params.items() if k.startswith("pretext__")}
        pretext = params.get("pretext", getattr(self, "pretext", None))
        if nested and isinstance(pretext, str):
            params = {k: v for k, v in params.items() if not k.startswith("pretext__")}
            params["pretext"] = named_pretext(pretext, **nested)
        return super().set_params(**params)

    def _train(
        self,
        stage: str,
        module: nn.Module,
        objective: Any,
        data: Any,
        max_epochs: int,
        lr: float | None = None,
        group_lrs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> nn.Module:
        """The shared training stage (:meth:`DeepEstimatorMixin._train`), with the backbone's
        learning rate scaled by the fitted pretext's ``fine_tune_lr_scale`` where it has one
        (:class:`~skdeepcluster.pretext.AutoEncoder`: 0.1)."""
        scale = float(getattr(getattr(self, "pretext_", None), "fine_tune_lr_scale", 1.0))
        if scale != 1.0:
            base_lr = self.lr if lr is None else lr
            group_lrs = {"backbone.*": base_lr * scale, **(group_lrs or {})}
        return super()._train(
            stage, module, objective, data, max_epochs, lr=lr, group_lrs=group_lrs, **kwargs
        )

    def _check_n_clusters(self, n_clusters: Any, n_samples: int, name: str = "n_clusters") -> int:
        k = check_positive_int(n_clusters, name, 2)
        if k > n_samples:
            raise ValueError(f"{name}={k} must not exceed the number of samples ({n_samples})")
        return k

    def _head_sizes(
        self, n_clusters: int | Sequence[int], n_heads: int, n_samples: int
    ) -> list[int]:
        """Clusters of each head: ``n_heads`` heads of ``n_clusters``, or one head per entry of a
        list ``n_clusters``; each checked against the number of samples."""
        if isinstance(n_clusters, (list, tuple, np.ndarray)):
            if len(n_clusters) == 0:
                raise ValueError("n_clusters must be an int or a non-empty list of ints; got []")
            return [
                self._check_n_clusters(k, n_samples, f"n_clusters[{i}]")
                for i, k in enumerate(n_clusters)
            ]
        return [self._check_n_clusters(n_clusters, n_samples)] * n_heads

    # ------------------------------------------------------------------ the network
    def _initial_backbone(
        self, fit: FitInput, pretext: Any, body: nn.Module | None = None, freeze: bool = False
    ) -> Backbone:
        """The backbone a method starts from, on ``device_``.

        With a ``pretext`` (a name or a transformer, see :func:`skdeepcluster.pretext.fit_pretext`)
        it is fitted on X (``pretext_``, its history in ``histories_["pretext"]``) and a copy of
        its backbone is returned, with everything before the last block frozen if ``freeze``.
        With ``pretext=None`` a new backbone for X's shape is built around ``body`` (a copy; None
        for the default). ``pretext="auto"`` is resolved by :func:`resolve_pretext`.
        """
        pretext = resolve_pretext(pretext, fit.X)
        self.pretext_ = None
        if pretext is None:
            return build_backbone(fit.data.sample, None if body is None else copy.deepcopy(body))
        self.pretext_ = fit_pretext(
            pretext,
            fit.X,
            device=self.device,
            random_state=fit.seed,
            verbose=self.verbose,
            callbacks=self.callbacks,
        )
        history = getattr(self.pretext_, "history_", None)
        if history is not None:
            self.histories_["pretext"] = history
        backbone = pretext_backbone(self.pretext_, self.device_)
        return freeze_early_layers(backbone) if freeze else backbone

    def _keep_best_head(
        self, trained: ClusterModel, head_losses: HeadLosses, n_clusters: int
    ) -> None:
        """Keep (as ``module_``, ``head_ = 0``) the head of ``n_clusters`` clusters with the
        lowest mean loss over the last epoch (``head_losses_``, ``best_head_``)."""
        self.head_losses_ = head_losses.means()
        sizes = head_sizes_of(trained)
        self.best_head_ = select_head(self.head_losses_, sizes, n_clusters)
        self.module_ = trained.keep_heads([self.best_head_])
        self.head_ = 0

    def _init_heads(self, fit: FitInput, module: ClusterModel) -> None:
        """Start the heads as ``head_init`` says (``head_init_``).

        "auto" is "manifold" for vectors, "kmeans" for images after a pretext (``pretext_``, set
        by :meth:`_initial_backbone`) and "random" for images from scratch. "kmeans" sets each
        head to the nearest-centroid classifier of a k-means of the backbone's features
        (:func:`~heads.kmeans_heads`). "manifold" is the manifold start of the vector path
        (:meth:`_manifold_start`).
        """
        self.head_init_ = self.head_init
        if self.head_init == "auto":
            if fit.X.ndim == 2:
                self.head_init_ = "manifold"
            else:
                self.head_init_ = "random" if self.pretext_ is None else self._pretext_head_init
        if self.head_init_ == "kmeans":
            kmeans_heads(module.heads, self._forward_data(module.backbone, fit.data), fit.seed)
        elif self.head_init_ == "manifold":
            self._manifold_start(fit, module)

    def _manifold_start(self, fit: FitInput, module: ClusterModel) -> None:
        """Train ``module`` to reproduce, with each head, a Ward partition of the t-SNE
        embedding of the data (:func:`~heads.manifold_partition`), before the method's own loss.

        The embedded space is the pretext's features, or without a pretext the standardised
        input (an untrained backbone's features are no better than its input). The heads are
        first fitted to the partitions by logistic regression on the backbone's features
        (:func:`~heads.fit_linear_head`), then backbone and heads are trained by cross-entropy
        to them for a short stage, ``histories_["manifold_start"]``: a linear head on an
        untrained backbone reproduces only part of a partition that follows the manifold.
        ``manifold_agreement_`` is the fraction of the partitioned samples each head assigns to
        their partition cluster at the end.
        """
        features = self._forward_data(module.backbone, fit.data)
        embedded = features if self.pretext_ is not None else self._standardized_input(fit)
        sizes = [head.out_features for head in module.heads]
        # Ward was measured on vectors only; images keep the k-means their figures were made with
        clustering = "ward" if fit.X.ndim == 2 else "kmeans"
        # t-SNE may differ in its last bits between processes: all take process 0's
        rows, labels = distributed.same_on_every_process(
            manifold_partition(embedded, sizes, fit.seed, clustering)
        )
        targets = torch.full((len(sizes), len(fit.X)), -1, dtype=torch.long)
        for h, (head, head_labels) in enumerate(zip(module.heads, labels, strict=True)):
            fit_linear_head(head, features[torch.as_tensor(rows)], torch.as_tensor(head_labels))
            targets[h, torch.as_tensor(rows)] = torch.as_tensor(head_labels)
        targets = targets.to(self.device_)
        epochs = resolve_max_epochs(
            "auto", len(fit.X), self.batch_size, MANIFOLD_START_MIN_EPOCHS, MANIFOLD_START_MIN_STEPS
        )
        epochs = min(epochs, MANIFOLD_START_MAX_EPOCHS)
        self._train("manifold_start", module, PartitionObjective(targets), fit.data, epochs)
        with torch.no_grad():
            logits = self._forward_data(module, fit.data)
        self.manifold_agreement_ = [
            float((to_numpy(head_logits.argmax(1))[rows] == head_labels).mean())
            for head_logits, head_labels in zip(logits, labels, strict=True)
        ]

    def _standardized_input(self, fit: FitInput) -> torch.Tensor:
        """The training X as floats, standardised as a new backbone would
        (:class:`~backbones.Standardize`), one row per sample (images flattened)."""
        return self._standardized(fit.data)

    @staticmethod
    def _standardized(data: DeviceData) -> torch.Tensor:
        """``data`` as floats, standardised by its own statistics as a new backbone would."""
        x = data.as_float()
        with torch.no_grad():
            return Standardize.from_data(data.sample).to(x.device)(x).flatten(1)


class PartitionObjective:
    """Cross-entropy of every head's logits to that head's partition, averaged over heads and
    labelled samples; label -1 (a sample outside the partitioned subset) is ignored."""

    def __init__(self, targets: torch.Tensor) -> None:
        self.targets = targets  # (n_heads, n_samples)

    def loss(self, module: nn.Module, data: Any, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        targets = self.targets[:, idx]
        labelled = (targets >= 0).sum().clamp_min(1)  # a batch may hold no partitioned sample
        total = sum(
            F.cross_entropy(logits.float(), targets[h], ignore_index=-1, reduction="sum")
            for h, logits in enumerate(module(data[idx]))
        )
        return {"loss": total / labelled}
