"""Pretext (self-supervised) feature learners, as scikit-learn transformers."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from torch import Tensor, nn

from ._training import DeviceData
from .augment import default_augmentations
from .backbones import Backbone, ClusterModel, ProjectionModel, build_backbone
from .base import DeepEstimatorMixin, check_number, check_positive_int, resolve_max_epochs, to_numpy
from .losses import nt_xent

#: SimCLR's ``max_epochs="auto"``: at least this many epochs and this many optimisation steps.
AUTO_MIN_EPOCHS = 60
AUTO_MIN_STEPS = 1500


class SimCLRObjective:
    """Two random views of each sample; NT-Xent between their projections."""

    def __init__(self, augment: Callable[[Tensor], Tensor], temperature: float) -> None:
        self.augment = augment
        self.temperature = temperature

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        x = data[idx]
        z_a, z_b = module(torch.cat([self.augment(x), self.augment(x)])).chunk(2)
        return {"loss": nt_xent(z_a, z_b, self.temperature)}


class PretextMixin(DeepEstimatorMixin):
    """What every pretext transformer offers the clustering methods: a fitted ``backbone_``."""

    backbone_: Backbone

    def transform(self, X: Any) -> np.ndarray:
        """Backbone embeddings of ``X``, shape ``(n_samples, backbone_.out_features)``, float32."""
        self._check_fitted()
        X = self._validate_input(X, reset=False)
        return to_numpy(self._forward_all(self.backbone_, X))

    def _build_backbone(self, data: DeviceData) -> Backbone:
        body = None if self.backbone is None else copy.deepcopy(self.backbone)
        if body is not None and not isinstance(body, nn.Module):
            raise ValueError(
                f"backbone must be None or a torch.nn.Module, got {type(body).__name__}"
            )
        return build_backbone(data.subset(), body)


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
        Training epochs. "auto": at least 60 epochs and at least 1,500 optimisation steps (so
        ``ceil(1500 / n_batches)`` epochs on small data: 188 on the 1,797 digits). Measured on
        MNIST-test (10,000 images, small CNN): the purity of the 20 mined neighbours rose from
        0.911 (10 epochs) to 0.943 (30) and 0.956 (60); on the digits images it was 0.944 after
        30 epochs and 0.969 after 200.
    batch_size : int, default=256
    lr : float, default=3e-3
        AdamW learning rate (3e-3 gave purer neighbours than 1e-3 on MNIST-test in 20 epochs).
    weight_decay : float, default=1e-4
    augment : callable or None, default=None
        ``views = augment(batch)`` on the device; None for the default of the data kind
        (:func:`skdeepcluster.augment.default_augmentations`, weak view).
    device : str or torch.device, default="cpu"
        "cpu", "cuda" or "cuda:N". On CUDA, training runs under bfloat16 autocast.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batching and augmentation; runs on the CPU are repeatable.
    verbose : int, default=0
        Print skorch's per-epoch log.
    callbacks : list or None, default=None
        skorch callbacks (learning-rate schedule, checkpoint, early stopping on ``train_loss``...).
        They are copied before training (the parameter is never modified); the trained copies are
        in ``net_.callbacks_``.

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The trained backbone (with input standardisation).
    module_ : torch.nn.Module
        Backbone and projection head.
    net_ : skorch.NeuralNet
        The skorch net that trained it.
    history_ : skorch.History
        Per-epoch ``train_loss`` and timings.
    n_epochs_ : int
        The number of epochs trained (``max_epochs`` resolved).
    device_ : torch.device
    input_shape_ : tuple
        Shape of one sample, ``(d,)`` or ``(c, h, w)``.
    n_features_in_ : int
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        projection_dim: int = 128,
        temperature: float = 0.5,
        max_epochs: int | str = "auto",
        batch_size: int = 256,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        augment: Callable | None = None,
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
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # embeddings are always float32
        return tags

    def fit(self, X: Any, y: Any = None) -> SimCLR:
        """Train backbone and projection head on ``X`` (``y`` is ignored)."""
        self._check_common_params()
        check_positive_int(self.projection_dim, "projection_dim")
        check_number(self.temperature, "temperature", 0.0, low_open=True)
        X = self._validate_input(X, reset=True)
        self.n_epochs_ = resolve_max_epochs(
            self.max_epochs, len(X), self.batch_size, AUTO_MIN_EPOCHS, AUTO_MIN_STEPS
        )
        self.device_ = self._device()
        with self._seeded(self.device_):
            data = DeviceData(X, self.device_)
            augment = self.augment or default_augmentations(data.subset())[0]
            self.module_ = ProjectionModel(self._build_backbone(data), self.projection_dim)
            self.net_ = self._make_net(
                self.module_, SimCLRObjective(augment, self.temperature), data, self.n_epochs_
            )
            self.net_.fit_on_data()
        self.net_.release_data()
        self.module_ = self.net_.module_
        self.backbone_ = self.module_.backbone
        self.history_ = self.net_.history
        return self


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
    max_epochs : int, default=30
        Training epochs (each sees every image four times).
    batch_size : int, default=256
        Images per batch before rotation (the network sees ``4 * batch_size``).
    lr : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=1e-4
    augment : callable or None, default=None
        ``view = augment(batch)`` on the device, applied before rotating; None for the default weak
        image view (:func:`skdeepcluster.augment.default_augmentations`).
    device : str or torch.device, default="cpu"
        "cpu", "cuda" or "cuda:N". On CUDA, training runs under bfloat16 autocast.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batching and augmentation; runs on the CPU are repeatable.
    verbose : int, default=0
        Print skorch's per-epoch log.
    callbacks : list or None, default=None
        skorch callbacks (learning-rate schedule, checkpoint, early stopping on ``train_loss``...).

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The trained backbone (with input standardisation).
    module_ : torch.nn.Module
        Backbone and rotation head (a :class:`~skdeepcluster.backbones.ClusterModel` with one
        4-way head).
    net_ : skorch.NeuralNet
        The skorch net that trained it.
    history_ : skorch.History
        Per-epoch ``train_loss``, rotation ``accuracy`` and timings.
    device_ : torch.device
    input_shape_ : tuple
        Shape of one image, ``(c, h, w)``.
    n_features_in_ : int
        Values per image, ``c * h * w``.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        max_epochs: int = 30,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        augment: Callable | None = None,
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
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # embeddings are always float32
        tags.input_tags.two_d_array = False  # images only
        tags.input_tags.three_d_array = True
        return tags

    def fit(self, X: Any, y: Any = None) -> RotNet:
        """Train backbone and rotation head on the images ``X`` (``y`` is ignored)."""
        self._check_common_params()
        max_epochs = check_positive_int(self.max_epochs, "max_epochs", 0)
        X = self._validate_input(X, reset=True)
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
        self.device_ = self._device()
        with self._seeded(self.device_):
            data = DeviceData(X, self.device_)
            augment = self.augment or default_augmentations(data.subset())[0]
            backbone = self._build_backbone(data)
            self.module_ = ClusterModel(backbone, backbone.out_features, [4])
            self.net_ = self._make_net(
                self.module_, RotNetObjective(augment), data, max_epochs, log_terms=("accuracy",)
            )
            self.net_.fit_on_data()
        self.net_.release_data()
        self.module_ = self.net_.module_
        self.backbone_ = self.module_.backbone
        self.history_ = self.net_.history
        return self
