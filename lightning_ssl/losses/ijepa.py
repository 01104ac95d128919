"""I-JEPA's loss in representation space (Assran et al. 2023, Eq. 1; official ``train.py``).

Examples:
    >>> target = torch.randn(2, 4, 9, 8)
    >>> float(ijepa_loss(torch.nn.functional.layer_norm(target, (8,)), target))
    0.0
"""

from __future__ import annotations

from typing import Literal

import torch  # noqa: F401 (the docstring's example)
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl.losses._precision import float32

#: ``smooth_l1``: what the official code computes; ``mse``: the paper's squared L2 distance.
IJEPALossName = Literal["smooth_l1", "mse"]


@float32
def ijepa_loss(pred: Tensor, target: Tensor, kind: IJEPALossName = "smooth_l1") -> Tensor:
    """Distance between predicted and target patch representations, mean over every element.

    The targets are the target encoder's tokens layer-normalised over the feature dimension
    without affine parameters (official ``F.layer_norm(h, (h.size(-1),))``). ``smooth_l1`` is
    the official code's ``F.smooth_l1_loss(z, h)`` (beta 1: ``0.5 d^2`` where ``|d| < 1``, else
    ``|d| - 0.5``, averaged over elements); ``mse`` is the paper's Eq. 1, the squared L2 distance
    per patch averaged over the target patches, here also divided by the width ``D`` (the
    element mean). Every sample has equally many target patches (one block size per batch),
    so the mean over the local batch averaged by DDP is the global batch's loss.

    Args:
        pred: ``(..., D)`` the predictor's outputs at the target patches.
        target: ``(..., D)`` the target encoder's tokens at the same patches, not normalised.
        kind: ``smooth_l1`` (official code) or ``mse`` (paper).
    """
    target = F.layer_norm(target, (target.shape[-1],))
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    raise ValueError(f"I-JEPA loss must be 'smooth_l1' or 'mse', got {kind!r}")

