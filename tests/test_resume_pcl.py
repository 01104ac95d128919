"""PCL resumes exactly: the shipped CIFAR-10 config through the CLI at a tiny size, resumed from
a step checkpoint in the middle of the first epoch with prototypes, keeps that epoch's clustering
(it is in the checkpoint with its epoch, so nothing is reclustered from the mid-epoch weights)
and ends with the uninterrupted run's weights, queue, prototypes, optimizer, schedule and online
probe bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.resume_runs import (
    BATCH,
    REPO,
    SMALL_PROJECTOR,
    TRAIN,
    assert_bitwise_equal,
    fit_and_state,
    trained_state,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = REPO / "configs" / "pcl" / "cifar10.yaml"
SMALL_PCL = (
    *SMALL_PROJECTOR,
    "--model.init_args.queue_size=64",
    "--model.init_args.num_clusters=[4, 8]",
    "--model.init_args.num_negative_prototypes=4",
    "--model.init_args.proto_warmup_epochs=1",  # prototypes from the second epoch on
    "--model.init_args.kmeans_restarts=2",
)


def _fit(data_dir: Path, root: Path, ckpt: Path | None = None) -> dict:
    return fit_and_state(data_dir, root, ckpt=ckpt, config=CONFIG, model_args=SMALL_PCL)


def test_pcl_resume_mid_epoch_keeps_the_clustering_and_is_bitwise_exact(cifar10_dir, tmp_path):
    expected = _fit(cifar10_dir, tmp_path / "straight")
    steps_per_epoch = TRAIN // BATCH
    folder = tmp_path / "straight" / "checkpoints"
    before = trained_state(folder / f"step={steps_per_epoch - 2}.ckpt")["model"]
    middle = trained_state(folder / f"step={steps_per_epoch + 2}.ckpt")["model"]
    assert int(before["prototypes.epoch"]) == -1  # InfoNCE alone in the first epoch
    assert int(middle["prototypes.epoch"]) == 1
    assert middle["prototypes.levels.1.centroids"].shape == (8, 32)
    assert middle["prototypes.levels.0.assignments"].shape == (TRAIN,)
    got = _fit(cifar10_dir, tmp_path / "run", ckpt=folder / f"step={steps_per_epoch + 2}.ckpt")
    assert_bitwise_equal(got, expected, f"PCL resumed at step {steps_per_epoch + 2}")
    for key, value in middle.items():  # the second epoch's clustering, kept to its end
        if key.startswith("prototypes."):
            assert torch.equal(got["model"][key], value), key
