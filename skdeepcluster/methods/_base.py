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
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from torch import nn

from .._training import HeadLosses, select_head
from .._validation import check_positive_int
from ..backbones import Backbone, build_backbone, freeze_early_layers
from ..base import DeepEstimatorMixin, FitInput, to_numpy
from ..heads import ClusterModel, head_sizes_of, kmeans_heads
from ..pretext import NAMED_PRETEXTS, fit_pretext, named_pretext, pretext_backbone

#: ``n_clusters``: at least two clusters (one cluster is no clustering).
N_CLUSTERS_CONSTRAINT = [Interval(Integral, 2, None, closed="left")]


def pretext_constraint(*extra_names: str) -> list:
    """``pretext``: a named pretext (or one of ``extra_names``), a pretext transformer, None."""
    return [StrOptions({*NAMED_PRETEXTS, *extra_names}), HasMethods(["fit", "get_params"]), None]


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
        Every epoch of the method's own stages in order, each tagged with its ``"stage"``."""

#: ``{head_selection_attributes}``: the attributes of :meth:`DeepClusterMixin._keep_best_head`.
HEAD_SELECTION_ATTRIBUTES_DOC = """best_head_ : int
        The head kept: among the trained heads of ``n_clusters`` clusters, the one with the
        lowest mean loss over the last epoch (the others are dropped from ``module_``).
    head_losses_ : ndarray of shape (n_heads,)
        Mean loss of each trained head over the last epoch."""


class DeepClusterMixin(DeepEstimatorMixin):
    """``predict`` / ``predict_proba`` / ``labels_`` for estimators whose ``module_`` returns a
    list of head logits (``head_`` is the one the method selected), and the pieces of ``fit``
    every clustering method shares."""

    head_: int
    _docstring_entries = {
        **DeepEstimatorMixin._docstring_entries,
        "{cluster_attributes}": CLUSTER_ATTRIBUTES_DOC,
        "{head_selection_attributes}": HEAD_SELECTION_ATTRIBUTES_DOC,
    }

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

    def _proba(self, X: np.ndarray) -> np.ndarray:
        logits = self._forward_all(self.module_, X)[self.head_]
        return to_numpy(torch.softmax(logits, dim=1))

    def _end_fit(self, X: np.ndarray) -> None:
        super()._end_fit(X)
        # from the validated X, not predict(X): no feature-name warning after a DataFrame fit
        self.labels_ = self._proba(X).argmax(1)

    def _warn_if_collapsed(self, hint: str) -> None:
        """``n_clusters_used_``: the clusters holding a training sample; warn below half."""
        self.n_clusters_used_ = len(np.unique(self.labels_))
        if self.n_clusters_used_ < self.n_clusters / 2:
            warnings.warn(
                f"{type(self).__name__} collapsed: the training samples fall in "
                f"{self.n_clusters_used_} of {self.n_clusters} clusters. {hint}",
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
        for the default). ``pretext="auto"`` (for the methods that accept it) is "simclr" for
        images (4-d X) and None for vectors.
        """
        if isinstance(pretext, str) and pretext == "auto":
            pretext = "simclr" if fit.X.ndim == 4 else None
        self.pretext_ = None
        if pretext is None:
            return build_backbone(fit.data.sample, None if body is None else copy.deepcopy(body))
        self.pretext_ = fit_pretext(
            pretext, fit.X, device=self.device, random_state=fit.seed, verbose=self.verbose
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
        """Start the heads as ``head_init`` says (``head_init_``): "auto" is "kmeans" after a
        pretext (``pretext_``, set by :meth:`_initial_backbone`) and "random" from scratch;
        "kmeans" sets each head to the nearest-centroid classifier of a k-means of the
        backbone's features (:func:`~heads.kmeans_heads`).
        """
        self.head_init_ = self.head_init
        if self.head_init == "auto":
            self.head_init_ = "random" if self.pretext_ is None else "kmeans"
        if self.head_init_ == "kmeans":
            kmeans_heads(module.heads, self._forward_data(module.backbone, fit.data), fit.seed)
