"""A run is a folder (issue 11, observations 1-4): a second fit cannot mix into a run, ``last``
resolves inside the run only, validate is recorded beside the history, loggers follow the folder,
and W&B follows ``WANDB_MODE``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import wandb
import yaml
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from lightning_ssl.cli import LightningSSLCLI, run_cli
from lightning_ssl.compare import load_run, summary
from lightning_ssl.data import SSLDataModule
from lightning_ssl.run_folder import RunFolderError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs/simclr/quickstart.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(cifar10_dir: Path, run_dir: Path) -> list[str]:
    return [
        f"--config={QUICKSTART}",
        f"--run_dir={run_dir}",
        f"--data.init_args.data_dir={cifar10_dir}",
        "--data.init_args.train_subset=64",
        "--data.init_args.val_subset=32",
        "--data.init_args.batch_size=32",
        "--data.init_args.num_workers=0",
        "--trainer.max_epochs=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
    ]


@pytest.fixture(scope="module")
def simclr_run(cifar10_dir, tmp_path_factory) -> Path:
    """One real 1-epoch SimCLR run of the quickstart config."""
    run_dir = tmp_path_factory.mktemp("runs") / "simclr"
    run_cli(["fit", *tiny(cifar10_dir, run_dir)])
    wandb.finish()
    # A user's run ends with its process, W&B's service too: without this the in-process
    # service went on writing its debug-core.log into the run folder after finish() (seen on a
    # loaded machine), which is not what the refused second fit must leave untouched.
    wandb.teardown()
    return run_dir


def snapshot(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*.*")}


def test_a_second_fit_into_a_run_folder_is_refused(simclr_run, cifar10_dir):
    before = snapshot(simclr_run)
    # The sequence: a 1-step BYOL run into the SimCLR run's folder.
    for extra in ([], ["--model=BYOL", "--trainer.max_steps=1"]):
        with pytest.raises(RunFolderError) as error:
            run_cli(["fit", *tiny(cifar10_dir, simclr_run), *extra])
        message = str(error.value)
        assert "already holds a SimCLR run (1 epochs, finished)" in message
        assert "--ckpt_path last" in message and "--run_dir" in message
    assert snapshot(simclr_run) == before


def test_resuming_another_methods_run_fails_with_both_names(simclr_run, cifar10_dir):
    with pytest.raises(ValueError, match="written by SimCLR, not BYOL"):
        run_cli(["fit", *tiny(cifar10_dir, simclr_run), "--model=BYOL", "--ckpt_path=last"])


def test_last_with_nothing_to_resume_is_an_error_unless_asked(cifar10_dir, tmp_path, simclr_run):
    empty = tmp_path / "empty"
    for subcommand in ("fit", "validate"):
        with pytest.raises(RunFolderError, match="nothing to resume"):
            run_cli([subcommand, *tiny(cifar10_dir, empty), "--ckpt_path=last"])
    # A requeued job: resume when there is a checkpoint, else start the run.
    cli = run_cli(
        ["fit", *tiny(cifar10_dir, empty), "--ckpt_path=last_if_exists", "--trainer.max_steps=1"]
    )
    wandb.finish()
    assert cli.trainer.global_step == 1 and (empty / "checkpoints/last.ckpt").is_file()
    # ``last`` is looked up in the run's own folder only: the other run's checkpoint is ignored.
    assert cli.trainer.ckpt_path is None and not list(tmp_path.glob("*.ckpt"))
    assert (simclr_run / "checkpoints/last.ckpt").is_file()


def test_validate_is_recorded_beside_the_history(simclr_run, cifar10_dir):
    history = simclr_run / "csv/version_0/metrics.csv"
    before = history.read_bytes()
    cli = run_cli(["validate", *tiny(cifar10_dir, simclr_run), "--ckpt_path=last"])
    wandb.finish()
    assert history.read_bytes() == before and len(list(simclr_run.glob("csv/version_*"))) == 1
    (entry,) = json.loads((simclr_run / "run.json").read_text())["evaluations"]
    logged = float(cli.trainer.callback_metrics["val/probe_top1"])
    assert entry["subcommand"] == "validate" and entry["metrics"]["val/probe_top1"] == logged
    assert entry["ckpt_path"] == str((simclr_run / "checkpoints/last.ckpt").resolve())
    row = summary(load_run(simclr_run))
    # The fit's history stays the run's: its loss and its probe, validate in its own column.
    assert row["loss_final"] is not None and row["epochs"] == 1 and row["segments"] == 1
    assert row["validate_probe_top1"] == logged


def test_shipped_configs_leave_log_folders_and_wandb_mode_to_the_run():
    for config in sorted((REPO / "configs").rglob("*.yaml")):
        trainer = yaml.safe_load(config.read_text())["trainer"]
        for logger in trainer.get("logger") or []:
            init = logger.get("init_args") or {}
            assert "save_dir" not in init and "offline" not in init, config
        checkpoints = [c for c in trainer.get("callbacks", []) if "Checkpoint" in c["class_path"]]
        assert all(c["class_path"].endswith(".LastCheckpoint") for c in checkpoints), config
        assert len(checkpoints) <= 1, config


def test_loggers_write_into_the_run_folder_and_wandb_follows_wandb_mode(
    tmp_path, monkeypatch, cifar10_dir
):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.chdir(tmp_path)
    cli = LightningSSLCLI(
        LightningModule,
        SSLDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        run=False,
        args=[
            f"--config={QUICKSTART}",
            "--trainer.default_root_dir=runs/x",
            f"--data.init_args.data_dir={cifar10_dir}",
        ],
    )
    csv_logger, wandb_logger = cli.trainer.loggers
    assert isinstance(csv_logger, CSVLogger) and isinstance(wandb_logger, WandbLogger)
    assert Path(csv_logger.log_dir) == tmp_path / "runs/x/csv/version_0"
    assert Path(wandb_logger.save_dir) == tmp_path / "runs/x"
    assert wandb_logger._offline is False and wandb_logger._wandb_init.get("mode") is None
    assert os.environ["WANDB_MODE"] == "online"
