"""Whole methods under DDP: 2 processes x batch B train exactly like 1 process x batch 2B.

The per-loss tests (tests/losses/test_losses_ddp.py) prove each gather; this proves the methods
wire them right: after 3 optimizer steps the losses, the first step's gradients (as DDP averages
them), the weights, EMA teachers, queues and DINO's center agree with a single process that sees
the union of the ranks' batches.

BatchNorm is the one layer that is per process by design (SyncBN, its global version, needs a
GPU), so the backbone is a ViT (LayerNorm) and the heads' BatchNorm layers become identities.

Both sides train in float64 (``precision="64-true"``; the losses then run in float64 too). They
differ only in the order of sums (per-process matrices, gathered rows, DDP's gradient all-reduce),
each off by at most ``n * u * sum|terms|``; three SGD steps amplify that, by how much depends on
the CPU's kernels. In float32 (``u = 2**-24``) this test needed ``rel=1e-4`` after the first step
(Barlow Twins' and VICReg's large losses amplify the rounding), too close to what another CPU's
kernels may give; in float64 the same reordering is ``2**29`` times smaller (1e-4 becomes 2e-13),
so ``RTOL64 = 1e-9`` leaves a factor ~5000 for other CPUs and still fails on a real difference (a
wrong gather or gradient scale changes results at 1e-2). See also tests/methods/test_lean_step.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_ssl import methods
from tests.ddp_utils import fit_and_record, lightning_env, run_distributed

B, STEPS, SIZE = 8, 3, 32
RTOL64 = 1e-9  # float64 reordering after 3 steps, see the module docstring
TINY = dict(proj_hidden_dim=32, proj_dim=16)
METHODS = {
    "SimCLR": dict(TINY, temperature=0.1),
    "MoCo": dict(TINY, queue_size=32, tau_base=0.9, tau_final=0.9),
    "MoCoV3": dict(TINY, pred_hidden_dim=32, tau_base=0.9),
    "BYOL": dict(TINY, pred_hidden_dim=32, tau_base=0.9),
    "NNCLR": dict(TINY, pred_hidden_dim=32, queue_size=32),
    "SwAV": dict(
        TINY, num_prototypes=12, queue_size=32, queue_start_epoch=0, freeze_prototypes_steps=1
    ),
    "DINO": dict(out_dim=32, hidden_dim=32, bottleneck_dim=16, teacher_temp_warmup_epochs=0.0),
    "SimSiam": dict(TINY, pred_hidden_dim=16),
    "BarlowTwins": dict(TINY, lr_biases=None),
    "VICReg": dict(TINY),
}
COMMON = dict(
    backbone="timm:test_vit",
    optimizer="sgd",
    lr=0.05,
    momentum=0.9,
    weight_decay=0.0,
    warmup_epochs=0.0,
    lr_scaling="none",
    num_classes=4,
    image_size=SIZE,
    num_global_crops=2,
)


class _Views(Dataset):
    """``STEPS`` global batches of 2B images with two fixed views each; ``rank`` takes its half."""

    def __init__(self, rank: int | None) -> None:
        g = torch.Generator().manual_seed(0)
        views = torch.randn(2, STEPS * 2 * B, 3, SIZE, SIZE, generator=g)
        index = torch.arange(STEPS * 2 * B).view(STEPS, 2, B)  # step, rank, sample
        self.index = index.flatten() if rank is None else index[:, rank].flatten()
        self.views, self.labels = views, torch.arange(STEPS * 2 * B) % 4

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        j = int(self.index[i])
        return [self.views[0, j], self.views[1, j]], self.labels[j]


def _without_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _without_batchnorm(child)
    return module


def _train(name: str, rank: int | None, world_size: int) -> dict:
    torch.manual_seed(0)
    model = _without_batchnorm(getattr(methods, name)(**COMMON, **METHODS[name]))
    batch = 2 * B if rank is None else B
    loader = DataLoader(_Views(rank), batch_size=batch)
    return fit_and_record(model, loader, world_size, max_steps=STEPS, precision="64-true")


def _worker(rank: int, world_size: int) -> dict:
    lightning_env(rank, world_size)
    return {name: _train(name, rank, world_size) for name in METHODS}


@pytest.fixture(scope="module")
def two_processes() -> list[dict]:
    return run_distributed(_worker, 2)


@pytest.mark.parametrize("name", list(METHODS))
def test_two_processes_train_like_one_with_the_union_batch(name, two_processes):
    torch.set_num_threads(1)
    single = _train(name, None, 1)
    ranks = [r[name] for r in two_processes]
    # Each rank's loss is its local anchors' mean against global negatives/statistics: their
    # mean is the single process's loss.
    for step in range(STEPS):
        mean = sum(r["losses"][step] for r in ranks) / 2
        assert mean == pytest.approx(single["losses"][step], rel=RTOL64), step
    assert ranks[0]["grads"].keys() == single["grads"].keys() and single["grads"]
    _assert_close(single["grads"], [r["grads"] for r in ranks], rel=RTOL64)
    floats = {k: v for k, v in single["state"].items() if v.is_floating_point()}
    assert all(v.dtype == torch.float64 for v in floats.values())  # really trained in float64
    _assert_close(floats, [r["state"] for r in ranks], rel=RTOL64)
    for key, value in single["state"].items():
        if not value.is_floating_point():
            assert all(torch.equal(r["state"][key], value) for r in ranks), key


def _assert_close(expected: dict, actuals: list[dict], rel: float) -> None:
    """``||actual - expected|| <= rel * ||expected||`` per tensor (summation order differs across
    processes, so elements near zero differ relative to themselves, not to their tensor). A
    tensor whose exact gradient is 0 (a bias before a normalisation) is held to ``rel`` of 1e-3
    of the norm of all tensors together instead."""
    floor = 1e-3 * float(torch.cat([v.flatten() for v in expected.values()]).norm())
    for key, value in expected.items():
        for actual in actuals:
            error = float((actual[key] - value).norm())
            assert error <= rel * max(float(value.norm()), floor), (key, error)
