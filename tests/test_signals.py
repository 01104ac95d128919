"""Signals through the CLI with the shipped quickstart config (a loader worker process, epochs,
the kNN monitor every epoch): SIGTERM, SIGINT and SIGUSR1 save ``last.ckpt`` at the next batch
boundary and exit with ``128 + signum``; ``run.json`` says how the run ended; ``--ckpt_path
last`` continues to the end. Before this, SIGTERM exited with status 0 and saved nothing."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_ssl.run_folder import checkpoint_problem
from lightning_ssl.signals import WORKER_GRACE_S
from tests.cli_run import lightning_ssl_in_process

REPO = Path(__file__).resolve().parents[1]
TRAIN, BATCH, EPOCHS = 192, 32, 2
STEPS = EPOCHS * TRAIN // BATCH


def fit_args(data_dir: Path, root: Path, *extra: str) -> list[str]:
    """The quickstart config at a tiny size, writing into ``root``."""
    return [
        "fit",
        f"--config={REPO / 'configs/simclr/quickstart.yaml'}",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        f"--trainer.max_epochs={EPOCHS}",
        "--model.init_args.proj_hidden_dim=64",
        "--model.init_args.proj_dim=32",
        f"--data.init_args.data_dir={data_dir}",
        f"--data.init_args.train_subset={TRAIN}",
        "--data.init_args.val_subset=64",
        f"--data.init_args.batch_size={BATCH}",
        *extra,
    ]


# A checkpoint every 2 optimizer steps tells the test that training is under way.
PROGRESS = [
    "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
    "--trainer.callbacks.every_n_train_steps=2",
    "--trainer.callbacks.save_last=true",
    "--trainer.callbacks.save_top_k=0",
]


def start(args: list[str], cwd: Path, log: Path, code: str | None = None) -> subprocess.Popen:
    """``python -m lightning_ssl ARGS`` (or ``python -c CODE ARGS``) writing into ``log``."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, *(["-c", code] if code else ["-m", "lightning_ssl"]), *args]
    out = log.open("w")
    # Its own process group, as a terminal or a scheduler sees it: signals go to the loader's
    # worker processes too (Ctrl-C, scancel).
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, text=True, stdout=out, stderr=out, start_new_session=True
    )


def newest_last(folder: Path) -> Path:
    """The file ``--ckpt_path last`` resumes from."""
    return max(folder.glob("last*.ckpt"), key=lambda path: path.stat().st_mtime_ns)


def global_step(path: Path) -> int:
    assert checkpoint_problem(path) is None, checkpoint_problem(path)
    return torch.load(path, weights_only=False, map_location="cpu")["global_step"]


def wait_for_step(proc: subprocess.Popen, folder: Path, step: int, log: Path) -> None:
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        files = list(folder.glob("last*.ckpt")) if folder.exists() else []
        if any(checkpoint_problem(f) is None and global_step(f) >= step for f in files):
            return
        time.sleep(0.2)
    pytest.fail(f"no checkpoint at step {step}: {log.read_text()[-3000:]}")


def run_json(root: Path) -> dict:
    return json.loads((root / "run.json").read_text())


def resume_to_the_end(data_dir: Path, root: Path) -> str:
    log = root / "resume.log"
    proc = start(fit_args(data_dir, root, "--ckpt_path=last"), root, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert global_step(newest_last(root / "checkpoints")) == STEPS
    assert run_json(root)["status"] == "finished"
    return log.read_text()


def test_a_finished_fit_gives_back_the_signal_handlers_it_found(cifar10_dir, tmp_path):
    """A process that fits twice (a notebook, a script) keeps its own signal handling after each
    fit: SIGTERM ends it again instead of reaching a finished run's handler, and no finished run
    (Trainer, model, data) stays alive through one."""
    stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    before = {signum: signal.getsignal(signum) for signum in stop_signals}
    trainers_before = sum(isinstance(o, L.Trainer) for o in gc.get_objects())
    for run in ("first", "second"):
        root = tmp_path / run
        result = lightning_ssl_in_process(
            *fit_args(cifar10_dir, root), cwd=tmp_path, env={"WANDB_MODE": "disabled"}
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert {signum: signal.getsignal(signum) for signum in stop_signals} == before, run
    gc.collect()
    # Each finished run used to stay alive through the chained SIGTERM handlers (one Trainer
    # per fit, ~0.3 GB each for the ImageNet configs); the last run's argument parser may still
    # reference its CLI until the next command, so at most one is left.
    assert sum(isinstance(o, L.Trainer) for o in gc.get_objects()) <= trainers_before + 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_epoch_saves_last_exits_nonzero_and_resumes(signum, cifar10_dir, tmp_path):
    log = tmp_path / "fit.log"
    proc = start(fit_args(cifar10_dir, tmp_path, *PROGRESS), tmp_path, log)
    wait_for_step(proc, tmp_path / "checkpoints", 2, log)
    os.killpg(proc.pid, signum)  # the main process and its loader worker
    assert proc.wait(timeout=120) == 128 + signum, log.read_text()[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = global_step(last)
    assert 2 <= saved < STEPS
    assert newest_last(tmp_path / "checkpoints") == last
    info = run_json(tmp_path)
    assert (info["status"], info["signal"]) == ("interrupted", signal.Signals(signum).name)
    assert f"saved {last} at global step {saved}" in log.read_text()

    if signum == signal.SIGTERM:  # the same checkpoint either way: one resume is enough
        out = resume_to_the_end(cifar10_dir, tmp_path)
        assert f"Restoring states from the checkpoint path at {last}" in out


# Sends SIGUSR1 to itself when the kNN monitor starts encoding its bank, and records whether
# the bank was left by the signal's exception.
DURING_KNN = """
import os, signal, sys, time
from lightning_ssl.callbacks.knn import KNNMonitor
from lightning_ssl.commands import main

build = KNNMonitor._build_bank
def signalled_build(self, trainer, pl_module):
    if trainer.current_epoch == 0:
        os.kill(os.getpid(), signal.SIGUSR1)
        start = time.monotonic()
        try:
            build(self, trainer, pl_module)
        except BaseException as err:
            print(f"BANK STOPPED BY {type(err).__name__} after {time.monotonic() - start:.2f} s")
            raise
    return build(self, trainer, pl_module)
KNNMonitor._build_bank = signalled_build
main()  # as `python -m lightning_ssl ARGS` calls it
"""


def test_sigusr1_during_the_knn_pass_stops_it_and_saves(cifar10_dir, tmp_path):
    log = tmp_path / "fit.log"
    proc = start(fit_args(cifar10_dir, tmp_path), tmp_path, log, code=DURING_KNN)
    deadline = time.monotonic() + 300
    while proc.poll() is None and "SIGUSR1: saved" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    saved_at = time.monotonic()
    assert proc.wait(timeout=300) == 128 + signal.SIGUSR1, log.read_text()[-3000:]
    # The loader workers (they ignore SIGTERM) are ended at once: the exit's clean-up used to
    # wait WORKER_GRACE_S for them (a started Process no longer names its target).
    assert time.monotonic() - saved_at < WORKER_GRACE_S
    out = log.read_text()
    assert "BANK STOPPED BY SIGTERMException" in out  # the bank encoding did not run on
    assert global_step(tmp_path / "checkpoints" / "last.ckpt") == TRAIN // BATCH
    assert run_json(tmp_path)["signal"] == "SIGUSR1"
    resume_to_the_end(cifar10_dir, tmp_path)
