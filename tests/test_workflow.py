"""A researcher's day, scripted as a user types it: fit -> Ctrl-C -> resume -> validate -> a second
run in another folder -> compare. One row per run, with the figures of the raw ``metrics.csv``
files, read from the CSV logs and from the W&B offline runs alike (issue 11)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_ssl.compare import main as compare_main
from tests.cli_run import lightning_ssl_in_process

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs/simclr/quickstart.yaml"
EXTRA_EPOCHS = 2  # trained after the resume


def tiny(cifar10_dir: Path) -> list[str]:
    """The shipped quickstart config (one worker process) on 128 images: 4 steps an epoch."""
    return [
        f"--config={QUICKSTART}",
        f"--data.init_args.data_dir={cifar10_dir}",
        "--data.init_args.train_subset=128",
        "--data.init_args.val_subset=64",
        "--data.init_args.batch_size=32",
        "--trainer.log_every_n_steps=2",
        "--trainer.enable_progress_bar=false",
    ]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The commands after the Ctrl-C run the console script's main in this process (each fresh
    interpreter only added 5-10 s of imports); the interrupted fit is a real process."""
    result = lightning_ssl_in_process(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def fit_until_interrupted(args: list[str], run_dir: Path, cwd: Path) -> int:
    """Start a long fit, press Ctrl-C (SIGINT) once its first checkpoint exists; return the
    epoch that checkpoint completed."""
    last = run_dir / "checkpoints/last.ckpt"
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_ssl", "fit", *args, "--trainer.max_epochs=1000"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 500
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and last.exists(), stderr[-3000:]
    return int(torch.load(last, map_location="cpu", weights_only=True)["epoch"])


@pytest.fixture(scope="module")
def day(cifar10_dir, tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("day")
    env_mode = os.environ.get("WANDB_MODE")
    assert env_mode in (None, "offline"), "this test writes offline W&B runs"
    args = tiny(cifar10_dir)
    run_a, run_b = cwd / "runs/a", cwd / "runs/b"
    interrupted_epoch = fit_until_interrupted([*args, "--run_dir=runs/a"], run_a, cwd)
    epochs_a = interrupted_epoch + 1 + EXTRA_EPOCHS
    cli("fit", *args, "--run_dir=runs/a", "--ckpt_path=last", f"--trainer.max_epochs={epochs_a}",
        cwd=cwd)  # fmt: skip
    cli("validate", *args, "--run_dir=runs/a", "--ckpt_path=last", cwd=cwd)
    cli("fit", *args, "--trainer.default_root_dir=runs/b", "--trainer.max_epochs=2", cwd=cwd)
    tables = {}
    for source in ("csv", "wandb"):
        out = io.StringIO()
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out):
            code = compare_main(["runs/a", "runs/b", "--format=json", f"--source={source}",
                                 f"--out=plots-{source}"])  # fmt: skip
        assert code == 0
        tables[source] = json.loads(out.getvalue())
    return {
        "a": run_a,
        "b": run_b,
        "interrupted_epoch": interrupted_epoch,
        "epochs_a": epochs_a,
        "tables": tables,
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def logged(rows: list[dict[str, str]], metric: str) -> list[tuple[int, float]]:
    return [(int(r["epoch"]), float(r[metric])) for r in rows if r.get(metric)]


def test_interrupted_run_resumes_in_its_folder_as_one_run(day):
    run_a = day["a"]
    versions = sorted((run_a / "csv").glob("version_*"))
    assert [v.name for v in versions] == ["version_0", "version_1"]
    # validate wrote beside the run, not a third history version.
    assert (run_a / "evaluations/validate/version_0/metrics.csv").is_file()
    info = json.loads((run_a / "run.json").read_text())
    assert (info["name"], info["epochs_completed"], info["status"]) == ("a", day["epochs_a"],
                                                                      "finished")  # fmt: skip
    assert [e["subcommand"] for e in info["evaluations"]] == ["validate"]
    # Both processes logged into the one W&B run the folder names.
    run_id = (run_a / "wandb_id").read_text().strip()
    segments = sorted((run_a / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and all(s.name.endswith(run_id) for s in segments)
    assert json.loads((day["b"] / "run.json").read_text())["name"] == "b"
    assert list((day["b"] / "csv").glob("version_*/metrics.csv"))


def expected_row(run_dir: Path, resumed_after: int | None) -> dict[str, float]:
    """The figures of a run, read from its raw metrics.csv files: epochs up to the checkpoint
    from the interrupted process, later ones from the resumed one."""
    versions = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    history: dict[str, dict[int, float]] = {}
    for index, path in enumerate(versions):
        for metric in ("val/probe_top1", "val/knn_top1", "train/loss"):
            for epoch, value in logged(read_csv(path), metric):
                keep = resumed_after is None or (epoch <= resumed_after) == (index == 0)
                if keep:
                    history.setdefault(metric, {})[epoch] = value
    probe, knn = history["val/probe_top1"], history["val/knn_top1"]
    last_rows = read_csv(versions[-1])
    row = {
        "epochs": max(probe) + 1,
        "probe_top1_final": probe[max(probe)],
        "probe_top1_best": max(probe.values()),
        "knn_top1_final": knn[max(knn)],
        "loss_final": logged(last_rows, "train/loss")[-1][1],
    }
    evaluation = run_dir / "evaluations/validate/version_0/metrics.csv"
    if evaluation.is_file():
        (validate,) = read_csv(evaluation)
        row["validate_probe_top1"] = float(validate["val/probe_top1"])
        row["validate_knn_top1"] = float(validate["val/knn_top1"])
    return row, sorted(probe)


@pytest.mark.parametrize("source", ["csv", "wandb"])
def test_compare_gives_one_row_per_run_with_the_logged_figures(day, source):
    rows = day["tables"][source]
    assert [r["run"] for r in rows] == ["a", "b"]
    for row, run_dir, resumed_after in (
        (rows[0], day["a"], day["interrupted_epoch"]),
        (rows[1], day["b"], None),
    ):
        expected, _ = expected_row(run_dir, resumed_after)
        assert {k: row[k] for k in expected} == expected, source
    assert rows[0]["epochs"] == day["epochs_a"] and rows[0]["segments"] == 2
    assert rows[1]["validate_probe_top1"] is None


@pytest.mark.xfail(
    strict=True,
    reason="known gap: the epoch whose validation a Ctrl-C interrupted is not validated again "
    "on resume (Lightning's restart rules); its probe/kNN figures are missing from the history",
)
def test_every_epoch_of_the_resumed_run_has_its_validation_figures(day):
    for run_dir, resumed_after in ((day["a"], day["interrupted_epoch"]), (day["b"], None)):
        expected, epochs = expected_row(run_dir, resumed_after)
        assert epochs == list(range(expected["epochs"]))
