"""CPC's InfoNCE against a slow float64 loop of the paper's formula (Hénaff et al., 2020, eq. 2),
values and gradients; float32 under autocast; shapes it refuses."""

from __future__ import annotations

import pytest
import torch

from lightning_ssl.losses import cpc_loss


def _formula(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over every (k, b, i, j) with i + k < H of
    -log exp(p . z[b, i+k, j]) / sum over all patch vectors z_l of the batch of exp(p . z_l)."""
    steps, batch, height, width, _ = predictions.shape
    candidates = targets.reshape(-1, targets.shape[-1])  # every patch vector of the batch
    total, count = 0.0, 0
    for k in range(1, steps + 1):
        for b in range(batch):
            for i in range(height - k):
                for j in range(width):
                    p = predictions[k - 1, b, i, j]
                    positive = torch.exp(torch.dot(p, targets[b, i + k, j]))
                    denominator = sum(torch.exp(torch.dot(p, z)) for z in candidates)
                    total = total - torch.log(positive / denominator)
                    count += 1
    return total / count


@pytest.mark.parametrize(("steps", "batch", "height", "width"), [(2, 2, 4, 3), (3, 3, 4, 4)])
def test_equals_the_formula_values_and_gradients(steps, batch, height, width):
    g = torch.Generator().manual_seed(0)
    shape = (steps, batch, height, width, 6)
    predictions = torch.randn(shape, generator=g, dtype=torch.float64)
    targets = torch.randn(shape[1:], generator=g, dtype=torch.float64)
    p1, t1 = predictions.clone().requires_grad_(), targets.clone().requires_grad_()
    p2, t2 = predictions.clone().requires_grad_(), targets.clone().requires_grad_()
    loss, expected = cpc_loss(p1, t1), _formula(p2, t2)
    assert loss.dtype == torch.float64
    # float64 sums in another order: agreement to ~1e-15 relative, asked at 1e-12
    assert float(loss) == pytest.approx(float(expected), rel=1e-12)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(t1.grad, t2.grad, rtol=1e-10, atol=1e-12)
    # predictions with no row to predict (i + k >= H) get no gradient
    for k in range(1, steps + 1):
        assert torch.all(p1.grad[k - 1, :, height - k :] == 0)


def test_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(1)
    predictions = torch.randn(2, 2, 4, 4, 8, generator=g).bfloat16()
    targets = torch.randn(2, 4, 4, 8, generator=g).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = cpc_loss(predictions, targets)
    assert loss.dtype == torch.float32
    expected = cpc_loss(predictions.double(), targets.double())
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_refuses_shapes_that_do_not_fit():
    with pytest.raises(ValueError, match="do not fit"):
        cpc_loss(torch.randn(2, 2, 4, 4, 8), torch.randn(2, 4, 4, 7))
    with pytest.raises(ValueError, match="more than 4 rows"):
        cpc_loss(torch.randn(4, 2, 4, 4, 8), torch.randn(2, 4, 4, 8))
