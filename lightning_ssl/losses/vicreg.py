"""VICReg loss (Bardes et al., 2022): variance, invariance, covariance."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.losses._precision import float32


class VICRegTerms(NamedTuple):
    """The weighted loss and its three unweighted terms (log them to monitor collapse)."""

    loss: Tensor
    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def _variance(z: Tensor, eps: float) -> Tensor:
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1 - std).mean()


def _covariance(z: Tensor) -> Tensor:
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    off = ~torch.eye(d, dtype=torch.bool, device=z.device)
    return cov[off].pow(2).sum() / d


@float32
def vicreg_terms(
    z_a: Tensor,
    z_b: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> VICRegTerms:
    """VICReg loss and its terms, as the official code (Bardes et al., 2022, eq. 1-6).

    With ``Z_a, Z_b`` the embeddings gathered from all processes (``N`` rows, with gradients)::

        invariance = mean_{b, d} (z_a[b, d] - z_b[b, d])^2
        variance   = sum_{Z in Z_a, Z_b} mean_d relu(1 - sqrt(Var_b Z[:, d] + eps)) / 2
        covariance = sum_{Z in Z_a, Z_b} sum_{i != j} Cov(Z)_ij^2 / D
        loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance

    ``Var`` and ``Cov`` are unbiased (``N - 1``). The invariance term is this process's mean
    (as the official code): the mean over processes of the returned losses is the loss of the
    global batch, which is what DDP's gradient averaging optimizes.

    Args:
        z_a: ``(B, D)`` expander outputs of the first view (this process's rows).
        z_b: ``(B, D)`` expander outputs of the second view.
        sim_coeff: weight ``lambda`` of the invariance term (paper: 25).
        std_coeff: weight ``mu`` of the variance term (paper: 25).
        cov_coeff: weight ``nu`` of the covariance term (paper: 1).
        eps: added to the variance before the square root.

    Returns:
        :class:`VICRegTerms` of scalars: ``loss`` and the unweighted
        ``invariance``, ``variance`` and ``covariance``.

    Examples:
        >>> terms = vicreg_terms(torch.randn(16, 8), torch.randn(16, 8))
        >>> sorted(terms._asdict())
        ['covariance', 'invariance', 'loss', 'variance']
    """
    invariance = F.mse_loss(z_a, z_b)
    z_a, z_b = distributed.gather(z_a), distributed.gather(z_b)
    variance = (_variance(z_a, eps) + _variance(z_b, eps)) / 2
    covariance = _covariance(z_a) + _covariance(z_b)
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return VICRegTerms(loss, invariance, variance, covariance)


@float32
def variance_covariance(z: Tensor, eps: float = 1e-4) -> tuple[Tensor, Tensor]:
    """VICReg's variance and covariance terms of one set of embeddings (eq. 1 and 4), without
    the invariance term: the regulariser C-JEPA (Mo & Tong, 2024) adds to I-JEPA.

    With ``Z`` the embeddings gathered from all processes (``N`` rows, with gradients)::

        variance   = mean_d relu(1 - sqrt(Var_b Z[:, d] + eps))
        covariance = sum_{i != j} Cov(Z)_ij^2 / D

    Args:
        z: ``(B, D)`` embeddings (this process's rows).
        eps: added to the variance before the square root.

    Returns:
        ``(variance, covariance)``, float32 scalars.

    Examples:
        >>> variance, covariance = variance_covariance(torch.zeros(8, 4))
        >>> round(float(variance), 2), float(covariance)  # collapsed: the largest penalty
        (0.99, 0.0)
    """
    z = distributed.gather(z)
    return _variance(z, eps), _covariance(z)


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    """Weighted VICReg loss: ``vicreg_terms(...).loss``; see :func:`vicreg_terms`.

    Args:
        z_a: ``(B, D)`` expander outputs of the first view.
        z_b: ``(B, D)`` expander outputs of the second view.
        sim_coeff: invariance weight.
        std_coeff: variance weight.
        cov_coeff: covariance weight.
        eps: added to the variance before the square root.

    Returns:
        Scalar loss (float32).

    Examples:
        >>> vicreg_loss(torch.randn(16, 8), torch.randn(16, 8)).shape
        torch.Size([])
    """
    return vicreg_terms(z_a, z_b, sim_coeff, std_coeff, cov_coeff, eps).loss
