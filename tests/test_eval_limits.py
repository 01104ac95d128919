"""Evaluation callbacks follow the trainer's limits (issue 11, observation 5): the kNN bank of a
smoke run is ``limit_val_batches`` batches, not the whole training set; the last epoch gets a kNN
figure whatever ``every_n_epochs`` says; a warm-up longer than the run is reported; one final
checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import wandb

from lightning_ssl.callbacks import KNNMonitor
from lightning_ssl.callbacks.knn import bank_size, is_last_epoch
from lightning_ssl.cli import run_cli

REPO = Path(__file__).resolve().parents[1]
BATCH, VAL_BATCHES = 8, 2


def test_bank_size_follows_the_limits():
    assert bank_size(L.Trainer(logger=False), 50_000, 256, None) == 50_000
    assert bank_size(L.Trainer(logger=False), 50_000, 256, 10_000) == 10_000
    assert bank_size(L.Trainer(logger=False, limit_val_batches=2), 50_000, 256, None) == 512
    assert bank_size(L.Trainer(logger=False, limit_val_batches=0.1), 50_000, 256, None) == 5_000
    assert bank_size(L.Trainer(logger=False, limit_val_batches=2), 50_000, 256, 100) == 100
    assert bank_size(L.Trainer(logger=False, fast_dev_run=3), 50_000, 16, None) == 48


def test_is_last_epoch_knows_max_epochs():
    trainer = L.Trainer(logger=False, max_epochs=3)
    assert not is_last_epoch(trainer)
    trainer.fit_loop.epoch_progress.current.completed = 2  # running the third epoch
    assert trainer.current_epoch == 2 and is_last_epoch(trainer)


def test_smoke_run_of_the_gpu_config_respects_limits(cifar10_dir, tmp_path, monkeypatch):
    """``configs/simclr/cifar10.yaml`` (kNN every 10 epochs, 10 warm-up epochs) for 2 epochs of
    4 steps with ``limit_val_batches 2``: the issue's smoke run encoded all 50,000 images."""
    monkeypatch.chdir(tmp_path)
    banks: list[tuple[int, int]] = []
    build = KNNMonitor._build_bank

    def record(self, trainer, pl_module):
        build(self, trainer, pl_module)
        banks.append((trainer.current_epoch, int((self._bank[1] >= 0).sum())))

    monkeypatch.setattr(KNNMonitor, "_build_bank", record)
    with pytest.warns(UserWarning, match="40 warm-up steps .* exceed the run's 8 steps"):
        cli = run_cli(
            [
                "fit",
                f"--config={REPO / 'configs/simclr/cifar10.yaml'}",
                "--trainer.accelerator=cpu",
                "--trainer.precision=32",
                "--trainer.max_epochs=2",
                "--trainer.limit_train_batches=4",
                f"--trainer.limit_val_batches={VAL_BATCHES}",
                f"--data.init_args.data_dir={cifar10_dir}",
                f"--data.init_args.batch_size={BATCH}",
                "--data.init_args.train_subset=1000",
                "--data.init_args.num_workers=2",
                "--model.init_args.proj_hidden_dim=64",
            ]
        )
    wandb.finish()
    # Epoch 0 (a multiple of 10) and the last epoch; each bank is 2 batches of 8 images.
    assert banks == [(0, VAL_BATCHES * BATCH), (1, VAL_BATCHES * BATCH)]
    assert "val/knn_top1" in cli.trainer.callback_metrics
    folder = tmp_path / "runs/simclr-cifar10/checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # one, not three
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 8
