"""CLIP resumes exactly: the shipped CIFAR-10 demo config (image-text pairs with captions from
the class names) through the CLI at a tiny size, resumed from a mid-epoch step checkpoint, ends
with the uninterrupted run's image and text towers, learned logit scale, optimizer, schedule and
online probe bit for bit.

The run is the one of the other exact-resume tests (``tests/resume_runs.py``: sizes, 2 loader
workers, a checkpoint every 2 steps) with CLIP's config and a 1-block, 64-wide text tower."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.resume_runs import REPO, assert_bitwise_equal, console_fit_and_state, trained_state

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = REPO / "configs" / "clip" / "cifar10.yaml"
TOWERS = {"embed_dim": 64, "text_width": 64, "text_layers": 1, "text_heads": 1}
SMALL = tuple(f"--model.init_args.{name}={value}" for name, value in TOWERS.items())


def _fit(data_dir: Path, root: Path, ckpt: Path | None = None) -> dict:
    return console_fit_and_state(data_dir, root, ckpt=ckpt, config=CONFIG, model_args=SMALL)


def test_clip_resume_mid_epoch_is_bitwise_exact(cifar10_dir, tmp_path):
    expected = _fit(cifar10_dir, tmp_path / "straight")
    start = trained_state(tmp_path / "straight" / "checkpoints" / "step=4.ckpt")
    scale = "logit_scale"
    assert scale in expected["model"], sorted(expected["model"])[:10]
    assert not torch.equal(start["model"][scale], expected["model"][scale])  # learned after 4
    got = _fit(
        cifar10_dir, tmp_path / "run", ckpt=tmp_path / "straight" / "checkpoints" / "step=4.ckpt"
    )
    assert_bitwise_equal(got, expected, "CLIP resumed at step 4")
