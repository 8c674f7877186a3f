"""Data composition for LSD-C, eq. (6): MixUp, RICAP and composite targets.

Rebuffi, Ehrhardt, Han, Vedaldi and Zisserman, "LSD-C: Linearly Separable
Deep Clusters" (2020), eq. (6). A composite sample is built from
:math:`S` source samples of the batch; it is described by

* ``sources``: an int64 tensor of shape (M, S), ``sources[j, s]`` the index
  in the input batch of the :math:`s`-th source of composite :math:`j`;
* ``weights``: a float tensor of shape (M, S), non-negative, each row
  summing to one, ``weights[j, s]`` the share of that source in composite
  :math:`j` (mixing weight for MixUp, area fraction for RICAP).

:func:`composite_targets` turns a pairwise adjacency of the pure batch into
soft targets between pure samples and composites, for the pairwise loss
:func:`skdeepcluster.losses.lsdc_pairwise_bce`.

Randomness comes only from the optional ``generator`` argument (a
:class:`torch.Generator`), so results are reproducible with a seeded
generator; without one the global torch RNG is used.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import betaincinv
from torch import Tensor

from ._validation import check_number, checking_values

__all__ = ["blend", "composite_targets", "mixup", "ricap"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _check_batch(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(x).__name__}.")
    if x.ndim < 2:
        raise ValueError(
            f"{name} must be a batch of shape (B, d) or (B, C, H, W); got shape {tuple(x.shape)}."
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype; got {x.dtype}.")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one sample; got B=0.")


def _check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator or None; got {type(generator).__name__}."
        )


def _rng_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def _sample_symmetric_beta(
    n: int, concentration: float, generator: torch.Generator | None, device: torch.device
) -> np.ndarray:
    """``n`` draws of Beta(a, a), by inverse CDF of uniforms from ``generator`` (float64)."""
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64).cpu().numpy()
    return np.asarray(betaincinv(concentration, concentration, u), dtype=np.float64)


def _check_sources(sources: Tensor, weights: Tensor, n_items: int, item_name: str) -> None:
    if not isinstance(sources, Tensor) or not isinstance(weights, Tensor):
        raise ValueError("sources and weights must be torch.Tensors.")
    if sources.ndim != 2:
        raise ValueError(f"sources must have shape (M, S); got {tuple(sources.shape)}.")
    if sources.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"sources must hold integer indices; got dtype {sources.dtype}.")
    if weights.shape != sources.shape:
        raise ValueError(
            f"weights must have the shape of sources {tuple(sources.shape)}; "
            f"got {tuple(weights.shape)}."
        )
    if not weights.is_floating_point():
        raise ValueError(f"weights must have a floating dtype; got {weights.dtype}.")
    if sources.numel() == 0:
        raise ValueError(f"sources must be non-empty; got shape {tuple(sources.shape)}.")
    if not checking_values():
        return
    if bool(((sources < 0) | (sources >= n_items)).any()):
        raise ValueError(
            f"sources must be indices in [0, {n_items}) into the {item_name}; "
            f"got values in [{int(sources.min())}, {int(sources.max())}]."
        )
    if bool(((weights < 0) | torch.isnan(weights)).any()):
        raise ValueError("weights must be non-negative.")
    tol = 1e-3 if weights.dtype in (torch.float16, torch.bfloat16) else 1e-5 * sources.shape[1]
    if bool(((weights.sum(dim=1) - 1).abs() > tol).any()):
        raise ValueError("each row of weights must sum to 1.")


# ---------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------


def blend(x: Tensor, sources: Tensor, weights: Tensor) -> Tensor:
    r"""Weighted combination of batch samples, the linear composition of eq. (6).

    Computes, for each composite :math:`j`,

    .. math::

        \tilde{x}_j = \sum_{s=1}^{S} w_{js}\, x_{\text{sources}[j, s]},

    the MixUp-style composite of eq. (6) of Rebuffi et al., "LSD-C: Linearly
    Separable Deep Clusters" (2020) for arbitrary sources and weights.

    Parameters
    ----------
    x : Tensor of shape (B, ...)
        Input batch (vectors, images, ...).
    sources : Tensor of shape (M, S), integer
        Indices into ``x``.
    weights : Tensor of shape (M, S), floating
        Non-negative weights, each row summing to one.

    Returns
    -------
    Tensor of shape (M, ...)
        Composites, in the dtype and on the device of ``x``. With
        ``weights[:, 0] == 1`` and ``sources[:, 0] == arange(B)`` this is the
        identity.

    Raises
    ------
    ValueError
        For shape, dtype or range errors in the arguments.
    """
    _check_batch(x)
    _check_sources(sources, weights, x.shape[0], "batch x")
    sources = sources.to(device=x.device, dtype=torch.int64)
    w = weights.to(device=x.device, dtype=x.dtype)
    w = w.reshape(*w.shape, *([1] * (x.ndim - 1)))
    return (x[sources] * w).sum(dim=1)


def mixup(
    x: Tensor, alpha: float = 0.3, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Batched MixUp composition, eq. (6) of LSD-C.

    For each composite :math:`j` draw :math:`w_j \sim \mathrm{Beta}(\alpha,
    \alpha)` and, with one random permutation :math:`\pi` of the batch,

    .. math::

        \tilde{x}_j = w_j\, x_j + (1 - w_j)\, x_{\pi(j)},

    the MixUp composition used by Rebuffi et al., "LSD-C: Linearly Separable
    Deep Clusters" (2020), eq. (6) (after Zhang et al., 2018).

    Parameters
    ----------
    x : Tensor of shape (B, ...)
        Batch of vectors (B, d), images (B, C, H, W), or any (B, ...).
    alpha : float, default=0.3
        Beta concentration :math:`\alpha > 0`. Small values put :math:`w`
        near 0 or 1 (composites close to one source).
    generator : torch.Generator, optional
        Source of randomness (for the mixing weights, sampled by inverse CDF
        of its uniforms, and the permutation).

    Returns
    -------
    composites : Tensor of shape (B, ...)
        Mixed samples, dtype and device of ``x``.
    sources : Tensor of shape (B, 2), int64
        ``[j, pi(j)]`` for each composite :math:`j` (:math:`\pi(j)` may equal
        :math:`j`).
    weights : Tensor of shape (B, 2)
        ``[w_j, 1 - w_j]``, dtype and device of ``x``.

    Raises
    ------
    ValueError
        If ``x`` is not a floating batch with at least two dimensions or
        ``alpha`` is not positive.
    """
    _check_batch(x)
    a = check_number(alpha, "alpha (positive, of Beta(alpha, alpha))", 0.0, low_open=True)
    _check_generator(generator)
    b = x.shape[0]
    device = _rng_device(generator, x.device)
    w = torch.from_numpy(_sample_symmetric_beta(b, a, generator, device)).to(
        device=x.device, dtype=x.dtype
    )
    perm = torch.randperm(b, generator=generator, device=device).to(x.device)
    sources = torch.stack([torch.arange(b, device=x.device), perm], dim=1)
    weights = torch.stack([w, 1 - w], dim=1)
    return blend(x, sources, weights), sources, weights


def ricap(
    x: Tensor, beta: float = 0.3, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Batched RICAP composition of images, eq. (6) of LSD-C.

    Random Image Cropping And Patching (Takahashi et al., 2018), used as a
    composition in Rebuffi et al., "LSD-C: Linearly Separable Deep Clusters"
    (2020), eq. (6). A boundary point

    .. math::

        w = \operatorname{round}(W\, b_w), \quad h = \operatorname{round}(H\, b_h),
        \qquad b_w, b_h \sim \mathrm{Beta}(\beta, \beta),

    splits the output into four patches of sizes :math:`h \times w`,
    :math:`h \times (W-w)`, :math:`(H-h) \times w` and
    :math:`(H-h) \times (W-w)` (top-left, top-right, bottom-left,
    bottom-right). Patch :math:`\sigma` of composite :math:`j` is cropped
    at a random position from image :math:`\pi_\sigma(j)`, with an
    independent random permutation :math:`\pi_\sigma` per patch; its weight
    is its area fraction :math:`w_\sigma = \text{area}_\sigma / (HW)`.

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W)
        Batch of images.
    beta : float, default=0.3
        Beta concentration :math:`\beta > 0` of the boundary point.
    generator : torch.Generator, optional
        Source of randomness.

    Returns
    -------
    composites : Tensor of shape (B, C, H, W)
        Patched images, dtype and device of ``x``.
    sources : Tensor of shape (B, 4), int64
        ``sources[j, s] = pi_s(j)``, patches in the order top-left,
        top-right, bottom-left, bottom-right.
    weights : Tensor of shape (B, 4)
        Area fractions (summing to one per row; a patch of zero area has
        weight 0), dtype and device of ``x``.

    Raises
    ------
    ValueError
        If ``x`` is not a floating 4-D image batch (use :func:`mixup` for
        vectors) or ``beta`` is not positive.

    Notes
    -----
    One boundary point is drawn per batch, as in the original RICAP, so all
    composites of a call share the four patch sizes and weights. The crop
    positions are drawn independently for every composite and patch. The
    implementation is batched: it loops over the four patches only.
    """
    _check_batch(x)
    if x.ndim != 4:
        raise ValueError(
            f"ricap needs a batch of images of shape (B, C, H, W); got shape {tuple(x.shape)}. "
            "Use mixup for vectors."
        )
    bcon = check_number(beta, "beta (positive, of Beta(beta, beta))", 0.0, low_open=True)
    _check_generator(generator)
    b, c, height, width = x.shape
    device = _rng_device(generator, x.device)
    bw, bh = _sample_symmetric_beta(2, bcon, generator, device)
    w = int(np.rint(width * bw))
    h = int(np.rint(height * bh))
    # (height, width, top, left) of each patch in the output
    patches = [
        (h, w, 0, 0),
        (h, width - w, 0, w),
        (height - h, w, h, 0),
        (height - h, width - w, h, w),
    ]
    out = torch.empty_like(x)
    sources = torch.empty(b, 4, dtype=torch.int64, device=x.device)
    areas = []
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    for s, (ph, pw, top, left) in enumerate(patches):
        perm = torch.randperm(b, generator=generator, device=device).to(x.device)
        sources[:, s] = perm
        areas.append(ph * pw)
        if ph == 0 or pw == 0:
            continue
        y0 = torch.randint(0, height - ph + 1, (b,), generator=generator, device=device).to(
            x.device
        )
        x0 = torch.randint(0, width - pw + 1, (b,), generator=generator, device=device).to(x.device)
        rows = y0[:, None] + torch.arange(ph, device=x.device)  # (B, ph)
        cols = x0[:, None] + torch.arange(pw, device=x.device)  # (B, pw)
        out[:, :, top : top + ph, left : left + pw] = x[
            perm[:, None, None, None], chan, rows[:, None, :, None], cols[:, None, None, :]
        ]
    area = torch.tensor(areas, dtype=x.dtype, device=x.device) / (height * width)
    weights = area.expand(b, 4).clone()
    return out, sources, weights


def composite_targets(adjacency: Tensor, sources: Tensor, weights: Tensor) -> Tensor:
    r"""Soft pairwise targets between pure samples and composites, eq. (6) of LSD-C.

    For pure sample :math:`i` and composite :math:`j` built from sources
    :math:`\text{sources}[j, \sigma]` with weights :math:`w_{j\sigma}`,

    .. math::

        T_{ij} = \sum_{\sigma} w_{j\sigma}\, A_{i,\ \text{sources}[j, \sigma]},

    the weighted sum, over the parts of composite :math:`j`, of the label
    between :math:`i` and the pure sample that part came from (Rebuffi et
    al., "LSD-C: Linearly Separable Deep Clusters", 2020, eq. 6). This is
    neither :math:`A_{ij}` (the label of the composite's own index) nor its
    transpose: the pair is looked up by source index.

    Parameters
    ----------
    adjacency : Tensor of shape (N, B)
        Pairwise labels :math:`A` between the pure samples (rows) and the
        samples of the batch the composites were built from (columns);
        usually square (N = B), e.g. from
        :func:`skdeepcluster.pairwise_labels.pairwise_adjacency`. Boolean or
        floating.
    sources : Tensor of shape (M, S), integer
        Indices into the columns of ``adjacency``, as returned by
        :func:`mixup` or :func:`ricap`.
    weights : Tensor of shape (M, S), floating
        Non-negative, rows summing to one.

    Returns
    -------
    Tensor of shape (N, M)
        :math:`T`, rows indexing pure samples and columns composites, so it
        is the ``adjacency`` argument of
        ``lsdc_pairwise_bce(probs_pure, probs_composite, T)``. If
        :math:`A \in [0, 1]` then :math:`T \in [0, 1]`; a composite with a
        single source :math:`k` (weight 1) gets column :math:`A_{:, k}`.

    Raises
    ------
    ValueError
        For shape, dtype or range errors in the arguments.
    """
    if not isinstance(adjacency, Tensor) or adjacency.ndim != 2:
        shape = (
            tuple(adjacency.shape) if isinstance(adjacency, Tensor) else type(adjacency).__name__
        )
        raise ValueError(f"adjacency must be a 2-D tensor of shape (N, B); got {shape}.")
    if adjacency.is_complex():
        raise ValueError("adjacency must be real (boolean or floating).")
    _check_sources(sources, weights, adjacency.shape[1], "columns of adjacency")
    dtype = (
        torch.promote_types(weights.dtype, adjacency.dtype)
        if adjacency.is_floating_point()
        else weights.dtype
    )
    a = adjacency.to(dtype)
    idx = sources.to(device=a.device, dtype=torch.int64)
    w = weights.to(device=a.device, dtype=dtype)
    # a[:, idx][i, j, s] = A[i, sources[j, s]]
    # Clamped: weights that sum to one only up to rounding (RICAP's patch areas in float32) would
    # otherwise give 1 + 1e-7 where every source is similar, and no valid target is outside [0, 1].
    return (a[:, idx] * w[None]).sum(dim=-1).clamp_(0.0, 1.0)
