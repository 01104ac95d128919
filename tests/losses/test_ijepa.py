"""I-JEPA's loss against a slow loop of the formula: layer-normalised target tokens (official
``F.layer_norm(h, (D,))``, eps 1e-5, biased variance), then the official smooth-L1 (beta 1) or
the paper's squared L2 distance, averaged over every element."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssl.losses import ijepa_loss


def _layer_norm(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(var + 1e-5) for v in values]


def _loop(pred: torch.Tensor, target: torch.Tensor, kind: str) -> float:
    total, count = 0.0, 0
    width = pred.shape[-1]
    for p_row, t_row in zip(pred.reshape(-1, width), target.reshape(-1, width), strict=True):
        for p, t in zip(p_row.tolist(), _layer_norm(t_row.tolist()), strict=True):
            d = abs(p - t)
            if kind == "mse":
                total += d * d
            else:
                total += 0.5 * d * d if d < 1.0 else d - 0.5
            count += 1
    return total / count


@pytest.mark.parametrize("kind", ["smooth_l1", "mse"])
def test_ijepa_loss_matches_the_formula_in_float64(kind):
    g = torch.Generator().manual_seed(0)
    # predictions spread enough that both branches of smooth-L1 (|d| < 1 and >= 1) occur
    pred = 1.5 * torch.randn(2, 4, 5, 16, generator=g, dtype=torch.float64)
    target = 3 + 2 * torch.randn(2, 4, 5, 16, generator=g, dtype=torch.float64)
    got = ijepa_loss(pred, target, kind)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(_loop(pred, target, kind), rel=1e-12)


def test_targets_are_scale_and_shift_free_and_bf16_gives_float32():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 3, 4, 8, generator=g), torch.randn(2, 3, 4, 8, generator=g)
    # layer norm per token: an affine change of each target token leaves the loss unchanged
    assert ijepa_loss(pred, 5 * target + 2).item() == pytest.approx(
        ijepa_loss(pred, target).item(), rel=1e-5
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ijepa_loss(pred.bfloat16(), target.bfloat16())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_unknown_loss_is_named():
    with pytest.raises(ValueError, match="smooth_l1' or 'mse"):
        ijepa_loss(torch.zeros(1, 4), torch.ones(1, 4), "l1")  # type: ignore[arg-type]
