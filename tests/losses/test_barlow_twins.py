"""Barlow Twins loss against the paper formula (explicit loops) and the official code."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssl.losses import barlow_twins_loss


def _loop(z_a: torch.Tensor, z_b: torch.Tensor, lam: float, eps: float = 1e-5) -> float:
    """Paper eq. 1-2 with BatchNorm1d(affine=False) statistics (biased variance)."""
    n, d = z_a.shape

    def normalize(z: list[list[float]]) -> list[list[float]]:
        out = [[0.0] * d for _ in range(n)]
        for i in range(d):
            mean = sum(z[b][i] for b in range(n)) / n
            var = sum((z[b][i] - mean) ** 2 for b in range(n)) / n
            for b in range(n):
                out[b][i] = (z[b][i] - mean) / math.sqrt(var + eps)
        return out

    a, b_ = normalize(z_a.tolist()), normalize(z_b.tolist())
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[b][i] * b_[b][j] for b in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lam * c**2
    return loss


def _official(z1: torch.Tensor, z2: torch.Tensor, lam: float) -> torch.Tensor:
    """facebookresearch/barlowtwins ``BarlowTwins.forward`` after the projector (1 process)."""
    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False).to(z1.dtype)
    c = bn(z1).T @ bn(z2)
    c.div_(z1.shape[0])
    n = c.shape[0]
    off_diagonal = c.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()
    return torch.diagonal(c).add_(-1).pow_(2).sum() + lam * off_diagonal.pow_(2).sum()


@pytest.mark.parametrize("lam", [0.0051, 0.5])
def test_matches_loop(lam: float):
    torch.manual_seed(0)
    z_a, z_b = torch.randn(10, 6) * 2 + 1, torch.randn(10, 6)
    loss = barlow_twins_loss(z_a, z_b, lambda_offdiag=lam).item()
    assert loss == pytest.approx(_loop(z_a, z_b, lam), rel=1e-5)


def test_gradients_match_official_code():
    torch.manual_seed(1)
    z = [torch.randn(12, 5, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    ours = [t.detach().float().requires_grad_() for t in z]
    _official(*z, 0.0051).backward()
    barlow_twins_loss(*ours).backward()
    for mine, ref in zip(ours, z, strict=True):
        torch.testing.assert_close(mine.grad, ref.grad.float(), rtol=1e-5, atol=1e-6)


def test_perfect_correlation_has_zero_on_diagonal_term():
    torch.manual_seed(2)
    z = torch.randn(16, 8)
    # any per-feature affine map keeps the correlation 1
    z_b = 3 * z + torch.arange(8.0)
    assert barlow_twins_loss(z, z_b, lambda_offdiag=0.0).item() < 1e-6
    assert barlow_twins_loss(z, z_b).item() > 1e-3  # features of a random z are correlated


def test_whitened_identical_embeddings_give_zero_loss():
    torch.manual_seed(3)
    n, d = 32, 6
    x = torch.randn(n, d, dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(dim=0))  # orthonormal, zero-mean columns
    z = (q * math.sqrt(n)).float()  # unit (biased) variance, uncorrelated
    assert barlow_twins_loss(z, z).item() < 1e-6
