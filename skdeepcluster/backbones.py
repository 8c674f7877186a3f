"""Backbones (MLP, small CNN, CIFAR ResNet-18), the default choice from X's shape, and freezing.

Every backbone maps a batch of raw inputs (vectors, or images in ``[0, 1]``) to
``(B, out_features)`` features and starts with a :class:`Standardize` layer holding the training
data's statistics, so a fitted module is self-contained: it takes the same raw data at predict
time.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .augment import column_spread

#: Features whose largest spread is at most this many times their median spread share one
#: scale (pixels, one unit of measure); wider ratios mean mixed units (``vector_scales``).
SHARED_SCALE_RATIO = 10.0


def vector_scales(spread: Tensor) -> Tensor:
    """The divisor of each feature of a vector, from the features' spreads (standard deviations).

    Features on one shared scale (the largest spread at most :data:`SHARED_SCALE_RATIO` times the
    median spread of the non-constant features: pixels, counts, one unit of measure) are all
    divided by their root-mean-square spread, which keeps their relative weights: the
    high-variance pixels of a digit carry its shape (digits as 64-d vectors: a k-means of the
    t-SNE embedding 0.945 ACC on one scale against 0.925 per feature, ``docs/benchmarks.md``).
    Features in mixed units (raw tabular columns: spreads of 0.003 and 500 in breast_cancer) are
    each brought to unit spread, as a ``StandardScaler`` would (the floor at the mean spread this
    package used until 12-06 divided the small-unit columns by the large units' spread). Constant
    features keep their spread (0) and are left to :class:`Standardize`.
    """
    moving = spread[spread > 0]
    if not len(moving):
        return spread
    if float(moving.max()) <= SHARED_SCALE_RATIO * float(moving.median()):
        shared = moving.square().mean().sqrt()
        return torch.where(spread > 0, shared, spread)
    return spread


class Standardize(nn.Module):
    """``(x - mean) / std``, statistics stored as buffers (per feature, or per image channel)."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        mean, std = mean.detach().clone().float(), std.detach().clone().float()
        # A spread at float32 rounding level of the mean is a constant feature: divided by 1 it
        # stays constant (0 after centring). Any larger spread, however small (data on a 1e-8
        # scale), is brought to unit scale: an absolute floor would flatten such data.
        # (2 eps |mean|: a real spread of 1,000 at a mean of 1.7e9, timestamps, stays a spread)
        constant = std <= 2 * torch.finfo(torch.float32).eps * mean.abs()
        self.register_buffer("mean", mean)
        self.register_buffer("std", torch.where(constant | (std == 0), torch.ones_like(std), std))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    @classmethod
    def from_data(cls, x: Tensor) -> Standardize:
        """Statistics of ``x``: per column for vectors, per channel for ``(n, c, h, w)`` images."""
        x = x.float()
        if x.ndim == 2:
            return cls(x.mean(0), vector_scales(column_spread(x)))
        dims = (0, 2, 3)
        return cls(x.mean(dims).view(1, -1, 1, 1), x.std(dims).view(1, -1, 1, 1))


class MLP(nn.Sequential):
    """Fully connected backbone for vectors: ``[Linear -> BatchNorm -> ReLU] * len(hidden)``."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (512, 512, 128)) -> None:
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            in_features = width
        super().__init__(*layers)
        self.out_features = in_features
        self.last_block = len(layers) - 3  # the last Linear -> BatchNorm -> ReLU


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Sequential):
    """Four 3x3 conv layers (three of them strided) and global average pooling, for images < 32 px.

    Cheap enough for CPU training on MNIST-size data: 3.1 M multiply-adds per 28x28 gray image
    and 97 k parameters with the default widths.
    """

    def __init__(self, in_channels: int, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        layers: list[nn.Module] = _conv_bn_relu(in_channels, widths[0])
        for c_in, c_out in itertools.pairwise(widths):
            layers += _conv_bn_relu(c_in, c_out, stride=2)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        super().__init__(*layers)
        self.out_features = widths[-1]
        self.last_block = len(layers) - 5  # the last conv -> BatchNorm -> ReLU, then pooling


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(c_in, c_out, stride),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18Cifar(nn.Sequential):
    """ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), for images of 32 px and larger."""

    def __init__(self, in_channels: int) -> None:
        layers: list[nn.Module] = _conv_bn_relu(in_channels, 64)
        c_in = 64
        for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        super().__init__(*layers)
        self.out_features = 512
        self.last_block = len(layers) - 4  # the last macro-block (two 512-channel blocks), pooling


class Backbone(nn.Module):
    """A body preceded by input standardisation; exposes ``out_features``."""

    def __init__(self, standardize: nn.Module, body: nn.Module, out_features: int) -> None:
        super().__init__()
        self.standardize = standardize
        self.body = body
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.standardize(x))


class Frozen(nn.Module):
    """A module kept fixed: no gradients, and always in eval mode (batch-norm statistics too),
    whatever ``train()`` is called with."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> Frozen:
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.module(x)


_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def split_last_block(backbone: Backbone) -> tuple[nn.Module, nn.Module]:
    """``(early, last)`` with ``last(early(x)) == backbone(x)``, ``last`` the backbone's last block.

    The last block is the last ``Linear -> BatchNorm -> ReLU`` of an :class:`MLP`, the last
    ``conv -> BatchNorm -> ReLU`` (and pooling) of a :class:`SmallCNN`, and the last macro-block
    (the two 512-channel residual blocks, and pooling) of a :class:`ResNet18Cifar`. For another
    ``nn.Sequential`` body it starts at the last child holding a linear or convolution layer (an
    integer attribute ``last_block`` on the body overrides this). ``early`` holds the input
    standardisation and everything before.
    """
    body = backbone.body
    if not isinstance(body, nn.Sequential):
        raise ValueError(
            "freezing the early layers needs a backbone whose body is an "
            f"nn.Sequential (to find its last block); got {type(body).__name__}"
        )
    start = getattr(body, "last_block", None)
    if not isinstance(start, int):
        with_weights = [
            i
            for i, child in enumerate(body.children())
            if any(isinstance(m, _WEIGHT_LAYERS) for m in child.modules())
        ]
        if not with_weights:
            raise ValueError("the backbone has no linear or convolution layer to train")
        start = with_weights[-1]
    children = list(body.children())  # (slicing a Sequential subclass would call its __init__)
    return nn.Sequential(backbone.standardize, *children[:start]), nn.Sequential(*children[start:])


class PartlyFrozen(nn.Module):
    """``trainable(frozen(x))`` with ``frozen`` kept :class:`Frozen`; exposes ``out_features``."""

    def __init__(self, frozen: nn.Module, trainable: nn.Module, out_features: int) -> None:
        super().__init__()
        self.frozen = Frozen(frozen)
        self.trainable = trainable
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.trainable(self.frozen(x))


def freeze_early_layers(backbone: Backbone) -> PartlyFrozen:
    """``backbone`` with everything before its last block frozen (weights and batch-norm
    statistics) and the last block trainable (see :func:`split_last_block`)."""
    early, last = split_last_block(backbone)
    return PartlyFrozen(early, last, backbone.out_features)


def default_body(sample_shape: tuple[int, ...]) -> nn.Module:
    """The body for one sample's shape: MLP for ``(d,)``, small CNN below 32 px, else ResNet-18."""
    if len(sample_shape) == 1:
        return MLP(sample_shape[0])
    channels, height, width = sample_shape
    if min(height, width) < 32:
        return SmallCNN(channels)
    return ResNet18Cifar(channels)


@torch.no_grad()
def output_features(body: nn.Module, sample: Tensor) -> int:
    """``body.out_features`` if it has one, else the width of its output on ``sample`` (2 rows)."""
    width = getattr(body, "out_features", None)
    if isinstance(width, int):
        return width
    was_training = body.training
    body.eval()
    out = body(sample[:2])
    body.train(was_training)
    if out.ndim != 2:
        raise ValueError(
            f"backbone must return (batch, features); it returned shape {tuple(out.shape)}"
        )
    return int(out.shape[1])


def build_backbone(sample: Tensor, body: nn.Module | None) -> Backbone:
    """A :class:`Backbone` for training data ``sample`` (all or a large subset of X, raw scale)."""
    if body is None:
        body = default_body(tuple(sample.shape[1:]))
    standardize = Standardize.from_data(sample).to(sample.device)
    body = body.to(sample.device)
    return Backbone(standardize, body, output_features(body, standardize(sample)))
