"""NT-Xent and InfoNCE against explicit loops of the paper formulas, plus limit cases."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssl.losses import info_nce_loss, nt_xent_loss

TEMPERATURES = [1.0, 0.5, 0.1, 0.05]


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v / (u.norm() * v.norm()))


def _simclr_eq1(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """SimCLR eq. 1 on the 2N augmented samples (views of image k at positions 2k and 2k+1)."""
    n = z1.shape[0]
    z = [row for pair in zip(z1.double(), z2.double(), strict=True) for row in pair]

    def ell(i: int, j: int) -> float:
        num = math.exp(_cos(z[i], z[j]) / t)
        den = sum(math.exp(_cos(z[i], z[k]) / t) for k in range(2 * n) if k != i)
        return -math.log(num / den)

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


def _multiview_loop(views: list[torch.Tensor], t: float) -> float:
    """Mean over (anchor (v, i), positive (w, i), w != v) of -log softmax over all other samples."""
    num_views, n = len(views), views[0].shape[0]
    z = [v.double() for v in views]
    terms = []
    for v in range(num_views):
        for i in range(n):
            den = sum(
                math.exp(_cos(z[v][i], z[u][k]) / t)
                for u in range(num_views)
                for k in range(n)
                if (u, k) != (v, i)
            )
            for w in range(num_views):
                if w != v:
                    terms.append(-math.log(math.exp(_cos(z[v][i], z[w][i]) / t) / den))
    return sum(terms) / len(terms)


def _info_nce_loop(q: torch.Tensor, k: torch.Tensor, t: float, negatives=None) -> float:
    q, k = q.double(), k.double()
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(_cos(q[i], k[i]) / t)
        if negatives is None:
            den = sum(math.exp(_cos(q[i], k[j]) / t) for j in range(k.shape[0]))
        else:
            den = pos + sum(math.exp(_cos(q[i], n) / t) for n in negatives.double())
        total += -math.log(pos / den)
    return total / q.shape[0]


@pytest.mark.parametrize("t", TEMPERATURES)
def test_nt_xent_two_views_matches_simclr_eq1(t: float):
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    assert nt_xent_loss([z1, z2], temperature=t).item() == pytest.approx(
        _simclr_eq1(z1, z2, t), rel=1e-5
    )


@pytest.mark.parametrize("num_views", [3, 4])
@pytest.mark.parametrize("t", [0.5, 0.1])
def test_nt_xent_multiview_matches_loop(num_views: int, t: float):
    torch.manual_seed(1)
    views = [torch.randn(5, 4) for _ in range(num_views)]
    assert nt_xent_loss(views, temperature=t).item() == pytest.approx(
        _multiview_loop(views, t), rel=1e-5
    )


@pytest.mark.parametrize("t", [1.0, 0.5, 0.1, 0.05, 0.02])
def test_nt_xent_identical_views_orthogonal_images_vanishes_as_t_to_0(t: float):
    n = 5
    scale = torch.arange(1.0, n + 1)[:, None]  # norms differ: the loss normalizes
    z = torch.eye(n, 8) * scale
    loss = nt_xent_loss([z, 2 * z], temperature=t).item()
    # anchor: exp(1/T) / (exp(1/T) + (2N - 2) exp(0)); float32 logits of size 1/T
    expected = math.log1p((2 * n - 2) * math.exp(-1 / t))
    assert loss == pytest.approx(expected, rel=1e-5, abs=1e-6)
    if t <= 0.02:
        assert loss < 1e-18


@pytest.mark.parametrize("num_views", [2, 3])
def test_nt_xent_uniform_similarity_is_log_of_negatives(num_views: int):
    n = 6
    z = torch.ones(n, 4)
    for t in TEMPERATURES:
        loss = nt_xent_loss([z] * num_views, temperature=t).item()
        assert loss == pytest.approx(math.log(num_views * n - 1), rel=1e-6)


def test_nt_xent_needs_two_views():
    with pytest.raises(ValueError):
        nt_xent_loss([torch.randn(4, 3)])


@pytest.mark.parametrize("t", TEMPERATURES)
def test_info_nce_in_batch_matches_loop(t: float):
    torch.manual_seed(2)
    q, k = torch.randn(7, 5), torch.randn(7, 5)
    assert info_nce_loss(q, k, t).item() == pytest.approx(_info_nce_loop(q, k, t), rel=1e-5)


@pytest.mark.parametrize("t", TEMPERATURES)
def test_info_nce_queue_matches_loop(t: float):
    torch.manual_seed(3)
    q, k, queue = torch.randn(7, 5), torch.randn(7, 5), torch.randn(11, 5)
    loss = info_nce_loss(q, k, t, negatives=queue).item()
    assert loss == pytest.approx(_info_nce_loop(q, k, t, queue), rel=1e-5)


@pytest.mark.parametrize("t", [1.0, 0.1, 0.02])
def test_info_nce_limits(t: float):
    b, num_neg = 4, 9
    q = torch.eye(b, 16) * 3
    assert info_nce_loss(q, q, t).item() == pytest.approx(
        math.log1p((b - 1) * math.exp(-1 / t)), rel=1e-5, abs=1e-6
    )
    # queue orthogonal to every query
    queue = torch.eye(16)[b : b + num_neg]
    assert info_nce_loss(q, q, t, negatives=queue).item() == pytest.approx(
        math.log1p(num_neg * math.exp(-1 / t)), rel=1e-5, abs=1e-6
    )
    ones = torch.ones(b, 16)
    assert info_nce_loss(ones, ones, t).item() == pytest.approx(math.log(b), rel=1e-6)
    assert info_nce_loss(ones, ones, t, negatives=torch.ones(num_neg, 16)).item() == (
        pytest.approx(math.log(1 + num_neg), rel=1e-6)
    )
