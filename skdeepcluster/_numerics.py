"""Small numerical helpers shared by mining and pairwise labelling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def unit_rows(features: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm, exactly as ``F.normalize`` but safe at any scale.

    Each row is first divided by its largest absolute value, so that squaring cannot overflow
    (rows of magnitude ~1e19 and above have squares beyond float32) nor underflow (rows below
    ~1e-19). Zero rows stay zero.
    """
    peak = features.abs().amax(dim=1, keepdim=True)
    scaled = features / torch.where(peak > 0, peak, torch.ones_like(peak))
    return F.normalize(scaled, dim=1)
