"""The estimator machinery every estimator of the package shares: THE one fit skeleton.

Estimators are plain scikit-learn estimators (``__init__`` stores parameters, ``fit`` validates
them) that *own* a private :class:`~skdeepcluster._training.DeepClusterNet` per training stage.
:meth:`DeepEstimatorMixin.fit` is written once:

1. validate X, then the parameters (``_parameter_constraints``, scikit-learn's declarative
   checks, and the estimator's ``_check_params`` for what depends on the data);
2. resolve the device, draw one seed from ``random_state``, and inside a seeded block put X on the
   device and call the estimator's own ``_fit`` (which trains its stages with :meth:`_train`);
3. end the fit in one way for all: the nets drop the training data, ``history_`` and
   ``histories_`` hold the training history, and clustering estimators set ``labels_``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from skorch.callbacks import Checkpoint, LRScheduler, PrintLog, ProgressBar, TrainEndCheckpoint
from skorch.history import History
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from . import distributed
from ._pickling import LeanPickleMixin
from ._training import (
    DeepClusterNet,
    DeviceData,
    LongStageWarning,
    Objective,
    StageProgress,
    batched_forward,
    batches_per_epoch,
    one_long_fit_warning,
)
from .augment import default_augmentations

_ACCEPTED_DEVICES = "'cpu', 'cuda', 'cuda:N' or a torch.device"

#: Rows per batch of the forward passes over a whole data set (predict, features, relabelling).
INFERENCE_BATCH = 256

#: ``optimizer``: the names, and what each builds (skorch calls it with the parameter groups,
#: ``lr`` and ``weight_decay``).
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    # fused: one kernel for all parameters, and no host read of the step count per parameter
    # (the unfused AdamW reads it with .item(), a device sync on a GPU, 18 per SimCLR step)
    "adamw": functools.partial(torch.optim.AdamW, fused=True),
    "adam": functools.partial(torch.optim.Adam, fused=True),  # L2 weight decay (coupled)
    "sgd": functools.partial(torch.optim.SGD, momentum=0.9, fused=True),  # the papers' momentum
}

#: The parameters every estimator of the package has, and what they accept.
COMMON_CONSTRAINTS: dict[str, list] = {
    "batch_size": [Interval(Integral, 2, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "optimizer": [StrOptions(set(OPTIMIZERS)), callable],
    "augment": [callable, None],
    "device": [str, torch.device],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "callbacks": [list, tuple, None],
}

#: ``lr_schedule`` of the methods that have one.
LR_SCHEDULE_CONSTRAINT = [StrOptions({"constant", "cosine"})]


def epochs_constraint(minimum: int = 1) -> list:
    """``max_epochs``-style constraint: an int ``>= minimum`` or ``"auto"``."""
    return [Interval(Integral, minimum, None, closed="left"), StrOptions({"auto"})]


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


#: ``max_epochs="auto"`` never asks for more epochs than this to reach its step floor: small data
#: (one batch an epoch) would otherwise train for thousands of epochs (1,500 for SimCLR at 300
#: samples). Every "auto" default measured in ``docs/benchmarks.md`` stays below it, but C2BIN's
#: (429 epochs on the digits), which passes its own.
AUTO_MAX_EPOCHS = 250


def resolve_max_epochs(
    max_epochs: int | str,
    n_samples: int,
    batch_size: int,
    min_epochs: int,
    min_steps: int,
    max_auto_epochs: int = AUTO_MAX_EPOCHS,
) -> int:
    """``max_epochs`` as an int; ``"auto"`` gives ``max(min_epochs, min(ceil(min_steps /
    batches), max_auto_epochs))``, ``batches`` the batches per epoch of the training loop.

    "auto" lets one default serve small and mid-sized data: a few thousand samples make few
    batches per epoch, so they need more epochs for the same number of optimisation steps; the
    step floor stops at ``max_auto_epochs`` epochs, so that a few hundred samples are not seen
    thousands of times.
    """
    if isinstance(max_epochs, str):
        if max_epochs != "auto":
            raise ValueError(f"max_epochs must be 'auto' or an integer, got {max_epochs!r}")
        batches = batches_per_epoch(n_samples, batch_size)
        return max(min_epochs, min(-(-min_steps // batches), max_auto_epochs))
    return int(max_epochs)


def warn_constant_features(X: np.ndarray) -> None:
    """Warn when feature vectors hold constant columns: standardisation maps them to 0 (as every
    backbone and the vector views do), so they take no part in the clustering."""
    constant = np.flatnonzero(np.ptp(X, axis=0) == 0)
    if len(constant):
        shown = ", ".join(map(str, constant[:10])) + (", ..." if len(constant) > 10 else "")
        warnings.warn(
            f"X has {len(constant)} constant feature(s) of {X.shape[1]} (columns {shown}); they "
            "carry no information and are ignored (standardised to 0)",
            UserWarning,
            stacklevel=3,
        )


def to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def left_at_default(estimator: Any, name: str) -> bool:
    """Whether the parameter ``name`` of ``estimator`` still has its ``__init__`` default."""
    default = inspect.signature(type(estimator).__init__).parameters[name].default
    value = getattr(estimator, name)
    return value is default or (type(value) is type(default) and value == default)


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def check_float32_range(X: np.ndarray) -> None:
    """Refuse float64 values the float32 networks cannot hold: beyond the float32 range (they
    would become infinite), or an X whose every value is below float32's smallest normal number
    (it would become 0, or lose its precision, and read as constant)."""
    largest = max(-float(X.min()), float(X.max())) if X.size else 0.0
    if largest > _FLOAT32_MAX:
        raise ValueError(
            f"X has values up to {largest:.3g} in absolute value, beyond the float32 range "
            f"(+-{_FLOAT32_MAX:.3g}) the networks compute in; rescale X first, e.g. with "
            "sklearn.preprocessing.StandardScaler or a log transform"
        )
    if 0 < largest < _FLOAT32_TINY:
        raise ValueError(
            f"X's largest absolute value is {largest:.3g}, below the smallest normal float32 "
            f"({_FLOAT32_TINY:.3g}) the networks compute in: X would become 0. Rescale X first, "
            "e.g. with sklearn.preprocessing.StandardScaler"
        )


#: Float images above 1 by at most this much are still [0, 1] images (resampling overshoot).
IMAGE_OVERSHOOT = 1e-3


def _whole_8bit(X: np.ndarray, low: float, high: float) -> bool:
    return low >= 0 and high <= 255 and bool(np.array_equal(X, np.round(X)))


def check_image_scale(X: np.ndarray, fitted_scale: str | None = None) -> tuple[np.ndarray, str]:
    """Float images must be on the ``[0, 1]`` scale (or centred, with negative values).

    Non-negative float images that hold whole numbers up to 255 are 8-bit images stored as
    floats: they are converted to ``uint8`` with a warning, exactly as if given as ``uint8``
    (which the estimators divide by 255), so both give the same predictions. Other
    non-negative float images above 1 are refused: their scale cannot be guessed.

    ``fitted_scale`` is the scale decided at fit (``image_scale_``), so that predict reads X as
    fit did: after a fit on 8-bit floats, whole-valued floats are 8-bit even when their maximum
    is 1 (a dark image); after a fit on centred images, any float image is taken as it is.

    Returns
    -------
    X : ndarray
        ``X``, or its ``uint8`` copy.
    scale : {"uint8", "float8bit", "unit", "centred"}
        How ``X`` was read: ``uint8`` input, whole-valued floats read as 8-bit, ``[0, 1]``
        floats, or centred floats.
    """
    if X.dtype == np.uint8:
        return X, "uint8"
    if not X.size or fitted_scale == "centred":
        return X, fitted_scale or "unit"
    low, high = float(X.min()), float(X.max())
    if fitted_scale == "float8bit" and _whole_8bit(X, low, high):
        return _as_8bit(X, low, high), "float8bit"
    if low < 0:
        return X, "centred"
    if high <= 1 + IMAGE_OVERSHOOT:
        return X, "unit"
    if _whole_8bit(X, low, high):
        return _as_8bit(X, low, high), "float8bit"
    raise ValueError(
        f"X holds float images with values in [{low:.4g}, {high:.4g}]; float images must be "
        "in [0, 1] (or centred, with negative values), and 8-bit images are given as uint8 "
        "(0-255). Divide X by its scale's maximum (255 for 8-bit, 65535 for 16-bit images)"
    )


def _as_8bit(X: np.ndarray, low: float, high: float) -> np.ndarray:
    warnings.warn(
        f"X holds float images with whole values in [{low:g}, {high:g}]: read as 8-bit "
        "images (0-255) and divided by 255, as uint8 images are. Pass uint8, or floats in "
        "[0, 1] (e.g. X / X.max() for another scale), to silence this.",
        UserWarning,
        stacklevel=5,
    )
    return X.astype(np.uint8)


#: skorch callbacks that print or write files: in a distributed fit only process 0 keeps them.
OUTPUT_CALLBACKS = (Checkpoint, TrainEndCheckpoint, PrintLog, ProgressBar)


def _callback(entry: Any) -> Any:
    """The callback of a ``callbacks`` entry (a callback, or a ``(name, callback)`` pair)."""
    return entry[1] if isinstance(entry, tuple) else entry


@contextlib.contextmanager
def _quiet_unless_main(processes: distributed.Processes | None) -> Iterator[None]:
    """Warnings are given by process 0 of a distributed fit only (every process would give the
    same)."""
    if processes is None or processes.is_main:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _is_memmap(X: Any) -> bool:
    """Whether ``X`` is a NumPy memmap, or a view of one."""
    while isinstance(X, np.ndarray):
        if isinstance(X, np.memmap):
            return True
        X = X.base
    return False


@dataclass
class FitInput:
    """What :meth:`DeepEstimatorMixin.fit` hands to an estimator's own ``_fit``."""

    X: np.ndarray
    """Validated X: float32 or uint8, images with their channel axis."""
    data: DeviceData
    """X on the estimator's device."""
    seed: int
    """The seed drawn from ``random_state`` (torch is already seeded with it)."""
    raw: Any
    """X as the caller passed it (e.g. a NeighborFeatures carrying mined neighbours)."""


#: ``{optimizer_parameter}`` in an estimator's docstring stands for this entry.
OPTIMIZER_DOC = """optimizer : {"adamw", "adam", "sgd"} or callable, default="adamw"
        "adamw": AdamW (decoupled weight decay); "adam": Adam with L2 weight decay; "sgd": SGD
        with momentum 0.9; or a ``torch.optim`` class (or a factory such as
        ``functools.partial(torch.optim.SGD, momentum=0.99)``) called as
        ``optimizer(param_groups, lr=lr, weight_decay=weight_decay)``."""

#: The parameters every method shares, documented once: ``{shared_parameters}`` in a method's
#: docstring stands for them.
SHARED_PARAMETERS_DOC = """{optimizer_parameter}
    device : str or torch.device, default="cpu"
        "cpu", "cuda" or "cuda:N". On CUDA, training runs under bfloat16 autocast (on the
        CPU too with ``skdeepcluster.set_config(bf16=True)``, or "auto" on CPUs with bfloat16
        instructions).
    random_state : int, RandomState instance or None, default=None
        Seeds every random step of the fit (pretext, initialisation, batching, augmentation);
        CPU runs are repeatable.
    verbose : int, default=0
        1: a progress bar per training stage (pretext, clustering, self-labelling...), named,
        with epochs, ETA and loss; 2: also skorch's table of epochs. 0: silent, except one
        warning when the first epochs predict a very long fit on the CPU.
    callbacks : list or None, default=None
        skorch callbacks (learning-rate schedules, checkpoints, early stopping on
        ``train_loss``), copied into each training stage, a pretext's fitted by the method
        included (unless that pretext has callbacks of its own: ``pretext=SimCLR(callbacks=[])``
        keeps them out of it, e.g. for early stopping on a term only the method logs)."""

#: The fitted attributes every method shares: ``{shared_attributes}`` stands for them.
SHARED_ATTRIBUTES_DOC = """net_ : skorch.NeuralNet
        The net of the last training stage.
    device_ : torch.device
        The device the model lives on.
    streamed_ : bool
        Whether the training data stayed in host memory, each batch copied to the device,
        because it exceeds the device budget (:func:`skdeepcluster.set_config`); False when it
        lived on the device.
    n_processes_ : int
        Processes the fit trained on: 1, or the number of ``torch.distributed`` processes
        (``torchrun``), each training on its share of every batch
        (:doc:`/user_guide/distributed`).
    input_shape_ : tuple
        Shape of one sample, ``(d,)`` or ``(c, h, w)``.
    n_features_in_ : int
        Values per sample.
    image_scale_ : str
        Images only: how the training images were read, and so how later images are:
        "uint8" (divided by 255), "float8bit" (whole-valued floats in 0-255, read as uint8),
        "unit" (floats in [0, 1]) or "centred" (floats with negative values, taken as they
        are)."""


class DeepEstimatorMixin(LeanPickleMixin):
    """The fit skeleton and the helpers shared by every estimator of the package.

    Subclasses declare ``_parameter_constraints`` (start from :data:`COMMON_CONSTRAINTS`), may
    override ``_check_params(X)`` for the checks that depend on the data, and implement
    ``_fit(fit: FitInput)``, which trains its stages with :meth:`_train`.
    """

    _parameter_constraints: dict = COMMON_CONSTRAINTS
    #: Docstring entries written once: each token in a subclass's docstring is replaced by its
    #: text, in this order (``{shared_parameters}`` holds ``{optimizer_parameter}``). Subclasses
    #: extend the dict with their own shared entries.
    _docstring_entries: dict[str, str] = {
        "{shared_parameters}": SHARED_PARAMETERS_DOC,
        "{shared_attributes}": SHARED_ATTRIBUTES_DOC,
        "{optimizer_parameter}": OPTIMIZER_DOC,
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__:
            for token, text in cls._docstring_entries.items():
                cls.__doc__ = cls.__doc__.replace(token, text)

    # ------------------------------------------------------------------ the fit skeleton
    def fit(self, X: Any, y: Any = None) -> Any:
        """Fit the estimator on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), (n, height, width) or (n, c, h, w)
            Vectors or images (``uint8`` or floating point).
        y : None
            Ignored; present for scikit-learn's API.

        Returns
        -------
        self
        """
        checked = self._validate_input(X, reset=True)
        self._validate_params()
        self._check_params(checked)
        device = resolve_device(self.device)
        n_processes = distributed.world_size_for_fit(device)
        with distributed.processes(n_processes) as processes, _quiet_unless_main(processes):
            if checked.ndim == 2:
                warn_constant_features(checked)
            self.device_ = device if processes is None else distributed.fit_device(device)
            self.n_processes_ = n_processes
            self.histories_: dict[str, History] = {}
            seed = self._draw_seed()
            if processes is not None:
                seed = self._agree_on_input(checked, seed, processes)
            data = DeviceData(checked, self.device_)
            self.streamed_ = not data.resident
            with self._seeded(self.device_, seed), one_long_fit_warning():
                self._fit(FitInput(checked, data, seed, X))
            self._end_fit(checked)
        return self

    def _agree_on_input(self, X: np.ndarray, seed: int, processes: distributed.Processes) -> int:
        """Check that every process of a distributed fit has the same data and batch size, and
        return process 0's seed (``random_state=None`` draws differently on each)."""
        min_rows = 2 * processes.world_size
        if min(self.batch_size, len(X)) < min_rows:
            raise ValueError(
                f"a fit on {processes.world_size} processes needs batches of at least "
                f"{min_rows} rows (two per process, for batch statistics); batch_size is "
                f"{self.batch_size} and X has {len(X)} samples"
            )
        step = max(1, len(X) // 1024)
        checksum = float(np.asarray(X[::step], dtype=np.float64).sum())
        distributed.check_same_input(
            [*X.shape, checksum, self.batch_size], "X and batch_size (shape, checksum, batch size)"
        )
        return distributed.broadcast_seed(seed)

    def _check_params(self, X: np.ndarray) -> None:
        """Checks of the parameters against the data (the constraints ran already)."""

    def _fit(self, fit: FitInput) -> None:  # pragma: no cover - every estimator has one
        raise NotImplementedError

    def _end_fit(self, X: np.ndarray) -> None:
        """``history_``: every epoch of this estimator's own stages (not of a nested pretext,
        which is in ``histories_["pretext"]``), each row tagged with its ``"stage"``."""
        history = History()
        for stage, stage_history in self.histories_.items():
            if stage == "pretext" and len(self.histories_) > 1:
                continue
            history.extend({**row, "stage": stage} for row in stage_history)
        self.history_ = history

    # ------------------------------------------------------------------ training
    def _train(
        self,
        stage: str,
        module: nn.Module,
        objective: Objective,
        data: DeviceData,
        max_epochs: int,
        lr: float | None = None,
        log_terms: tuple[str, ...] = (),
        group_lrs: dict[str, float] | None = None,
        lr_schedule: str = "constant",
    ) -> nn.Module:
        """Train ``module`` on ``objective`` for one stage; return the trained module.

        The net is kept as ``net_`` (the last stage's), its history as ``histories_[stage]``, and
        it drops its references to the data and the objective afterwards (kept out of pickles).
        ``group_lrs`` maps parameter-name patterns (skorch's ``param_groups`` syntax, e.g.
        ``"heads.*"``) to their own learning rates. ``lr_schedule="cosine"`` anneals every
        learning rate to 0 over the stage (cosine, stepped each epoch); "constant" keeps them.
        """
        callbacks = copy.deepcopy(list(self.callbacks)) if self.callbacks else []
        processes = distributed.current()
        prints = processes is None or processes.is_main
        if not prints:  # process 0 alone prints and writes files
            callbacks = [cb for cb in callbacks if not isinstance(_callback(cb), OUTPUT_CALLBACKS)]
        elif self.verbose:
            callbacks.append(
                ("progress", StageProgress(f"{type(self).__name__} {stage}", max_epochs))
            )
        elif data.device.type == "cpu":
            callbacks.append(("long_fit", LongStageWarning(f"{type(self).__name__} {stage}")))
        if lr_schedule == "cosine":
            callbacks.append(
                ("lr_schedule", LRScheduler(policy=CosineAnnealingLR, T_max=max(max_epochs, 1)))
            )
        groups = [(pattern, {"lr": value}) for pattern, value in (group_lrs or {}).items()]
        net = DeepClusterNet(
            module,
            objective=objective,
            data=data,
            log_terms=log_terms,
            optimizer=OPTIMIZERS[self.optimizer]
            if isinstance(self.optimizer, str)
            else self.optimizer,
            lr=self.lr if lr is None else lr,
            optimizer__weight_decay=self.weight_decay,
            optimizer__param_groups=groups,
            max_epochs=max_epochs,
            batch_size=self.batch_size,
            callbacks=callbacks,
            verbose=int(self.verbose >= 2 and prints),  # skorch's table of epochs
            device=str(data.device),
            stage=f"{type(self).__name__} {stage}",
            amp=True,
        )
        net.fit_on_data()
        net.release_data()
        self.net_ = net
        self.histories_[stage] = net.history
        return net.module_

    def _views(self, data: DeviceData) -> tuple[Callable, Callable]:
        """``(weak, strong)`` view makers: ``augment`` (or the data kind's default weak view)
        and the default strong view built on top of that weak view
        (:func:`skdeepcluster.augment.default_augmentations`)."""
        return default_augmentations(data.sample, weak=self.augment)

    # ------------------------------------------------------------------ helpers
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
            check_float32_range(X)
            X = X.astype(np.float32)
        if X.ndim == 4:
            X, scale = check_image_scale(X, None if reset else getattr(self, "image_scale_", None))
            if reset:
                self.image_scale_ = scale
        elif reset and hasattr(self, "image_scale_"):
            del self.image_scale_  # refitted on vectors
        if reset:
            self.input_shape_ = tuple(X.shape[1:])
            self.n_features_in_ = int(np.prod(self.input_shape_))
        elif tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"X has sample shape {tuple(X.shape[1:])}, but {type(self).__name__} "
                f"was fitted on {self.input_shape_}"
            )
        # writable: torch must not wrap read-only memory (e.g. GridSearchCV's memmaps); but a
        # memmap the caller passed stays on disk (it may not fit in memory), only read
        if _is_memmap(X_in) and _is_memmap(X) and X.flags.c_contiguous:
            return X
        return np.require(X, requirements=("C", "W"))

    def _draw_seed(self) -> int:
        """One seed from ``random_state`` (the same every call for an int ``random_state``)."""
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    @contextlib.contextmanager
    def _seeded(self, device: torch.device, seed: int) -> Iterator[None]:
        """Run the block with torch's generators seeded with ``seed``, then restore them: the
        caller's global random state is left as it was."""
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def _forward_all(self, module: nn.Module, X: np.ndarray) -> Tensor | list[Tensor]:
        """``module`` over all of validated ``X`` on the fitted device, in batches, eval mode."""
        return self._forward_data(module, DeviceData(X, self.device_))

    def _forward_data(self, module: nn.Module, data: DeviceData) -> Tensor | list[Tensor]:
        return batched_forward(module, data, max(self.batch_size, INFERENCE_BATCH), amp=True)

    def _check_fitted(self) -> None:
        check_is_fitted(self, "module_")
