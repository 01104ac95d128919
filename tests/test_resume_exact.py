"""Exact resume through the CLI with the shipped config's loader settings (worker processes,
epochs): a run resumed from a mid-epoch step checkpoint or from an epoch-end checkpoint ends
with the uninterrupted run's weights, optimizer, schedule and online probe bit for bit (CPU).

Before the fix a 2-worker run resumed at step 4 trained steps 4-11 on the reference's batches
0-7 (Lightning builds the training iterator while ``configure_optimizers`` estimates the step
count, before the loop state is restored), and the per-image augmentation came from each
worker's random state, which no checkpoint holds. Now the sampler reads its position when the
first batch is requested and each image's views are seeded by (seed, epoch, index), so the
worker count does not matter either: the 0-worker resume below matches the 2-worker run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ssl.cli import run_cli
from tests.resume_runs import (
    STEPS,
    assert_bitwise_equal,
    cli_args,
    final_checkpoints,
    trained_state,
)

pytestmark = pytest.mark.usefixtures("one_thread")

#: Keeps every epoch-end checkpoint (written after validation) as ``end-epoch=E.ckpt``;
#: ``mode`` only makes its state key differ from the config's own ModelCheckpoint.
EPOCH_ENDS = (
    "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
    "--trainer.callbacks.save_top_k=-1",
    "--trainer.callbacks.mode=max",
    "--trainer.callbacks.filename=end-{epoch}",
)
BATCHED = ("--data.init_args.batched_augmentation=true",)


def _fit(data_dir: Path, root: Path, workers: int, *extra: str, ckpt: Path | None = None):
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root.parent)
        patch.setenv("WANDB_MODE", "disabled")
        resume = [f"--ckpt_path={ckpt}"] if ckpt else []
        run_cli([*cli_args(data_dir, root, workers, *EPOCH_ENDS, *extra), *resume])
    # The last epoch's end, after its validation (the ``end-{epoch}`` checkpoint of EPOCH_ENDS).
    (final,) = [p for p in final_checkpoints(root) if p.name.startswith("end-epoch=")]
    return trained_state(final)


@pytest.fixture(scope="module")
def straight(cifar10_dir, tmp_path_factory, one_thread) -> tuple[Path, dict]:
    """The uninterrupted reference run (2 workers) and its final state."""
    root = tmp_path_factory.mktemp("straight")
    return root, _fit(cifar10_dir, root, 2)


@pytest.mark.parametrize("workers", [2, 0])
def test_resume_mid_epoch_is_bitwise_exact(cifar10_dir, tmp_path, straight, workers):
    root, expected = straight
    assert expected["global_step"] == STEPS
    got = _fit(cifar10_dir, tmp_path / "run", workers, ckpt=root / "checkpoints" / "step=4.ckpt")
    assert_bitwise_equal(got, expected, f"resumed at step 4 with {workers} workers")


def test_resume_from_epoch_end_checkpoint_is_bitwise_exact(cifar10_dir, tmp_path, straight):
    root, expected = straight
    epoch_end = root / "checkpoints" / "end-epoch=0.ckpt"
    assert trained_state(epoch_end)["global_step"] == STEPS // 2
    got = _fit(cifar10_dir, tmp_path / "run", 2, ckpt=epoch_end)
    assert_bitwise_equal(got, expected, "resumed after epoch 0's validation")


def test_resume_with_batched_augmentation_is_bitwise_exact(cifar10_dir, tmp_path):
    """Views made on the training device: the generator is seeded by (seed, rank, batch)."""
    expected = _fit(cifar10_dir, tmp_path / "straight", 2, *BATCHED)
    step_4 = tmp_path / "straight" / "checkpoints" / "step=4.ckpt"
    got = _fit(cifar10_dir, tmp_path / "run", 2, *BATCHED, ckpt=step_4)
    assert_bitwise_equal(got, expected, "batched augmentation, resumed at step 4")
