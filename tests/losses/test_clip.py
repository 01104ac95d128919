"""CLIP's loss: the paper's formula (a slow loop), open_clip's ClipLoss, the tiled variant and
two processes equal to one (loss and gradients, the logit scale's included)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_ssl.losses import clip_loss, tiled_clip_loss
from tests.ddp_utils import run_distributed

WORLD, BATCH, DIM = 2, 5, 8


def _pairs(n: int, dim: int = DIM, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    texts = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    return images, texts


def _slow_clip_loss(images: torch.Tensor, texts: torch.Tensor, scale: float) -> float:
    """Paper figure 3, one pair at a time: -log softmax of the matching pair, both directions."""
    n = images.shape[0]
    total = 0.0
    for i in range(n):
        row = [scale * float(images[i] @ texts[j]) for j in range(n)]
        col = [scale * float(texts[i] @ images[j]) for j in range(n)]
        total += -row[i] + math.log(sum(math.exp(v) for v in row))
        total += -col[i] + math.log(sum(math.exp(v) for v in col))
    return total / (2 * n)


@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_clip_loss_equals_the_formula_and_open_clip(scale):
    images, texts = _pairs(7, seed=int(scale))
    loss = clip_loss(images.double(), texts.double(), scale)
    assert loss.dtype == torch.float64  # the float32 floor raises low precision, keeps float64
    assert loss.item() == pytest.approx(_slow_clip_loss(images.double(), texts.double(), scale),
                                        rel=1e-5)
    open_clip_loss = pytest.importorskip("open_clip.loss")
    expected = open_clip_loss.ClipLoss()(images, texts, torch.tensor(scale))
    torch.testing.assert_close(loss.float(), expected, rtol=1e-5, atol=1e-6)


def test_clip_loss_is_float32_under_autocast_and_refuses_unpaired_batches():
    images, texts = _pairs(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = clip_loss(images.bfloat16(), texts.bfloat16(), torch.tensor(100.0))
    assert loss.dtype == torch.float32
    with pytest.raises(ValueError, match="one caption per image"):
        clip_loss(images, texts[:3], 10.0)


def _loss_and_grads(fn, images, texts, log_scale):
    leaves = [t.clone().requires_grad_() for t in (images, texts, log_scale)]
    loss = fn(leaves[0], leaves[1], leaves[2].exp())
    return loss.detach(), torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize(("n", "tile"), [(8, 3), (7, 7), (9, 1), (6, 64)])
def test_tiled_clip_loss_matches_plain_loss_and_gradients(n, tile):
    images, texts = _pairs(n, dim=16, seed=n)
    log_scale = torch.tensor(math.log(1 / 0.07))
    loss_p, grads_p = _loss_and_grads(clip_loss, images, texts, log_scale)
    tiled = lambda i, t, s: tiled_clip_loss(i, t, s, tile_size=tile)  # noqa: E731
    loss_t, grads_t = _loss_and_grads(tiled, images, texts, log_scale)
    torch.testing.assert_close(loss_t, loss_p, rtol=1e-5, atol=1e-6)
    for grad_t, grad_p in zip(grads_t, grads_p, strict=True):  # images, texts, log-scale
        torch.testing.assert_close(grad_t, grad_p, rtol=1e-5, atol=1e-6)


def _ddp_worker(rank: int, world_size: int) -> dict:
    images, texts = _pairs(world_size * BATCH)
    rows = slice(rank * BATCH, (rank + 1) * BATCH)
    log_scale = torch.tensor(math.log(20.0))
    losses = {"plain": clip_loss, "tiled": lambda i, t, s: tiled_clip_loss(i, t, s, 2)}
    return {
        name: _loss_and_grads(fn, images[rows], texts[rows], log_scale)
        for name, fn in losses.items()
    }


def test_two_processes_equal_one_process_with_the_global_batch():
    """DDP averages gradients over ranks: rank losses' mean and ``grad / W`` must equal the
    single-process loss and gradient on all ``W * B`` pairs (rows), and the shared log-scale's
    averaged gradient must equal the single-process one."""
    images, texts = _pairs(WORLD * BATCH)
    log_scale = torch.tensor(math.log(20.0))
    loss_1, (grad_i, grad_t, grad_s) = _loss_and_grads(clip_loss, images, texts, log_scale)
    results = run_distributed(_ddp_worker, WORLD)
    for name in ("plain", "tiled"):
        losses = torch.stack([r[name][0] for r in results])
        torch.testing.assert_close(losses.mean(), loss_1, rtol=1e-5, atol=1e-6)
        rank_grads = [r[name][1] for r in results]
        torch.testing.assert_close(torch.cat([g[0] for g in rank_grads]) / WORLD, grad_i)
        torch.testing.assert_close(torch.cat([g[1] for g in rank_grads]) / WORLD, grad_t)
        mean_scale_grad = torch.stack([g[2] for g in rank_grads]).mean()
        torch.testing.assert_close(mean_scale_grad, grad_s, rtol=1e-5, atol=1e-6)
