"""InstDisc's losses against slow loops of the paper's formulas (Wu et al. 2018, eqs. 2-6) and
the official code's NCECriterion, values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_ssl.losses import instance_softmax_loss, nce_loss


def _softmax_eq2(v: torch.Tensor, bank: torch.Tensor, indices: list[int], tau: float):
    """-1/B sum_b log P(i_b | v_b), P(i|v) = exp(v_i . v / tau) / sum_j exp(v_j . v / tau)."""
    total = 0.0
    for b, i in enumerate(indices):
        scores = [torch.dot(bank[j], v[b]) / tau for j in range(len(bank))]
        denominator = sum(torch.exp(s) for s in scores)
        total = total - torch.log(torch.exp(scores[i]) / denominator)
    return total / len(indices)


def _nce_eq6(v, candidates, tau: float, z: float, n: int):
    """-1/B sum_b [log h(i, v) + sum_noise log(1 - h(j, v))], h = P / (P + m P_n), P_n = 1/N."""
    m = candidates.shape[1] - 1
    total = 0.0
    for b in range(len(v)):
        p = [torch.exp(torch.dot(candidates[b, k], v[b]) / tau) / z for k in range(m + 1)]
        h = [p_k / (p_k + m / n) for p_k in p]
        total = total - (torch.log(h[0]) + sum(torch.log(1 - h_k) for h_k in h[1:]))
    return total / len(v)


def _official_nce_criterion(out: torch.Tensor, n: int, eps: float = 1e-7) -> torch.Tensor:
    """lemniscate.pytorch lib/NCECriterion.py on NCEAverage's output (exp(s / tau) / Z)."""
    k = out.shape[1] - 1
    pn = 1 / n
    ln_pmt = (out[:, 0] / (out[:, 0] + k * pn + eps)).log()
    ln_pon = ((k * pn) / (out[:, 1:] + k * pn + eps)).log()
    return -(ln_pmt.sum() + ln_pon.sum()) / out.shape[0]


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_full_softmax_equals_eq2_values_and_gradients(tau):
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(12, 8, generator=g, dtype=torch.float64), dim=1)
    v = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    indices = [3, 0, 11, 3, 7]
    a, b = v.clone().requires_grad_(), v.clone().requires_grad_()
    loss = instance_softmax_loss(a, bank, torch.tensor(indices), tau)
    expected = _softmax_eq2(b, bank, indices, tau)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    expected.backward()
    assert torch.allclose(a.grad.double(), b.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("tau", "m", "n"), [(0.07, 16, 1000), (0.1, 5, 50)])
def test_nce_equals_eq6_and_the_official_criterion(tau, m, n):
    g = torch.Generator().manual_seed(1)
    v = F.normalize(torch.randn(4, 8, generator=g, dtype=torch.float64), dim=1)
    candidates = F.normalize(torch.randn(4, 1 + m, 8, generator=g, dtype=torch.float64), dim=2)
    candidates[:, 0] = F.normalize(v + 0.3 * candidates[:, 0], dim=1)  # a likely data sample
    z = float(torch.exp(torch.einsum("bkd,bd->bk", candidates, v) / tau).mean() * n)
    a, b = v.clone().requires_grad_(), v.clone().requires_grad_()
    loss = nce_loss(a, candidates, tau, math.log(z), n)
    expected = _nce_eq6(b, candidates, tau, z, n)
    # float32 inside: 1e-5 relative is what the single-precision softplus sums can promise
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    expected.backward()
    assert torch.allclose(a.grad.double(), b.grad, rtol=1e-4, atol=1e-6)
    # The official criterion is the same formula plus eps = 1e-7 in its denominators, which
    # moves each of the 1 + m log terms by at most eps / (m P_n).
    out = torch.exp(torch.einsum("bkd,bd->bk", candidates, v) / tau) / z
    assert float(loss) == pytest.approx(float(_official_nce_criterion(out, n, 0.0)), rel=1e-5)
    eps_bound = (1 + m) * 1e-7 * n / m
    assert abs(float(loss) - float(_official_nce_criterion(out, n))) <= eps_bound + 1e-5


def test_nce_is_stable_where_the_probabilities_overflow():
    v = F.normalize(torch.ones(2, 4), dim=1)
    candidates = v[:, None].expand(2, 3, 4).clone()
    loss = nce_loss(v, candidates, 0.001, log_normalizer=0.0, num_samples=10)  # exp(1000)
    assert torch.isfinite(loss)
    assert float(loss) == pytest.approx(2 * (1000 - math.log(2 / 10)), rel=1e-4)


def test_gradients_reach_the_features_only():
    bank = F.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    v = F.normalize(torch.randn(2, 4), dim=1).requires_grad_()
    instance_softmax_loss(v, bank, torch.tensor([1, 2]), 0.1).backward()
    nce_loss(v, bank[None, :3].expand(2, 3, 4), 0.1, 0.0, 6).backward()
    assert bank.grad is None and v.grad is not None
