"""VICReg against explicit loops of the paper's terms and the official code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_ssl.losses import VICRegTerms, variance_covariance, vicreg_loss, vicreg_terms


def _loop(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-4) -> tuple[float, float, float]:
    """(invariance, variance, covariance) of paper eq. 1-5 with the official scaling."""
    a, b = z_a.tolist(), z_b.tolist()
    n, d = len(a), len(a[0])
    invariance = sum((a[k][i] - b[k][i]) ** 2 for k in range(n) for i in range(d)) / (n * d)
    variance = covariance = 0.0
    for z in (a, b):
        mean = [sum(z[k][i] for k in range(n)) / n for i in range(d)]
        for i in range(d):
            var = sum((z[k][i] - mean[i]) ** 2 for k in range(n)) / (n - 1)
            variance += max(0.0, 1 - math.sqrt(var + eps)) / d / 2
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov = sum((z[k][i] - mean[i]) * (z[k][j] - mean[j]) for k in range(n))
                    covariance += (cov / (n - 1)) ** 2 / d
    return invariance, variance, covariance


def _official(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """facebookresearch/vicreg ``VICReg.forward`` after the expander (1 process, default args)."""
    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)

    def off_diagonal(m: torch.Tensor) -> torch.Tensor:
        k = m.shape[0]
        return m.flatten()[:-1].view(k - 1, k + 1)[:, 1:].flatten()

    cov_loss = off_diagonal(cov_x).pow_(2).sum().div(num_features) + off_diagonal(cov_y).pow_(
        2
    ).sum().div(num_features)
    return 25.0 * repr_loss + 25.0 * std_loss + 1.0 * cov_loss


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    # some features with std < 1 (hinge active), some > 1 (hinge inactive)
    scale = torch.linspace(0.2, 2.0, 6)
    return torch.randn(10, 6) * scale, torch.randn(10, 6) * scale + 0.3


def test_terms_match_loop():
    z_a, z_b = _inputs(0)
    terms = vicreg_terms(z_a, z_b)
    expected = _loop(z_a, z_b)
    assert terms.invariance.item() == pytest.approx(expected[0], rel=1e-5)
    assert terms.variance.item() == pytest.approx(expected[1], rel=1e-5)
    assert terms.covariance.item() == pytest.approx(expected[2], rel=1e-5)
    weighted = 25 * expected[0] + 25 * expected[1] + expected[2]
    assert terms.loss.item() == pytest.approx(weighted, rel=1e-5)


@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (1.0, 2.0, 3.0)])
def test_loss_is_weighted_sum_of_terms(coeffs: tuple[float, float, float]):
    z_a, z_b = _inputs(1)
    terms = vicreg_terms(z_a, z_b, *coeffs)
    assert isinstance(terms, VICRegTerms)
    loss = vicreg_loss(z_a, z_b, *coeffs)
    torch.testing.assert_close(loss, terms.loss)
    s, v, c = coeffs
    expected = s * terms.invariance + v * terms.variance + c * terms.covariance
    torch.testing.assert_close(loss, expected)


def test_loss_and_gradients_match_official_code():
    z = [t.double().requires_grad_() for t in _inputs(2)]
    ours = [t.detach().float().requires_grad_() for t in z]
    ref = _official(*z)
    ref.backward()
    loss = vicreg_loss(*ours)
    loss.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    for mine, r in zip(ours, z, strict=True):
        torch.testing.assert_close(mine.grad, r.grad.float(), rtol=1e-5, atol=1e-6)


def test_terms_limits():
    torch.manual_seed(3)
    z = torch.randn(64, 4) * 10
    terms = vicreg_terms(z, z)
    assert terms.invariance.item() == 0.0
    assert terms.variance.item() == 0.0  # every std well above 1
    # collapse: constant embeddings have std sqrt(eps) and zero covariance
    collapsed = vicreg_terms(torch.ones(8, 4), torch.ones(8, 4))
    assert collapsed.variance.item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)
    assert collapsed.covariance.item() == 0.0


def test_variance_covariance_of_one_view_matches_loop():
    """C-JEPA's regulariser: the paper's variance and covariance terms of a single view (the
    loop of two identical views counts each term twice)."""
    z, _ = _inputs(3)
    _, variance, covariance = _loop(z, z)
    got = variance_covariance(z)
    assert got[0].item() == pytest.approx(variance, rel=1e-5)
    assert got[1].item() == pytest.approx(covariance / 2, rel=1e-5)


def test_variance_covariance_penalises_a_collapsed_batch_most():
    spread, collapsed = torch.randn(64, 8) * 2, torch.ones(64, 8)
    assert variance_covariance(spread)[0].item() == 0.0  # every std above 1: hinge off
    assert variance_covariance(collapsed)[0].item() == pytest.approx(1 - 1e-2, rel=1e-6)
