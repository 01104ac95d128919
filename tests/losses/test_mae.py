"""MAE's loss against a slow loop of the formula (models_mae.forward_loss)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssl.losses import mae_loss


def _loop(pred: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, norm: bool) -> float:
    total = count = 0.0
    for b in range(pred.shape[0]):
        for i in range(pred.shape[1]):
            if not mask[b, i]:
                continue
            t = patches[b, i].tolist()
            if norm:
                mean = sum(t) / len(t)
                var = sum((v - mean) ** 2 for v in t) / (len(t) - 1)  # torch.var: unbiased
                t = [(v - mean) / math.sqrt(var + 1e-6) for v in t]
            p = pred[b, i].tolist()
            total += sum((p[j] - t[j]) ** 2 for j in range(len(t))) / len(t)
            count += 1
    return total / count


@pytest.mark.parametrize("norm", [True, False])
def test_mae_loss_matches_the_formula(norm):
    g = torch.Generator().manual_seed(0)
    pred, patches = torch.randn(3, 8, 12, generator=g), 2 + 3 * torch.randn(3, 8, 12, generator=g)
    mask = torch.rand(3, 8, generator=g) < 0.6
    got = mae_loss(pred, patches, mask, norm_pix_loss=norm)
    assert got.item() == pytest.approx(_loop(pred, patches, mask, norm), rel=1e-5)


def test_unmasked_patches_get_no_gradient_and_bf16_inputs_give_float32():
    pred = torch.randn(2, 4, 6, requires_grad=True)
    mask = torch.tensor([[True, False, False, True], [False, True, False, False]])
    mae_loss(pred, torch.randn(2, 4, 6), mask).backward()
    assert (pred.grad[~mask] == 0).all() and (pred.grad[mask] != 0).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mae_loss(pred.bfloat16(), torch.randn(2, 4, 6).bfloat16(), mask)
    assert out.dtype == torch.float32 and torch.isfinite(out)
