"""View makers: random augmentations applied to a whole batch at once, on the batch's device.

Images are ``(B, C, H, W)`` floats in ``[0, 1]``; vectors are ``(B, d)``. Every transform draws
its own random parameters per sample from torch's global generator (estimators seed it through
``random_state``), and contains no per-sample Python: one batch, a handful of tensor operations.

- :class:`VectorAugment`: Gaussian noise scaled to each feature's spread, and feature masking.
- :class:`MarginalCorruption`: SCARF's corruption, entries replaced by draws from their
  feature's empirical marginal.
- :class:`ImageAugment`: random resized crop (+ optional small rotation) and flip in one affine
  resampling, colour jitter (brightness, contrast, saturation), random grayscale.
- :class:`StrongImageAugment`: ``n_ops`` random operations per sample out of a RandAugment-like
  list (affine distortions, solarize, posterize, autocontrast, contrast, brightness, sharpness),
  then cutout.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Augment = Callable[[Tensor], Tensor]


def _uniform(n: int, low: float, high: float, like: Tensor) -> Tensor:
    return torch.rand(n, device=like.device, dtype=like.dtype) * (high - low) + low


def _coin(n: int, p: float, like: Tensor) -> Tensor:
    """Boolean mask of ``n`` independent Bernoulli(p) draws."""
    return torch.rand(n, device=like.device) < p


def identity(x: Tensor) -> Tensor:
    """No augmentation (used for frozen features)."""
    return x


class VectorAugment:
    """Noise and masking for feature vectors.

    ``x' = m * (x + noise * sigma * eps)``, ``eps ~ N(0, 1)``, ``m_j ~ Bernoulli(1 - mask_prob)``
    per entry, ``sigma`` the per-feature standard deviation of the training data.

    Parameters
    ----------
    feature_std : Tensor of shape (d,)
        Spread of each feature, so the noise is scale-free.
    noise : float
        Noise standard deviation as a fraction of each feature's spread.
    mask_prob : float
        Probability of setting an entry to zero.
    """

    def __init__(self, feature_std: Tensor, noise: float = 0.2, mask_prob: float = 0.2) -> None:
        self.feature_std = feature_std
        self.noise = noise
        self.mask_prob = mask_prob

    def __call__(self, x: Tensor) -> Tensor:
        out = x + self.noise * self.feature_std * torch.randn_like(x)
        if self.mask_prob > 0:
            out = out * (torch.rand_like(x) >= self.mask_prob)
        return out


class MarginalCorruption:
    """SCARF's corruption of feature vectors (Bahri et al., ICLR 2022).

    Each entry is replaced, with probability ``prob``, by the same feature of a random row of
    ``pool`` (the training data), i.e. by a draw from that feature's empirical marginal. The
    corrupted vector stays on every feature's own scale and support (integers stay integers,
    a binary feature stays binary), where zero-masking and Gaussian noise leave the data's range.

    Parameters
    ----------
    pool : Tensor of shape (m, d)
        Training rows the replacements are drawn from (all of X, or a random subset).
    prob : float
        Probability of replacing an entry, in ``[0, 1]``.
    """

    def __init__(self, pool: Tensor, prob: float = 0.2) -> None:
        self.pool = pool
        self.prob = prob

    def __call__(self, x: Tensor) -> Tensor:
        rows = torch.randint(len(self.pool), x.shape, device=x.device)
        replacement = torch.gather(self.pool.to(x.dtype), 0, rows)
        return torch.where(torch.rand_like(x, dtype=torch.float32) < self.prob, replacement, x)


def _affine_resample(x: Tensor, theta: Tensor, padding: str = "zeros") -> Tensor:
    """Resample every image through its own 2x3 affine map (normalised coordinates)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _to_gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma, ``(B, 1, H, W)``; single-channel images are returned as they are."""
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``other + factor * (x - other)``, per-sample ``factor`` of shape (B,), clamped to [0, 1]."""
    return (other + factor.view(-1, 1, 1, 1) * (x - other)).clamp(0, 1)


class ImageAugment:
    """The SimCLR-style weak view for images, batched.

    Parameters
    ----------
    crop_scale : (float, float)
        Range of the crop's area as a fraction of the image (random resized crop).
    crop_ratio : (float, float)
        Range of the crop's aspect ratio.
    flip_prob : float
        Probability of a horizontal flip.
    rotation : float
        Maximum rotation in degrees (0: none).
    jitter : float
        Strength of colour jitter: brightness, contrast and saturation factors in
        ``[1 - jitter, 1 + jitter]``.
    jitter_prob : float
        Probability of applying colour jitter to a sample.
    grayscale_prob : float
        Probability of turning a colour image to gray (ignored for single-channel images).
    """

    def __init__(
        self,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
        rotation: float = 0.0,
        jitter: float = 0.4,
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
    ) -> None:
        self.crop_scale = crop_scale
        self.crop_ratio = crop_ratio
        self.flip_prob = flip_prob
        self.rotation = rotation
        self.jitter = jitter
        self.jitter_prob = jitter_prob
        self.grayscale_prob = grayscale_prob

    def _crop_theta(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        area = _uniform(n, *self.crop_scale, x)
        log_ratio = _uniform(n, math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), x)
        ratio = log_ratio.exp()
        width = (area * ratio).sqrt().clamp(max=1.0)  # fraction of the side
        height = (area / ratio).sqrt().clamp(max=1.0)
        centre_x = (torch.rand_like(width) * 2 - 1) * (1 - width)
        centre_y = (torch.rand_like(height) * 2 - 1) * (1 - height)
        flip = torch.where(_coin(n, self.flip_prob, x), -1.0, 1.0).to(x.dtype)
        angle = _uniform(n, -self.rotation, self.rotation, x) * (math.pi / 180)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack(
            [
                torch.stack([width * flip * cos, -height * sin, centre_x], 1),
                torch.stack([width * flip * sin, height * cos, centre_y], 1),
            ],
            1,
        )
        return theta

    def _jitter(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        apply = _coin(n, self.jitter_prob, x).to(x.dtype)
        low, high = 1 - self.jitter, 1 + self.jitter

        def factor() -> Tensor:  # identity (1.0) for samples that are not jittered
            return 1 + apply * (_uniform(n, low, high, x) - 1)

        x = (x * factor().view(-1, 1, 1, 1)).clamp(0, 1)  # brightness
        x = _blend(x, _to_gray(x).mean((2, 3), keepdim=True), factor())  # contrast
        if x.shape[1] == 3:
            x = _blend(x, _to_gray(x), factor())  # saturation
        return x

    def __call__(self, x: Tensor) -> Tensor:
        x = _affine_resample(x, self._crop_theta(x))
        if self.jitter > 0:
            x = self._jitter(x)
        if x.shape[1] == 3 and self.grayscale_prob > 0:
            gray = _coin(x.shape[0], self.grayscale_prob, x).view(-1, 1, 1, 1)
            x = torch.where(gray, _to_gray(x).expand_as(x), x)
        return x


def _cutout(x: Tensor, size: float) -> Tensor:
    """Zero a square of side ``size * min(H, W)`` at a random centre in every image."""
    n, _, h, w = x.shape
    side = size * min(h, w)
    cy = torch.rand(n, 1, 1, device=x.device) * h
    cx = torch.rand(n, 1, 1, device=x.device) * w
    rows = torch.arange(h, device=x.device).view(1, h, 1) + 0.5
    cols = torch.arange(w, device=x.device).view(1, 1, w) + 0.5
    inside = ((rows - cy).abs() < side / 2) & ((cols - cx).abs() < side / 2)
    return x.masked_fill(inside.unsqueeze(1), 0.0)


def _sharpen(x: Tensor, factor: Tensor) -> Tensor:
    kernel = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device, dtype=x.dtype) / 13
    c = x.shape[1]
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
    return _blend(x, smooth, factor)


def _autocontrast(x: Tensor) -> Tensor:
    low = x.amin((2, 3), keepdim=True)
    high = x.amax((2, 3), keepdim=True)
    return torch.where(high > low, (x - low) / (high - low).clamp_min(1e-6), x)


class StrongImageAugment:
    """A RandAugment-like strong view, batched: ``n_ops`` random operations, then cutout.

    Each sample draws its own operations and magnitudes (uniform up to ``magnitude`` in ``[0, 1]``).

    Parameters
    ----------
    n_ops : int
        Operations per sample.
    magnitude : float
        Maximum strength in ``[0, 1]``.
    cutout : float
        Side of the cutout square as a fraction of the image side (0: none).
    base : ImageAugment or None
        A weak view applied first (crop and flip); None for none.
    """

    _OPS = (
        "identity",
        "rotate",
        "shear_x",
        "shear_y",
        "translate_x",
        "translate_y",
        "solarize",
        "posterize",
        "autocontrast",
        "contrast",
        "brightness",
        "sharpness",
    )

    def __init__(
        self,
        n_ops: int = 2,
        magnitude: float = 0.5,
        cutout: float = 0.5,
        base: ImageAugment | None = None,
    ) -> None:
        self.n_ops = n_ops
        self.magnitude = magnitude
        self.cutout = cutout
        self.base = base

    def _apply(self, name: str, x: Tensor, m: Tensor) -> Tensor:
        """Operation ``name`` with signed per-sample magnitudes ``m`` in [-magnitude, magnitude]."""
        n = x.shape[0]
        eye = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(n, 2, 3).clone()
        if name == "rotate":  # up to 30 degrees
            angle = m * (math.pi / 6)
            eye[:, 0, 0], eye[:, 0, 1] = angle.cos(), -angle.sin()
            eye[:, 1, 0], eye[:, 1, 1] = angle.sin(), angle.cos()
            return _affine_resample(x, eye)
        if name.startswith("shear"):
            eye[:, 0 if name == "shear_x" else 1, 1 if name == "shear_x" else 0] = 0.3 * m
            return _affine_resample(x, eye)
        if name.startswith("translate"):
            eye[:, 0 if name == "translate_x" else 1, 2] = 0.6 * m  # up to 30 % of the side
            return _affine_resample(x, eye)
        strength = m.abs()
        if name == "solarize":
            threshold = (1 - strength).view(-1, 1, 1, 1)
            return torch.where(x >= threshold, 1 - x, x)
        if name == "posterize":  # keep 8 - 4 * strength bits
            levels = (2 ** (8 - (4 * strength).round())).view(-1, 1, 1, 1)
            return torch.floor(x * levels) / levels
        if name == "autocontrast":
            return _autocontrast(x)
        if name == "contrast":
            return _blend(x, _to_gray(x).mean((2, 3), keepdim=True), 1 + 0.9 * m)
        if name == "brightness":
            return _blend(x, torch.zeros_like(x), 1 + 0.9 * m)
        if name == "sharpness":
            return _sharpen(x, 1 + 0.9 * m)
        return x

    _AFFINE = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")

    def _apply_selected(self, x: Tensor, choice: Tensor, m: Tensor) -> Tensor:
        """Each row through the operation it drew, operation by operation on the rows that drew
        it (on the CPU a third of the time of :meth:`_apply_chosen`, whose result is the same)."""
        out = x.clone()
        for k, name in enumerate(self._OPS):
            rows = (choice == k).nonzero().squeeze(1)
            if name != "identity" and rows.numel() > 0:
                out[rows] = self._apply(name, x[rows], m[rows])
        return out

    def _apply_chosen(self, x: Tensor, choice: Tensor, m: Tensor) -> Tensor:
        """Each row through the operation it drew (``choice``, an index into ``_OPS``), with
        its signed magnitude ``m``: the same rows as :meth:`_apply` on the rows of each
        operation, computed without selecting rows (which reads the selection on the host, a
        device sync per operation on a GPU). The affine operations share one resampling of the
        batch, with each row's own matrix; the pointwise ones run on the batch and are kept
        where drawn."""
        n = x.shape[0]
        drawn = {name: choice == k for k, name in enumerate(self._OPS)}
        theta = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(n, 2, 3).clone()
        angle = m * (math.pi / 6)  # rotations up to 30 degrees
        rotate = drawn["rotate"]
        theta[:, 0, 0] = torch.where(rotate, angle.cos(), theta[:, 0, 0])
        theta[:, 0, 1] = torch.where(rotate, -angle.sin(), 0.3 * m * drawn["shear_x"])
        theta[:, 1, 0] = torch.where(rotate, angle.sin(), 0.3 * m * drawn["shear_y"])
        theta[:, 1, 1] = torch.where(rotate, angle.cos(), theta[:, 1, 1])
        theta[:, 0, 2] = 0.6 * m * drawn["translate_x"]  # up to 30 % of the side
        theta[:, 1, 2] = 0.6 * m * drawn["translate_y"]
        affine = torch.stack([drawn[name] for name in self._AFFINE]).any(0)
        out = torch.where(affine.view(-1, 1, 1, 1), _affine_resample(x, theta), x)
        for name in self._OPS:
            if name == "identity" or name in self._AFFINE:
                continue
            out = torch.where(drawn[name].view(-1, 1, 1, 1), self._apply(name, x, m), out)
        return out

    def __call__(self, x: Tensor) -> Tensor:
        if self.base is not None:
            x = self.base(x)
        n = x.shape[0]
        for _ in range(self.n_ops):
            choice = torch.randint(len(self._OPS), (n,), device=x.device)
            signed = _uniform(n, -self.magnitude, self.magnitude, x)
            if x.device.type == "cpu":  # no device to wait for: the cheaper row selection
                x = self._apply_selected(x, choice, signed)
            else:
                x = self._apply_chosen(x, choice, signed)
        if self.cutout > 0:
            x = _cutout(x, self.cutout)
        return x


def default_augmentations(sample: Tensor, weak: Augment | None = None) -> tuple[Augment, Augment]:
    """``(weak, strong)`` view makers for training data ``sample`` (raw scale).

    Vectors get SCARF's marginal corruption (:class:`MarginalCorruption`): 20 % of the entries
    replaced by draws from their feature's marginal, 40 % in the strong view. Zero masking and noise
    (:class:`VectorAugment`, the earlier default) leave the data's support and measured worse
    (digits as vectors, SeLa: 0.863 against 0.919, ``docs/benchmarks.md``). Colour images get
    SimCLR's crop (20-100 % of the area), flip, colour jitter and grayscale. Single-channel images
    get milder crops (40-100 %), rotations up to 15 degrees and no flip: gray images are mostly
    digits, characters and other shapes whose mirror image is another class, and whose parts alone
    say little.
    The strong view of images is the weak one followed by RandAugment-like operations and cutout.

    Parameters
    ----------
    sample : Tensor
        Training rows (all, or a random subset), for the feature spreads of the vector views.
    weak : callable or None
        A weak view to use instead of the default one; the strong view of images is then built
        on it (vectors keep the default strong view).
    """
    if sample.ndim == 2:
        pool = sample.float()
        default_weak, strong = MarginalCorruption(pool, 0.2), MarginalCorruption(pool, 0.4)
        return weak or default_weak, strong
    if weak is None:
        if sample.shape[1] == 1:
            weak = ImageAugment(crop_scale=(0.4, 1.0), flip_prob=0.0, rotation=15.0)
        else:
            weak = ImageAugment()
    return weak, StrongImageAugment(base=weak)


def column_spread(x: Tensor) -> Tensor:
    """Standard deviation of each column of ``x`` (ones for a single row)."""
    x = x.float()
    return x.std(0) if len(x) > 1 else torch.ones(x.shape[1], device=x.device)
