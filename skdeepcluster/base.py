"""Shared estimator machinery: input validation, device, seeding, building the skorch net.

Estimators are plain scikit-learn estimators (``__init__`` stores parameters, ``fit`` validates
them) that *own* a private :class:`~skdeepcluster._training.DeepClusterNet` as ``net_``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from torch import Tensor, nn

from ._training import DeepClusterNet, DeviceData, Objective, batched_forward, batches_per_epoch
from ._validation import check_number, check_positive_int

_ACCEPTED_DEVICES = "'cpu', 'cuda', 'cuda:N' or a torch.device"


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``device``; a clear ValueError when it is unknown or CUDA is asked for and absent."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; accepted: {_ACCEPTED_DEVICES}") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; accepted: {_ACCEPTED_DEVICES}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for but CUDA is not available "
                "(torch.cuda.is_available() is False); use device='cpu'"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return resolved


def resolve_max_epochs(
    max_epochs: Any,
    n_samples: int,
    batch_size: int,
    min_epochs: int,
    min_steps: int,
    minimum: int = 0,
) -> int:
    """``max_epochs`` as an int; ``"auto"`` gives ``max(min_epochs, ceil(min_steps / batches))``,
    ``batches`` the batches per epoch of the training loop.

    "auto" lets one default serve small and mid-sized data: a few thousand samples make few
    batches per epoch, so they need more epochs for the same number of optimisation steps.
    """
    if isinstance(max_epochs, str) and max_epochs == "auto":
        batches = batches_per_epoch(n_samples, batch_size)
        return max(min_epochs, -(-min_steps // batches))
    if isinstance(max_epochs, str):
        raise ValueError(
            f"max_epochs must be 'auto' or an integer >= {minimum}, got {max_epochs!r}"
        )
    return check_positive_int(max_epochs, "max_epochs", minimum)


class DeepEstimatorMixin:
    """Helpers shared by every estimator of the package.

    Expects the parameters ``device``, ``random_state``, ``batch_size``, ``lr``, ``weight_decay``,
    ``verbose`` and ``callbacks`` (all estimators have them).
    """

    def _validate_input(self, X: Any, reset: bool) -> np.ndarray:
        """Validated X as a C-contiguous array: uint8 stays uint8, everything else float32.

        Accepts ``(n, d)`` vectors, ``(n, h, w)`` gray images and ``(n, c, h, w)`` images. NaN and
        infinity are refused. With ``reset`` (fit) the sample shape is recorded and at least two
        samples are required; otherwise (predict/transform) it is checked and one sample is enough.

        ``n_features_in_`` (and ``feature_names_in_``) follow scikit-learn for vectors. For images
        ``n_features_in_`` is the number of values per sample (``c * h * w``), since ``X.shape[1]``
        means channels or height depending on the layout; ``input_shape_`` is what gets checked.
        """
        if reset and hasattr(X, "ndim") and X.ndim not in (2, 3, 4):
            raise ValueError(
                f"X must be 2-D (n_samples, n_features), 3-D (n, height, width) or 4-D "
                f"(n, channels, height, width); got {X.ndim}-D shape {X.shape}"
            )
        X_in = X
        X = check_array(
            X,
            allow_nd=True,
            ensure_min_samples=2 if reset else 1,
            dtype=(np.float32, np.float64, np.uint8),
            input_name="X",
            estimator=self,
        )
        if X.ndim not in (2, 3, 4):
            raise ValueError(
                f"X must be 2-D (n_samples, n_features), 3-D (n, height, width) or 4-D "
                f"(n, channels, height, width); got {X.ndim}-D shape {X.shape}"
            )
        if X.ndim == 2 or reset:  # feature names and count (vectors), or forget the old ones
            validate_data(self, X_in if X.ndim == 2 else X, reset=reset, skip_check_array=True)
        if X.ndim == 3:
            X = X[:, None]
        if X.dtype == np.float64:
            X = X.astype(np.float32)
        if reset:
            self.input_shape_ = tuple(X.shape[1:])
            self.n_features_in_ = int(np.prod(self.input_shape_))
        elif tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"X has sample shape {tuple(X.shape[1:])}, but {type(self).__name__} "
                f"was fitted on {self.input_shape_}"
            )
        # writable: torch must not wrap read-only memory (e.g. GridSearchCV's memmaps)
        return np.require(X, requirements=("C", "W"))

    def _check_common_params(self) -> None:
        check_positive_int(self.batch_size, "batch_size", 2)
        check_number(self.lr, "lr", 0.0, low_open=True)
        check_number(self.weight_decay, "weight_decay")
        if self.callbacks is not None and not isinstance(self.callbacks, (list, tuple)):
            raise ValueError(
                "callbacks must be None or a list of skorch callbacks or (name, callback) "
                f"pairs; got {type(self.callbacks).__name__}"
            )

    def _device(self) -> torch.device:
        return resolve_device(self.device)

    def _draw_seed(self) -> int:
        """One seed from ``random_state`` (the same every call for an int ``random_state``)."""
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    @contextlib.contextmanager
    def _seeded(self, device: torch.device, seed: int | None = None) -> Iterator[None]:
        """Run the block with torch's generators seeded (from ``random_state`` unless ``seed``
        is given), then restore them: the caller's global random state is left as it was.
        """
        seed = self._draw_seed() if seed is None else seed
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def _make_net(
        self,
        module: nn.Module,
        objective: Objective,
        data: DeviceData,
        max_epochs: int,
        lr: float | None = None,
        log_terms: tuple[str, ...] = (),
        callbacks: bool = True,
        group_lrs: dict[str, float] | None = None,
    ) -> DeepClusterNet:
        """A :class:`DeepClusterNet` with this estimator's optimiser settings and callbacks.

        ``group_lrs`` maps parameter-name patterns (skorch's ``param_groups`` syntax, e.g.
        ``"heads.*"``) to their own learning rates.
        """
        user_callbacks = (
            copy.deepcopy(list(self.callbacks)) if (callbacks and self.callbacks) else []
        )
        groups = [(pattern, {"lr": value}) for pattern, value in (group_lrs or {}).items()]
        return DeepClusterNet(
            module,
            objective=objective,
            data=data,
            log_terms=log_terms,
            optimizer=torch.optim.AdamW,
            lr=self.lr if lr is None else lr,
            optimizer__weight_decay=self.weight_decay,
            optimizer__param_groups=groups,
            max_epochs=max_epochs,
            batch_size=self.batch_size,
            callbacks=user_callbacks,
            verbose=int(bool(self.verbose)),
            device=str(data.device),
            amp=True,
        )

    def _forward_all(self, module: nn.Module, X: np.ndarray) -> Tensor | list[Tensor]:
        """``module`` over all of validated ``X`` on the fitted device, in batches, eval mode."""
        return self._forward_data(module, DeviceData(X, self.device_))

    def _forward_data(self, module: nn.Module, data: DeviceData) -> Tensor | list[Tensor]:
        return batched_forward(module, data, max(self.batch_size, 256), amp=True)

    def _check_fitted(self) -> None:
        check_is_fitted(self, "module_")


def to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class DeepClusterMixin(DeepEstimatorMixin):
    """``predict`` / ``predict_proba`` for estimators whose ``module_`` returns a list of head
    logits; the head used is ``head_`` (the one the method selected)."""

    head_: int

    def predict_proba(self, X: Any) -> np.ndarray:
        """Soft cluster assignments ``(n_samples, n_clusters)``, rows summing to 1."""
        self._check_fitted()
        X = self._validate_input(X, reset=False)
        logits = self._forward_all(self.module_, X)[self.head_]
        return to_numpy(torch.softmax(logits, dim=1))

    def predict(self, X: Any) -> np.ndarray:
        """Cluster index of each sample."""
        return self.predict_proba(X).argmax(1)

    def _check_n_clusters(self, n_clusters: Any, n_samples: int, name: str = "n_clusters") -> int:
        k = check_positive_int(n_clusters, name, 2)
        if k > n_samples:
            raise ValueError(f"{name}={k} must not exceed the number of samples ({n_samples})")
        return k
