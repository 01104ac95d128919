"""MAE's reconstruction loss (He et al. 2022, ``models_mae.forward_loss``).

Examples:
    >>> target = torch.randn(2, 4, 12)
    >>> mask = torch.tensor([[True, False, True, False]] * 2)
    >>> float(mae_loss(target, target, mask, norm_pix_loss=False))
    0.0
"""

from __future__ import annotations

import torch  # noqa: F401 (the docstring's example)
from torch import Tensor

from lightning_ssl.losses._precision import float32


def normalized_patches(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Each patch minus its mean, over ``sqrt(var + eps)`` (unbiased variance, as the official
    ``target.var(dim=-1)``): MAE's ``norm_pix_loss`` target."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


@float32
def mae_loss(pred: Tensor, patches: Tensor, mask: Tensor, norm_pix_loss: bool = True) -> Tensor:
    """Mean squared error per pixel of the masked patches, averaged over masked patches.

    ``L = sum_{b,i} m_bi * mean_j (pred_bij - t_bij)^2 / sum_{b,i} m_bi`` with ``t`` the patches'
    pixels, normalised per patch when ``norm_pix_loss``. The loss is a mean over the local
    batch's masked patches: with equal mask counts per sample (MAE's random masking), the mean
    of the processes' losses that DDP's gradient averaging gives is the global batch's loss.

    Args:
        pred: ``(B, N, P)`` predicted pixels per patch.
        patches: ``(B, N, P)`` the image's patches (:func:`lightning_ssl.nn.mae.patchify`).
        mask: ``(B, N)``, ``True`` (or 1) where a patch was masked; only those count.
        norm_pix_loss: predict per-patch normalised pixels (the paper's better representation).
    """
    target = normalized_patches(patches) if norm_pix_loss else patches
    per_patch = (pred - target).pow(2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum()
