"""A real two-process DDP run of the CLI (gloo on CPU), checked against one process.

``python -m lightning_ssl fit --trainer.devices=2 --trainer.strategy=ddp`` runs in a subprocess:
Lightning starts rank 1 by re-running that command (which would re-run pytest in-process). The
metrics rank 0 writes must be the ones reduced over both ranks: validating the final checkpoint in
one process on the same validation subset gives the same probe accuracy (64 images = 2 ranks x 2
batches of 16, so the DistributedSampler pads nothing).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_ssl.cli import run_cli
from lightning_ssl.methods import DINO, MoCo

REPO = Path(__file__).resolve().parents[1]
TRAIN, VAL, BATCH = 128, 64, 16
STEPS = TRAIN // (2 * BATCH)  # optimizer steps of one epoch per rank

MODELS = {
    "moco": [
        "--model.init_args.proj_hidden_dim=64",
        "--model.init_args.proj_dim=32",
        "--model.init_args.queue_size=256",
    ],
    "dino": [
        "--model.init_args.out_dim=128",
        "--model.init_args.hidden_dim=64",
        "--model.init_args.bottleneck_dim=32",
        "--data.init_args.num_local_crops=2",
        "--data.init_args.local_size=16",
    ],
}


def _args(method: str, data_dir: Path, root: Path) -> list[str]:
    return [
        f"--config={REPO / 'configs' / method / 'cifar10.yaml'}",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--trainer.logger.name=csv",
        "--model.init_args.backbone=timm:test_resnet",
        "--model.init_args.cifar_stem=false",
        *MODELS[method],
        f"--data.init_args.data_dir={data_dir}",
        f"--data.init_args.train_subset={TRAIN}",
        f"--data.init_args.val_subset={VAL}",
        f"--data.init_args.batch_size={BATCH}",
        "--data.init_args.num_workers=0",
    ]


def _fit_ddp(method: str, data_dir: Path, root: Path) -> list[dict[str, str]]:
    """Fit one epoch on 2 gloo processes; return the rows of rank 0's ``metrics.csv``."""
    cmd = [sys.executable, "-m", "lightning_ssl", "fit", *_args(method, data_dir, root)]
    cmd += ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_epochs=1"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "MEMBER: 2/2" in done.stdout + done.stderr  # rank 1 started
    # One CSV writer (rank 0): a single version folder holding a single validation row.
    (metrics,) = (root / "csv").glob("version_*/metrics.csv")
    rows = [row for row in csv.DictReader(metrics.open()) if row.get("val/probe_top1")]
    assert len(rows) == 1
    return rows


@pytest.mark.parametrize("method", ["moco", "dino"])
def test_two_process_ddp_fit_logs_reduced_metrics_and_resumes_in_one_process(
    method, cifar10_dir, tmp_path, monkeypatch
):
    (row,) = _fit_ddp(method, cifar10_dir, tmp_path)
    for key in ("val/probe_top1", "val/probe_top5", "val/knn_top1"):
        assert 0.0 <= float(row[key]) <= 1.0, key

    last = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == STEPS
    model = {"moco": MoCo, "dino": DINO}[method].load_from_checkpoint(last, map_location="cpu")
    assert model.hparams.backbone == "timm:test_resnet"
    if method == "dino":
        return  # the probe/kNN reduction is the same code for every method: checked on MoCo

    # One process on the same 64 validation images, from the same checkpoint (probe included).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    single = tmp_path / "single"
    cli = run_cli(["validate", *_args(method, cifar10_dir, single), f"--ckpt_path={last}"])
    one = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    # The probe sees identical features in any order: its counts must match exactly (every
    # batch holds BATCH images in both runs: same kernel shapes, so the same bits per image).
    assert one["val/probe_top1"] == pytest.approx(float(row["val/probe_top1"]), abs=1e-6)
    assert one["val/probe_top5"] == pytest.approx(float(row["val/probe_top5"]), abs=1e-6)
    # The kNN bank is gathered in rank order, so near-tied votes may sum in another order and
    # flip one image's prediction; a per-rank (unreduced) value would differ by far more.
    assert one["val/knn_top1"] == pytest.approx(float(row["val/knn_top1"]), abs=1.5 / VAL)
