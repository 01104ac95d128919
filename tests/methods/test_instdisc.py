"""InstDisc: defaults and bank initialisation of the official code, the training step's loss and
bank update against their formulas, and 2 processes training like 1 with the union batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_ssl.callbacks.memory_bank import MemoryBankUpdater
from lightning_ssl.losses import nce_loss
from lightning_ssl.methods import InstDisc
from lightning_ssl.nn.memory_bank import MemoryBank
from tests.ddp_utils import fit_and_record, lightning_env, run_distributed

pytestmark = pytest.mark.usefixtures("one_thread")

B, STEPS, N, SIZE = 8, 3, 60, 16
TINY = dict(
    backbone="timm:test_vit", image_size=SIZE, num_global_crops=1, num_classes=4, bank_size=N,
    feature_dim=8, num_negatives=6, lr=0.05, weight_decay=0.0, lr_scaling="none",
)  # fmt: skip


def _quiet(model: InstDisc) -> InstDisc:
    model.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    return model


def test_paper_defaults_and_official_bank_initialisation():
    model = InstDisc(backbone="timm:test_resnet", bank_size=2000)
    hp = model.hparams
    assert (hp.feature_dim, hp.temperature, hp.num_negatives, hp.bank_momentum) == (
        128, 0.07, 4096, 0.5,
    )  # fmt: skip
    assert (hp.optimizer, hp.lr, hp.weight_decay, hp.momentum, hp.warmup_epochs) == (
        "sgd", 0.03, 1e-4, 0.9, 0.0,
    )  # fmt: skip
    assert hp.proximal_weight == 0.0 and model.needs_sample_indices
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 128
    rows = model.memory_bank.memory
    # lib/NCEAverage.py: uniform in [-stdv, stdv], stdv = 1 / sqrt(128 / 3): E ||row||^2 = 1
    bound = 1 / math.sqrt(128 / 3)
    assert rows.shape == (2000, 128) and float(rows.abs().max()) <= bound
    assert float(rows.pow(2).sum(1).mean()) == pytest.approx(1.0, abs=0.02)
    assert torch.isnan(model.memory_bank.log_normalizer)
    assert torch.equal(rows, MemoryBank(2000, 128, seed=0).memory)  # same on every rank
    half = MemoryBank(2000, 128, dtype=torch.float16)
    assert half.memory.nbytes * 2 == rows.nbytes


def test_bad_values_and_missing_indices_say_what_to_fix():
    with pytest.raises(ValueError, match="bank_momentum"):
        InstDisc(backbone="timm:test_resnet", bank_momentum=1.0)
    model = _quiet(InstDisc(**TINY))
    with pytest.raises(ValueError, match="sample_indices"):
        model.training_step(([torch.randn(2, 3, SIZE, SIZE)], torch.zeros(2)), 0)
    with pytest.raises(ValueError, match="set model bank_size to 61"):
        model.build_bank(61)


def test_training_step_is_nce_against_the_bank_and_the_update_is_the_momentum_rule():
    torch.manual_seed(0)
    model = _quiet(InstDisc(**{**TINY, "temperature": 0.5}))
    x, indices = torch.randn(B, 3, SIZE, SIZE), torch.arange(3, 3 + B)
    bank_before = model.memory_bank.memory.clone()
    noise = model.draw_noise(B, x.device)
    model._draws = 0  # the step draws the same noise again
    out = model.training_step(([x], torch.zeros(B), indices), 0)
    with torch.no_grad():
        v = F.normalize(model.head(model.backbone(x)), dim=1)
        candidates = bank_before[torch.cat([indices[:, None], noise], 1)]
        scores = torch.einsum("bkd,bd->bk", candidates, v) / 0.5
        log_z = math.log(float(scores.exp().mean()) * N)  # Z = N * mean over the first batch
        expected = nce_loss(v, candidates, 0.5, log_z, N)
    assert float(model.memory_bank.log_normalizer) == pytest.approx(log_z, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-5)
    (updater,) = [c for c in model.configure_callbacks() if isinstance(c, MemoryBankUpdater)]
    updater.on_train_batch_end(None, model, out, None, 0)
    updated = F.normalize(0.5 * bank_before[indices] + 0.5 * v, dim=1)
    assert torch.allclose(model.memory_bank.memory[indices], updated, atol=1e-6)
    others = torch.ones(N, dtype=torch.bool)
    others[indices] = False
    assert torch.equal(model.memory_bank.memory[others], bank_before[others])
    model.training_step(([x], torch.zeros(B), indices), 1)
    assert float(model.memory_bank.log_normalizer) == pytest.approx(log_z, rel=1e-5)  # once


def test_full_softmax_and_proximal_term():
    torch.manual_seed(0)
    model = _quiet(InstDisc(**{**TINY, "num_negatives": 0, "proximal_weight": 30.0}))
    x, indices = torch.randn(B, 3, SIZE, SIZE), torch.arange(B)
    out = model.training_step(([x], torch.zeros(B), indices), 0)
    with torch.no_grad():
        v = F.normalize(model.head(model.backbone(x)), dim=1)
        bank = model.memory_bank.memory
        softmax = F.cross_entropy(v @ bank.T / 0.07, indices)
        proximal = (v - bank[indices]).pow(2).sum(1).mean()
    assert float(out["loss"]) == pytest.approx(float(softmax + 30.0 * proximal), rel=1e-5)


class _Indexed(Dataset):
    """``STEPS`` global batches of 2B images with one fixed view each; ``rank`` takes its half;
    items are ``([view], label, dataset index)``."""

    def __init__(self, rank: int | None) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(N, 3, SIZE, SIZE, generator=g)
        order = torch.randperm(N, generator=g)[: STEPS * 2 * B].view(STEPS, 2, B)
        self.order = order.flatten() if rank is None else order[:, rank].flatten()

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int):
        j = int(self.order[i])
        return [self.images[j]], j % 4, j


def _train(rank: int | None, world_size: int, options: dict) -> dict:
    torch.manual_seed(0)
    model = InstDisc(**{**TINY, **options})
    batch = 2 * B if rank is None else B
    loader = DataLoader(_Indexed(rank), batch_size=batch)
    return fit_and_record(model, loader, world_size, max_steps=STEPS)


VARIANTS = {"nce": {}, "softmax_proximal": {"num_negatives": 0, "proximal_weight": 30.0}}


def _worker(rank: int, world_size: int) -> dict:
    lightning_env(rank, world_size)
    return {name: _train(rank, world_size, options) for name, options in VARIANTS.items()}


@pytest.fixture(scope="module")
def two_processes() -> list[dict]:
    return run_distributed(_worker, 2)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_two_processes_train_like_one_with_the_union_batch(name, two_processes):
    """The loss (mean of the ranks'), the first gradients, the weights, ``Z`` and every bank row
    after 3 steps equal one process's with the union batch (the ViT has no BatchNorm)."""
    torch.set_num_threads(1)
    single = _train(None, 1, VARIANTS[name])
    ranks = [r[name] for r in two_processes]
    for step in range(STEPS):
        mean = sum(r["losses"][step] for r in ranks) / 2
        assert mean == pytest.approx(single["losses"][step], rel=1e-5 if step == 0 else 1e-4)
    for key, value in single["grads"].items():
        for rank in ranks:
            error = float((rank["grads"][key] - value).norm())
            assert error <= 1e-5 * max(float(value.norm()), 1e-3), key
    for key, value in single["state"].items():
        for rank in ranks:
            assert torch.allclose(
                rank["state"][key], value, rtol=1e-4, atol=1e-6, equal_nan=True
            ), key
    bank = single["state"]["memory_bank.memory"]
    assert not torch.equal(bank, MemoryBank(N, 8).memory)  # the bank was written
    assert torch.equal(
        ranks[0]["state"]["memory_bank.memory"], ranks[1]["state"]["memory_bank.memory"]
    )
