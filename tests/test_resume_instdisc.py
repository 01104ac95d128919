"""InstDisc resumes exactly: the shipped CIFAR-10 config through the CLI at a tiny size, resumed
from a mid-epoch step checkpoint, ends with the uninterrupted run's weights, memory bank, ``Z``,
optimizer, schedule and online probe bit for bit (noise draws and the bank are functions of the
batch count and the checkpoint)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_ssl.cli import run_cli
from tests.resume_runs import BATCH, EPOCHS, REPO, STEPS, TRAIN, assert_bitwise_equal, trained_state

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = REPO / "configs" / "instdisc" / "cifar10.yaml"


def _fit(data_dir: Path, root: Path, ckpt: Path | None = None) -> dict:
    args = [
        "fit",
        f"--config={CONFIG}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.precision=32",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        f"--trainer.max_epochs={EPOCHS}",
        "--model.init_args.backbone=timm:test_resnet",
        "--model.init_args.cifar_stem=false",
        "--model.init_args.num_negatives=32",
        f"--data.init_args.data_dir={data_dir}",
        f"--data.init_args.train_subset={TRAIN}",
        "--data.init_args.val_subset=32",
        f"--data.init_args.batch_size={BATCH}",
        "--data.init_args.num_workers=2",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=2",
        "--trainer.callbacks.save_top_k=-1",
        "--trainer.callbacks.filename={step}",
        *([f"--ckpt_path={ckpt}"] if ckpt else []),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root.parent)
        patch.setenv("WANDB_MODE", "disabled")
        run_cli(args)
    return trained_state(root / "checkpoints" / f"step={STEPS}.ckpt")


def test_instdisc_resume_mid_epoch_is_bitwise_exact(cifar10_dir, tmp_path):
    expected = _fit(cifar10_dir, tmp_path / "straight")
    bank = expected["model"]["memory_bank.memory"]
    assert bank.shape == (TRAIN, 128) and torch.isfinite(
        expected["model"]["memory_bank.log_normalizer"]
    )
    start = trained_state(tmp_path / "straight" / "checkpoints" / "step=4.ckpt")
    assert not torch.equal(start["model"]["memory_bank.memory"], bank)  # written after step 4
    got = _fit(
        cifar10_dir, tmp_path / "run", ckpt=tmp_path / "straight" / "checkpoints" / "step=4.ckpt"
    )
    assert_bitwise_equal(got, expected, "InstDisc resumed at step 4")
