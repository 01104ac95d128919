"""Resuming with new values through the CLI: a new learning rate applies from the resumed step,
a new head size is refused naming both values (issue 10, failure 3: the restored optimizer
state used to put the old learning rate back, and an explicit checkpoint file silently replaced
the command line's model arguments)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from lightning_ssl.checkpoint import load_checkpoint
from lightning_ssl.cli import run_cli
from lightning_ssl.resume_hparams import ResumeMismatchError, changed_hparams

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/simclr/cifar10.yaml"
LR = 0.4  # the shipped config's lr
STEPS = 4  # one epoch: 32 images, batch 8
RUN = Path("runs/simclr-cifar10")

pytestmark = pytest.mark.usefixtures("one_thread")


def _args(cifar10_dir: Path, *extra: str) -> list[str]:
    """The shipped config at a tiny size; the run folder is ``runs/simclr-cifar10`` under the
    working directory, as for a user."""
    return [
        f"--config={CONFIG}",
        "--trainer.precision=32",
        "--trainer.accelerator=cpu",
        "--trainer.log_every_n_steps=1",
        f"--data.init_args.data_dir={cifar10_dir}",
        "--data.init_args.batch_size=8",
        "--data.init_args.num_workers=2",
        "--data.init_args.train_subset=32",
        "--data.init_args.val_subset=8",
        "--model.init_args.backbone=timm:test_resnet",
        "--model.init_args.cifar_stem=false",
        "--model.init_args.proj_hidden_dim=64",
        "--model.init_args.proj_dim=32",
        "--model.init_args.warmup_epochs=0.5",
        # a resumed run of one step ends its cosine there: a floor keeps that step's LR > 0
        "--model.init_args.min_lr_ratio=0.5",
        *extra,
    ]


def _resume_one_step(
    cifar10_dir: Path, first: Path, folder: Path, lr: float, monkeypatch
) -> tuple[dict, float]:
    """Copy the working directory ``first`` to ``folder``, resume there for one optimizer step
    with ``lr``; return the weights after it and the learning rate logged for it."""
    shutil.copytree(first, folder)
    monkeypatch.chdir(folder)
    cli = run_cli(
        [
            "fit",
            *_args(cifar10_dir, f"--model.init_args.lr={lr}"),
            f"--trainer.max_steps={STEPS + 1}",
            "--ckpt_path=last",
        ]
    )
    weights = {k: v.detach().clone() for k, v in cli.model.named_parameters()}
    logs = sorted((folder / RUN).glob("csv/version_*/metrics.csv"))[-1]  # this run's log
    with open(logs) as file:
        rows = list(csv.DictReader(file))
    (key,) = [k for k in rows[0] if k.startswith("lr-") and k.endswith("/default")]  # lr-LARS/...
    (logged,) = [float(r[key]) for r in rows if r.get(key)]
    return weights, logged


def test_resume_with_a_new_learning_rate_applies_it_from_the_resumed_step(
    cifar10_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    first = tmp_path / "first"
    first.mkdir()
    monkeypatch.chdir(first)
    run_cli(["fit", *_args(cifar10_dir), "--trainer.max_epochs=1"])
    before = load_checkpoint(first / RUN / "checkpoints/last.ckpt")
    assert before["global_step"] == STEPS

    same, lr_same = _resume_one_step(cifar10_dir, first, tmp_path / "same", LR, monkeypatch)
    lower, lr_lower = _resume_one_step(cifar10_dir, first, tmp_path / "low", LR / 10, monkeypatch)
    # The logged learning rate is the new one at the same point of the schedule.
    assert lr_lower == pytest.approx(lr_same / 10, rel=1e-6)
    # LARS' update is linear in the learning rate (trust ratio, momentum buffer and gradient
    # come from the same restored state and batch): the step is a tenth of the old one.
    start = before["state_dict"]
    moved = [k for k in same if not torch.equal(same[k], start[k])]  # parameters, not BN stats
    assert len(moved) > 10
    step_same = torch.cat([(same[k] - start[k]).flatten() for k in moved])
    step_lower = torch.cat([(lower[k] - start[k]).flatten() for k in moved])
    # Float32 differences of weights ~1e-1 moved by ~1e-4: each difference is exact to ~1e-3
    # relative; over the whole vector the ratio of norms is exact to far better than 1e-3.
    ratio = step_lower.norm() / step_same.norm()
    assert ratio == pytest.approx(0.1, rel=1e-3)
    # The schedule keeps the new base: the saved scheduler and groups carry it.
    after = load_checkpoint(tmp_path / "low" / RUN / "checkpoints/last.ckpt")
    old_base = before["lr_schedulers"][0]["base_lrs"]
    new_base = after["lr_schedulers"][0]["base_lrs"]
    assert new_base == pytest.approx([b / 10 for b in old_base], rel=1e-12)
    # Everything else is restored: the momentum buffers of the checkpoint were used.
    assert after["global_step"] == STEPS + 1


def test_resume_refuses_a_new_head_size_naming_both_values(cifar10_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    args = _args(cifar10_dir, "--data.init_args.num_workers=0")
    run_cli(["fit", *args, "--trainer.max_steps=1"])
    last = tmp_path / RUN / "checkpoints/last.ckpt"
    for ckpt_path in ("last", str(last)):  # the path Lightning resolves and an explicit file
        with pytest.raises(ResumeMismatchError, match=r"proj_dim 32 -> 16") as error:
            run_cli(["fit", *args, "--model.init_args.proj_dim=16", f"--ckpt_path={ckpt_path}"])
        assert "must keep the checkpoint's values" in str(error.value)


def test_changed_hparams_compares_tuples_and_lists_as_equal():
    saved = {"crop_scale": (0.08, 1.0), "lr": 0.4, "_class_path": "x"}
    assert changed_hparams(saved, {"crop_scale": [0.08, 1.0], "lr": 0.1, "_class_path": "y"}) == {
        "lr": (0.4, 0.1)
    }
