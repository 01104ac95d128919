"""Negative cosine similarity (BYOL / SimSiam)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssl.losses import negative_cosine_similarity


def _loop(p: torch.Tensor, z: torch.Tensor) -> float:
    total = 0.0
    for row_p, row_z in zip(p.tolist(), z.tolist(), strict=True):
        dot = sum(a * b for a, b in zip(row_p, row_z, strict=True))
        norm_p = math.sqrt(sum(a * a for a in row_p))
        norm_z = math.sqrt(sum(b * b for b in row_z))
        total -= dot / (norm_p * norm_z)
    return total / len(p)


def test_matches_loop():
    torch.manual_seed(0)
    p, z = torch.randn(9, 6), torch.randn(9, 6)
    assert negative_cosine_similarity(p, z).item() == pytest.approx(_loop(p, z), rel=1e-5)


def test_extremes_and_byol_form():
    torch.manual_seed(1)
    p = torch.randn(5, 4)
    assert negative_cosine_similarity(p, 3 * p).item() == pytest.approx(-1.0, abs=1e-6)
    assert negative_cosine_similarity(p, -p).item() == pytest.approx(1.0, abs=1e-6)
    # BYOL eq. 2: ||p/|p| - z/|z|||^2 = 2 - 2 cos = 2 + 2 * negative_cosine_similarity
    z = torch.randn(5, 4)
    byol = torch.nn.functional.normalize(p, dim=1) - torch.nn.functional.normalize(z, dim=1)
    byol = byol.pow(2).sum(dim=1).mean()
    assert byol.item() == pytest.approx(2 + 2 * negative_cosine_similarity(p, z).item(), rel=1e-5)


def test_target_gets_no_gradient():
    torch.manual_seed(2)
    p = torch.randn(6, 4, requires_grad=True)
    z = torch.randn(6, 4, requires_grad=True)
    negative_cosine_similarity(p, z).backward()
    assert z.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0
    # gradient of -mean cos w.r.t. p with z constant
    pn, zn = p.detach().norm(dim=1, keepdim=True), z.detach().norm(dim=1, keepdim=True)
    cos = (p.detach() * z.detach()).sum(dim=1, keepdim=True) / (pn * zn)
    expected = -(z.detach() / (pn * zn) - cos * p.detach() / pn**2) / p.shape[0]
    torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-6)
