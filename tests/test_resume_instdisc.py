"""InstDisc resumes exactly: the shipped CIFAR-10 config through the CLI at a tiny size, resumed
from a mid-epoch step checkpoint, ends with the uninterrupted run's weights, memory bank, ``Z``,
optimizer, schedule and online probe bit for bit (noise draws and the bank are functions of the
batch count and the checkpoint).

The run is the one of the other exact-resume tests (``tests/resume_runs.py``: sizes, 2 loader
workers, a checkpoint every 2 steps) with InstDisc's config and 32 noise samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.resume_runs import (
    REPO,
    TRAIN,
    assert_bitwise_equal,
    console_fit_and_state,
    trained_state,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = REPO / "configs" / "instdisc" / "cifar10.yaml"
NOISE = ("--model.init_args.num_negatives=32",)  # the bank has TRAIN rows, fewer than 4096


def _fit(data_dir: Path, root: Path, ckpt: Path | None = None) -> dict:
    return console_fit_and_state(data_dir, root, ckpt=ckpt, config=CONFIG, model_args=NOISE)


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
