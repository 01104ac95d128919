"""Sinkhorn-Knopp codes and the SwAV swapped-prediction loss."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssl.losses import sinkhorn_knopp, swav_loss


def _official_sinkhorn(out: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """facebookresearch/swav ``distributed_sinkhorn`` with world size 1."""
    q = torch.exp(out / epsilon).t()
    b, k = q.shape[1], q.shape[0]
    q /= torch.sum(q)
    for _ in range(iterations):
        q /= torch.sum(q, dim=1, keepdim=True)
        q /= k
        q /= torch.sum(q, dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def _scores(b: int, k: int, seed: int) -> torch.Tensor:
    """Cosine similarities of normalized features and prototypes, as in SwAV."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(b, 8, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, 8, generator=g), dim=1)
    return x @ c.T


@pytest.mark.parametrize(("epsilon", "iterations"), [(0.05, 3), (0.1, 1), (0.03, 10)])
def test_sinkhorn_matches_official(epsilon: float, iterations: int):
    scores = _scores(12, 5, seed=0)
    expected = _official_sinkhorn(scores.double(), epsilon, iterations)
    codes = sinkhorn_knopp(scores, epsilon, iterations)
    torch.testing.assert_close(codes, expected.float(), rtol=1e-5, atol=1e-6)


def test_sinkhorn_marginals():
    b, k = 24, 6
    scores = _scores(b, k, seed=1)
    codes = sinkhorn_knopp(scores)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(b))  # rows: assignments
    assert (codes >= 0).all()
    converged = sinkhorn_knopp(scores, iterations=300)
    torch.testing.assert_close(converged.sum(dim=1), torch.ones(b))
    # equipartition: every prototype receives B / K samples
    torch.testing.assert_close(converged.sum(dim=0), torch.full((k,), b / k), rtol=1e-3, atol=0)


def test_sinkhorn_no_grad_and_shift_invariant():
    scores = _scores(8, 4, seed=2).requires_grad_()
    codes = sinkhorn_knopp(scores)
    assert not codes.requires_grad
    # exp(8 / 0.05) overflows float32: the official code gives NaN, the shift by the max not
    assert torch.isnan(_official_sinkhorn(scores.detach() + 7.0, 0.05, 3)).all()
    torch.testing.assert_close(sinkhorn_knopp(scores + 7.0), codes)


def _swav_loop(scores: list[torch.Tensor], codes: list[torch.Tensor], t: float) -> float:
    """main_swav.py: for each code crop i, mean over crops v != i of the cross-entropy."""
    s = [x.tolist() for x in scores]
    q = [x.tolist() for x in codes]
    b, k = len(s[0]), len(s[0][0])
    loss = 0.0
    for i in range(len(q)):
        subloss = 0.0
        for v in range(len(s)):
            if v == i:
                continue
            ce = 0.0
            for n in range(b):
                lse = math.log(sum(math.exp(s[v][n][j] / t) for j in range(k)))
                ce -= sum(q[i][n][j] * (s[v][n][j] / t - lse) for j in range(k))
            subloss += ce / b
        loss += subloss / (len(s) - 1)
    return loss / len(q)


@pytest.mark.parametrize("t", [0.1, 0.05])
def test_swav_loss_matches_loop(t: float):
    # 2 global + 2 local crops, codes of the global crops
    scores = [_scores(6, 5, seed=10 + v) for v in range(4)]
    codes = [sinkhorn_knopp(s) for s in scores[:2]]
    loss = swav_loss(scores, codes, temperature=t)
    assert loss.item() == pytest.approx(_swav_loop(scores, codes, t), rel=1e-5)


def test_swav_codes_get_no_gradient():
    scores = [_scores(6, 5, seed=20 + v).requires_grad_() for v in range(4)]
    codes = [torch.softmax(s.detach() * 5, dim=1).requires_grad_() for s in scores[:2]]
    swav_loss(scores, codes).backward()
    assert all(c.grad is None for c in codes)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in scores)


def test_swav_loss_rejects_bad_crop_counts():
    s = _scores(4, 3, seed=0)
    with pytest.raises(ValueError):
        swav_loss([s], [s])
    with pytest.raises(ValueError):
        swav_loss([s, s], [s, s, s])
