"""Barlow Twins loss (Zbontar et al., 2021) over the global batch."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.losses._precision import float32


def _batch_norm(z: Tensor, total: int, eps: float) -> Tensor:
    """``BatchNorm1d(affine=False)`` over the global batch: biased variance, differentiable."""
    mean = distributed.all_reduce_sum(z.sum(dim=0)) / total
    var = distributed.all_reduce_sum(((z - mean) ** 2).sum(dim=0)) / total
    return (z - mean) / torch.sqrt(var + eps)


@float32
def barlow_twins_loss(
    z_a: Tensor, z_b: Tensor, lambda_offdiag: float = 0.0051, eps: float = 1e-5
) -> Tensor:
    """Redundancy-reduction loss of Barlow Twins (Zbontar et al., 2021, eq. 1-2).

    Each embedding is batch-normalized over the global batch of ``N`` samples (all processes),
    as the official code's ``SyncBatchNorm(affine=False)``, then::

        C_ij = sum_b z_a[b, i] z_b[b, j] / N
        L = sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2

    ``C`` is summed over processes differentiably, so every process computes the same global
    loss and DDP's gradient averaging reproduces the single-process gradient on ``N`` samples.

    Args:
        z_a: ``(B, D)`` projections of the first view (this process's rows).
        z_b: ``(B, D)`` projections of the second view.
        lambda_offdiag: weight ``lambda`` of the redundancy-reduction term (paper: 0.0051).
        eps: batch-norm epsilon (``nn.BatchNorm1d`` default).

    Returns:
        Scalar loss of the global batch (identical on every process).

    Examples:
        >>> z = torch.randn(32, 8)
        >>> bool(barlow_twins_loss(z, z, lambda_offdiag=0.0) < 1e-6)  # perfectly correlated
        True
    """
    total = z_a.shape[0] * distributed.world_size()
    z_a, z_b = _batch_norm(z_a, total, eps), _batch_norm(z_b, total, eps)
    c = distributed.all_reduce_sum(z_a.T @ z_b) / total  # (D, D)
    off = ~torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
    on_diag = (1 - torch.diagonal(c)).pow(2).sum()
    off_diag = c[off].pow(2).sum()
    return on_diag + lambda_offdiag * off_diag
