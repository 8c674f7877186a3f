"""Pretext (self-supervised) feature learners as scikit-learn transformers, and THE one pretext
builder every clustering method calls (:func:`fit_pretext`)."""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, clone
from sklearn.utils._param_validation import Interval
from torch import Tensor, nn

from ._training import DeviceData
from .augment import MarginalCorruption
from .backbones import Backbone, build_backbone
from .base import (
    COMMON_CONSTRAINTS,
    DeepEstimatorMixin,
    FitInput,
    epochs_constraint,
    left_at_default,
    resolve_max_epochs,
    to_numpy,
)
from .heads import ClusterModel, ProjectionModel
from .losses import nt_xent

#: SimCLR's ``max_epochs="auto"``: at least this many epochs and this many optimisation steps.
AUTO_MIN_EPOCHS = 60
AUTO_MIN_STEPS = 1500
#: AutoEncoder's ``max_epochs="auto"``.
AUTOENCODER_AUTO_MIN_EPOCHS = 50
AUTOENCODER_AUTO_MIN_STEPS = 1000
#: RotNet's ``max_epochs="auto"``.
ROTNET_AUTO_MIN_EPOCHS = 30
ROTNET_AUTO_MIN_STEPS = 0


class SimCLRObjective:
    """Two random views of each sample; NT-Xent between their projections."""

    def __init__(self, augment: Callable[[Tensor], Tensor], temperature: float) -> None:
        self.augment = augment
        self.temperature = temperature

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        x = data[idx]
        z_a, z_b = module(torch.cat([self.augment(x), self.augment(x)])).chunk(2)
        return {"loss": nt_xent(z_a, z_b, self.temperature)}


#: The parameters every pretext transformer shares: ``{pretext_parameters}`` stands for them.
PRETEXT_PARAMETERS_DOC = """device : str or torch.device, default="cpu"
        "cpu", "cuda" or "cuda:N". On CUDA, training runs under bfloat16 autocast.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batching and the random views; runs on the CPU are repeatable.
    verbose : int, default=0
        1: a progress bar of the training epochs, with ETA and loss; 2: also skorch's table of
        epochs. 0: silent, except one warning when the first epochs predict a very long fit on
        the CPU.
    callbacks : list or None, default=None
        skorch callbacks (learning-rate schedule, checkpoint, early stopping on ``train_loss``...).
        They are copied before training (the parameter is never modified); the trained copies are
        in ``net_.callbacks_``."""


class PretextMixin(ClassNamePrefixFeaturesOutMixin, DeepEstimatorMixin):
    """What every pretext transformer offers the clustering methods: a fitted ``backbone_``.

    ``get_feature_names_out`` names the embedding's columns after the class (``simclr0``,
    ``simclr1``, ...), so ``set_output(transform="pandas")`` works in a Pipeline.
    """

    backbone_: Backbone
    _docstring_entries = {
        **DeepEstimatorMixin._docstring_entries,
        "{pretext_parameters}": PRETEXT_PARAMETERS_DOC,
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # embeddings are always float32
        return tags

    @property
    def _n_features_out(self) -> int:
        """Columns of :meth:`transform` (``get_feature_names_out``); AttributeError unfitted."""
        return int(self.backbone_.out_features)

    def transform(self, X: Any) -> np.ndarray:
        """Backbone embeddings of ``X``, shape ``(n_samples, backbone_.out_features)``, float32."""
        self._check_fitted()
        X = self._validate_input(X, reset=False)
        return to_numpy(self._forward_all(self.backbone_, X))

    def _new_backbone(self, data: DeviceData) -> Backbone:
        body = None if self.backbone is None else copy.deepcopy(self.backbone)
        return build_backbone(data.sample, body)

    def _train_pretext(self, module: nn.Module, objective: Any, fit: FitInput, **kw: Any) -> None:
        self.n_epochs_ = resolve_max_epochs(
            self.max_epochs, len(fit.X), self.batch_size, *self._auto_epochs
        )
        self.module_ = self._train("pretext", module, objective, fit.data, self.n_epochs_, **kw)
        self.backbone_ = self.module_.backbone


class SimCLR(PretextMixin, TransformerMixin, BaseEstimator):
    """SimCLR contrastive pretext learning (Chen et al., ICML 2020) as a transformer.

    Each batch is augmented twice; a backbone and a projection head are trained so that the two
    views of a sample are closer to each other than to the other samples' views (NT-Xent,
    :func:`skdeepcluster.losses.nt_xent`). ``transform`` returns the backbone's embeddings
    (before the projection head), the features SCAN mines its neighbours in.

    Parameters
    ----------
    backbone : torch.nn.Module or None, default=None
        Network mapping a batch of raw inputs to ``(batch, features)``; copied, never modified.
        None picks one from X's shape: an MLP for ``(n, d)``, a small CNN for images smaller than
        32 px, a CIFAR ResNet-18 otherwise. Inputs are standardised before it.
    projection_dim : int, default=128
        Output size of the projection head.
    temperature : float, default=0.5
        NT-Xent temperature.
    max_epochs : int or "auto", default="auto"
        Training epochs. "auto": at least 60 epochs and at least 1,500 optimisation steps (215
        epochs on the 1,797 digits), the steps taking at most 250 epochs (small data); how it
        was chosen: ``docs/benchmarks.md``.
    batch_size : int, default=256
    lr : float, default=3e-3
        Learning rate.
    weight_decay : float, default=1e-4
    augment : callable or None, default=None
        ``view = augment(batch)`` on the device; None for the default weak view of the data
        kind (:func:`skdeepcluster.augment.default_augmentations`).
    {optimizer_parameter}
    {pretext_parameters}

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The trained backbone (with input standardisation).
    module_ : torch.nn.Module
        Backbone and projection head.
    net_ : skorch.NeuralNet
        The skorch net that trained it.
    history_ : skorch.History
        Per-epoch ``train_loss`` and timings (``"stage"`` is ``"pretext"``).
    histories_ : dict of skorch.History
        ``{"pretext": history_}``.
    n_epochs_ : int
        The number of epochs trained (``max_epochs`` resolved).
    device_ : torch.device
        The device the backbone lives on.
    input_shape_ : tuple
        Shape of one sample, ``(d,)`` or ``(c, h, w)``.
    n_features_in_ : int
        Values per sample.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skdeepcluster import SimCLR
    >>> X, _ = load_digits(return_X_y=True)
    >>> embeddings = SimCLR(max_epochs=2, random_state=0).fit_transform(X)
    >>> embeddings.shape
    (1797, 128)
    """

    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "backbone": [nn.Module, None],
        "projection_dim": [Interval(Integral, 1, None, closed="left")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "max_epochs": epochs_constraint(0),
    }
    _auto_epochs = (AUTO_MIN_EPOCHS, AUTO_MIN_STEPS)

    def __init__(
        self,
        backbone: nn.Module | None = None,
        *,
        projection_dim: int = 128,
        temperature: float = 0.5,
        max_epochs: int | str = "auto",
        batch_size: int = 256,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        augment: Callable | None = None,
        optimizer: str | Callable = "adamw",
        device: str = "cpu",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list | None = None,
    ) -> None:
        self.backbone = backbone
        self.projection_dim = projection_dim
        self.temperature = temperature
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

    def _fit(self, fit: FitInput) -> None:
        weak, _ = self._views(fit.data)
        module = ProjectionModel(self._new_backbone(fit.data), self.projection_dim)
        self._train_pretext(module, SimCLRObjective(weak, self.temperature), fit)


class RotNetObjective:
    """Each image of the batch at the four right-angle rotations; cross-entropy on the rotation."""

    def __init__(self, augment: Callable[[Tensor], Tensor]) -> None:
        self.augment = augment

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        x = self.augment(data[idx])
        rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
        target = torch.arange(4, device=x.device).repeat_interleave(len(x))
        logits = module(rotated)[0]
        accuracy = (logits.detach().argmax(1) == target).float().mean()
        return {"loss": nn.functional.cross_entropy(logits.float(), target), "accuracy": accuracy}


class RotNet(PretextMixin, TransformerMixin, BaseEstimator):
    """Rotation-prediction pretext learning (Gidaris et al., ICLR 2018) as a transformer.

    Every image of a batch is shown at the four rotations by 0, 90, 180 and 270 degrees
    (``torch.rot90``, batched) and a backbone with a linear 4-way head learns to tell which rotation
    it sees (cross-entropy). LSD-C (Rebuffi et al., 2020) initialises its network this way.
    ``transform`` returns the backbone's embeddings (before the rotation head).

    Images only: vectors have no rotations, and a non-square image would change shape when rotated
    by 90 degrees; both raise a ValueError in ``fit``.

    Parameters
    ----------
    backbone : torch.nn.Module or None, default=None
        Network mapping a batch of raw images to ``(batch, features)``; copied, never modified.
        None picks one from X's shape: a small CNN for images smaller than 32 px, a CIFAR
        ResNet-18 otherwise. Inputs are standardised before it.
    max_epochs : int or "auto", default="auto"
        Training epochs (each sees every image four times); "auto" is 30.
    batch_size : int, default=256
        Images per batch before rotation (the network sees ``4 * batch_size``).
    lr : float, default=1e-3
        Learning rate.
    weight_decay : float, default=1e-4
    augment : callable or None, default=None
        ``view = augment(batch)`` on the device, applied before rotating; None for the default weak
        image view (:func:`skdeepcluster.augment.default_augmentations`).
    {optimizer_parameter}
    {pretext_parameters}

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The trained backbone (with input standardisation).
    module_ : torch.nn.Module
        Backbone and rotation head (a :class:`~skdeepcluster.heads.ClusterModel` with one
        4-way head).
    net_ : skorch.NeuralNet
        The skorch net that trained it.
    history_ : skorch.History
        Per-epoch ``train_loss``, rotation ``accuracy`` and timings.
    histories_ : dict of skorch.History
        ``{"pretext": history_}``.
    n_epochs_ : int
        The number of epochs trained (``max_epochs`` resolved).
    device_ : torch.device
        The device the backbone lives on.
    input_shape_ : tuple
        Shape of one image, ``(c, h, w)``.
    n_features_in_ : int
        Values per image, ``c * h * w``.
    """

    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "backbone": [nn.Module, None],
        "max_epochs": epochs_constraint(0),
    }
    _auto_epochs = (ROTNET_AUTO_MIN_EPOCHS, ROTNET_AUTO_MIN_STEPS)

    def __init__(
        self,
        backbone: nn.Module | None = None,
        *,
        max_epochs: int | str = "auto",
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        augment: Callable | None = None,
        optimizer: str | Callable = "adamw",
        device: str = "cpu",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list | None = None,
    ) -> None:
        self.backbone = backbone
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # images only
        tags.input_tags.three_d_array = True
        return tags

    def _check_params(self, X: np.ndarray) -> None:
        if X.ndim != 4:  # 3-D input has become (n, 1, h, w) here; 2-D is vectors
            raise ValueError(
                "RotNet needs images, (n, height, width) or (n, channels, height, "
                f"width); got 2-D vectors of shape {X.shape}. Use SimCLR for vectors."
            )
        if X.shape[2] != X.shape[3]:
            raise ValueError(
                f"RotNet needs square images (a rotation by 90 degrees would change "
                f"their shape); got height {X.shape[2]} != width {X.shape[3]}"
            )

    def _fit(self, fit: FitInput) -> None:
        weak, _ = self._views(fit.data)
        backbone = self._new_backbone(fit.data)
        module = ClusterModel(backbone, backbone.out_features, [4])
        self._train_pretext(module, RotNetObjective(weak), fit, log_terms=("accuracy",))


class AutoEncoderModel(nn.Module):
    """Encoder (a :class:`~skdeepcluster.backbones.Backbone`, input standardisation included)
    and decoder; ``forward`` returns the reconstruction in the standardised space."""

    def __init__(self, backbone: Backbone, decoder: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.backbone(x))


class AutoEncoderObjective:
    """Reconstruct each standardised clean sample from its corrupted view (mean squared error)."""

    def __init__(self, corrupt: Callable[[Tensor], Tensor]) -> None:
        self.corrupt = corrupt

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        x = data[idx].float()
        target = module.backbone.standardize(x)
        return {"loss": nn.functional.mse_loss(module(self.corrupt(x)).float(), target)}


def _mlp(widths: list[int]) -> nn.Sequential:
    """``Linear -> ReLU`` between consecutive widths, no activation after the last Linear."""
    layers: list[nn.Module] = []
    for w_in, w_out in itertools.pairwise(widths):
        layers += [nn.Linear(w_in, w_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers[:-1])


class AutoEncoder(PretextMixin, TransformerMixin, BaseEstimator):
    """Denoising autoencoder pretext learning for feature vectors, as a transformer.

    The autoencoder that N2D (McConville et al., ICPR 2020), DEC and IDEC pretrain: an encoder
    ``d-500-500-2000-embedding_dim`` and its mirror image as decoder, trained to reconstruct the
    standardised input (mean squared error). Its input is corrupted as SCARF does
    (:class:`~skdeepcluster.augment.MarginalCorruption`: a fraction ``corruption`` of the entries
    replaced by draws from their feature's marginal), which makes it a denoising autoencoder.
    ``transform`` returns the encoder's embeddings; a clustering method given
    ``pretext="autoencoder"`` starts from the encoder, and with ``head_init="manifold"`` from a
    partition of the t-SNE embedding of those embeddings (N2D's manifold step). The methods'
    ``pretext="auto"`` picks it for vectors of 256 features and more.

    Vectors only: images get SimCLR or RotNet, which know what a view of an image is.

    Parameters
    ----------
    backbone : torch.nn.Module or None, default=None
        Encoder mapping a batch of vectors to ``(batch, features)``; copied, never modified.
        None builds N2D's ``d-500-500-2000-embedding_dim`` encoder. Inputs are standardised
        before it.
    embedding_dim : int, default=10
        Width of the default encoder's output (N2D and DEC: the number of clusters, 10).
    hidden : sequence of int, default=(500, 500, 2000)
        Hidden widths of the default encoder (the decoder mirrors them).
    corruption : float, default=0.2
        Fraction of entries replaced by draws from their marginal in the encoder's input; 0 for
        a plain autoencoder.
    max_epochs : int or "auto", default="auto"
        Training epochs. "auto": at least 50 epochs and 1,000 optimisation steps, the steps
        taking at most 250 epochs.
    batch_size : int, default=256
    lr : float, default=1e-3
        Learning rate.
    weight_decay : float, default=0.0
    augment : callable or None, default=None
        ``view = augment(batch)`` on the device, the encoder's input; None for the marginal
        corruption above.
    fine_tune_lr_scale : float, default=0.1
        A clustering method that starts from this encoder trains it at this fraction of its own
        learning rate (its heads at the full rate). 1 for the method's rate, as the papers do.
        Not the papers: a plain MLP without normalisation, the encoder drifts away from what it
        learnt at the rates that suit batch-normalised backbones (MNIST-test as vectors, seed
        0: DRC 0.435 -> 0.960, SeLa 0.924 -> 0.943, ``docs/benchmarks.md``).
    {optimizer_parameter}
    {pretext_parameters}

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The trained encoder (with input standardisation).
    module_ : torch.nn.Module
        Encoder and decoder.
    net_ : skorch.NeuralNet
        The skorch net that trained it.
    history_ : skorch.History
        Per-epoch ``train_loss`` (the reconstruction error) and timings.
    histories_ : dict of skorch.History
        ``{"pretext": history_}``.
    n_epochs_ : int
        The number of epochs trained (``max_epochs`` resolved).
    device_ : torch.device
        The device the encoder lives on.
    input_shape_ : tuple
        ``(d,)``.
    n_features_in_ : int
        Features per sample.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skdeepcluster import AutoEncoder
    >>> X, _ = load_digits(return_X_y=True)
    >>> AutoEncoder(max_epochs=2, random_state=0).fit_transform(X).shape
    (1797, 10)
    """

    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "backbone": [nn.Module, None],
        "embedding_dim": [Interval(Integral, 1, None, closed="left")],
        "hidden": [list, tuple],
        "corruption": [Interval(Real, 0, 1, closed="both")],
        "fine_tune_lr_scale": [Interval(Real, 0, None, closed="right")],
        "max_epochs": epochs_constraint(0),
    }
    _auto_epochs = (AUTOENCODER_AUTO_MIN_EPOCHS, AUTOENCODER_AUTO_MIN_STEPS)

    def __init__(
        self,
        backbone: nn.Module | None = None,
        *,
        embedding_dim: int = 10,
        hidden: tuple[int, ...] = (500, 500, 2000),
        corruption: float = 0.2,
        max_epochs: int | str = "auto",
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        augment: Callable | None = None,
        fine_tune_lr_scale: float = 0.1,
        optimizer: str | Callable = "adamw",
        device: str = "cpu",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list | None = None,
    ) -> None:
        self.backbone = backbone
        self.embedding_dim = embedding_dim
        self.fine_tune_lr_scale = fine_tune_lr_scale
        self.hidden = hidden
        self.corruption = corruption
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

    def _check_params(self, X: np.ndarray) -> None:
        if X.ndim != 2:
            raise ValueError(
                "AutoEncoder is for feature vectors (n_samples, n_features); got images of "
                f"shape {X.shape}. Use SimCLR or RotNet for images."
            )
        if not all(isinstance(w, Integral) and w >= 1 for w in self.hidden):
            raise ValueError(f"hidden must hold positive integers, got {self.hidden!r}")

    def _fit(self, fit: FitInput) -> None:
        d = fit.X.shape[1]
        if self.backbone is None:
            body = _mlp([d, *self.hidden, self.embedding_dim])
        else:
            body = copy.deepcopy(self.backbone)
        backbone = build_backbone(fit.data.sample, body)
        decoder = _mlp([backbone.out_features, *reversed(self.hidden), d]).to(self.device_)
        corrupt = self.augment or MarginalCorruption(fit.data.sample.float(), self.corruption)
        module = AutoEncoderModel(backbone, decoder)
        self._train_pretext(module, AutoEncoderObjective(corrupt), fit)


#: The pretexts a clustering method can name in its ``pretext`` parameter.
NAMED_PRETEXTS: dict[str, type] = {"simclr": SimCLR, "rotnet": RotNet, "autoencoder": AutoEncoder}


def named_pretext(name: str, **params: Any) -> BaseEstimator:
    """The pretext transformer called ``name`` (see :data:`NAMED_PRETEXTS`) with ``params``."""
    if name not in NAMED_PRETEXTS:
        raise ValueError(
            f"{name!r} names no pretext; pretext__<param> settings need a named pretext "
            f"({', '.join(map(repr, NAMED_PRETEXTS))}) or a pretext transformer"
        )
    return NAMED_PRETEXTS[name](**params)


def fit_pretext(
    pretext: str | BaseEstimator,
    X: np.ndarray,
    *,
    device: Any,
    random_state: int,
    verbose: int,
    callbacks: Any = None,
) -> BaseEstimator:
    """Fit a pretext for a clustering method: the named one, or a clone of the user's.

    The pretext gets the method's ``device``, ``random_state``, ``verbose`` and ``callbacks``
    unless the user set them on it (a parameter left at its default counts as unset), so that a
    seeded method is repeatable, a CUDA method trains its pretext on CUDA too, and the user's
    callbacks and progress bars reach the pretext stage. The given object is never modified.
    ``X`` is the method's validated X.
    """
    estimator = named_pretext(pretext) if isinstance(pretext, str) else clone(pretext)
    given = {
        "device": device,
        "random_state": random_state,
        "verbose": verbose,
        "callbacks": callbacks,
    }
    names = estimator.get_params(deep=False)
    estimator.set_params(
        **{k: v for k, v in given.items() if k in names and left_at_default(estimator, k)}
    )
    with warnings.catch_warnings():  # the method has reported them already
        warnings.filterwarnings("ignore", message=r"X has \d+ constant feature")
        return estimator.fit(X)


def pretext_backbone(pretext: Any, device: torch.device) -> Backbone:
    """A copy of a fitted pretext's ``backbone_`` on ``device``, checked to expose an integer
    ``out_features`` (the width the heads read)."""
    if not isinstance(getattr(pretext, "backbone_", None), nn.Module):
        raise ValueError(
            f"the fitted pretext {type(pretext).__name__} has no backbone_ module; a pretext "
            "must expose its trained network as backbone_ (as SimCLR and RotNet do)"
        )
    backbone = copy.deepcopy(pretext.backbone_).to(device)
    if not isinstance(getattr(backbone, "out_features", None), Integral):
        raise ValueError("the pretext's backbone_ must expose an integer out_features")
    return backbone


__all__ = ["NAMED_PRETEXTS", "AutoEncoder", "RotNet", "SimCLR", "fit_pretext", "pretext_backbone"]
