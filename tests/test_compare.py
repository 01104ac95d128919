"""``run.json`` and ``lightning-ssl compare`` on two real CLI runs, checked against their logs."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import wandb
from matplotlib.image import imread

from lightning_ssl.cli import run_cli
from lightning_ssl.commands import main
from lightning_ssl.compare import compare, load_run, plot, read_wandb_records

REPO = Path(__file__).resolve().parents[1]
EPOCHS, TRAIN, BATCH = 2, 128, 32
RUNS = {"lr2e-3": "2e-3", "lr5e-4": "5e-4"}


@pytest.fixture(scope="module")
def runs(cifar10_dir, tmp_path_factory) -> dict[str, Path]:
    """Two 2-epoch SimCLR runs of the quickstart config on 128 CIFAR-10 images, by name."""
    base = tmp_path_factory.mktemp("runs")
    roots = {}
    for name, lr in RUNS.items():
        root = base / name
        run_cli(
            [
                "fit",
                f"--config={REPO / 'configs/simclr/quickstart.yaml'}",
                f"--run_dir={root}",
                f"--trainer.max_epochs={EPOCHS}",
                "--trainer.log_every_n_steps=2",
                "--trainer.enable_progress_bar=false",
                f"--model.init_args.lr={lr}",
                f"--data.init_args.data_dir={cifar10_dir}",
                f"--data.init_args.train_subset={TRAIN}",
                "--data.init_args.val_subset=64",
                f"--data.init_args.batch_size={BATCH}",
                "--data.init_args.num_workers=0",
            ]
        )
        # WandbLogger reuses a W&B run left open in the process: close it, as a new process would.
        wandb.finish()
        roots[name] = root
    return roots


def _csv_rows(root: Path) -> list[dict[str, str]]:
    (metrics,) = root.glob("csv/version_*/metrics.csv")
    with open(metrics, newline="") as file:
        return list(csv.DictReader(file))


def _logged(root: Path, metric: str) -> list[tuple[int, float]]:
    """(epoch, value) of every value of ``metric`` in the run's metrics.csv, read independently."""
    return [(int(r["epoch"]), float(r[metric])) for r in _csv_rows(root) if r[metric]]


def _epoch_mean(values: list[tuple[int, float]]) -> list[float]:
    epochs = sorted({e for e, _ in values})
    return [float(np.mean([v for e, v in values if e == epoch])) for epoch in epochs]


def _table(markdown: str) -> list[dict[str, str]]:
    header, _, *lines = markdown.splitlines()
    names = [c.strip() for c in header.strip("|").split("|")]
    return [
        dict(zip(names, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines
    ]


def test_run_json_says_how_the_run_was_made(runs):
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    for root in runs.values():
        (log_dir,) = root.glob("csv/version_*")
        info = json.loads((log_dir / "run.json").read_text())
        assert json.loads((root / "run.json").read_text()) == info
        assert (info["method"], info["dataset"], info["backbone"]) == (
            "SimCLR",
            "CIFAR10DataModule",
            "timm:test_resnet",
        )
        assert (info["max_epochs"], info["epochs_completed"], info["status"]) == (
            EPOCHS,
            EPOCHS,
            "finished",
        )
        assert (info["global_batch_size"], info["batch_size_per_device"], info["world_size"]) == (
            BATCH,
            BATCH,
            1,
        )
        assert info["precision"] == "32-true"
        assert (
            info["config_hash"]
            == hashlib.sha256((log_dir / "config.yaml").read_bytes()).hexdigest()
        )
        assert info["git_commit"] == (head.stdout.strip() or None)
        assert isinstance(info["git_dirty"], bool) or info["git_commit"] is None
        assert "threads" in info["device"] and info["torch"] and info["lightning"]
        # drop_last: 128 images in batches of 32 are 4 full batches per epoch.
        assert info["train_images"] == EPOCHS * TRAIN
        assert 0 < info["train_time_s"] < info["wall_time_s"]
        assert info["images_per_s"] == pytest.approx(info["train_images"] / info["train_time_s"])
        assert info["peak_memory_kind"] == "cpu_max_rss" and 100 < info["peak_memory_mib"] < 1e5
        assert info["metrics"]["val/probe_top1"] == _logged(root, "val/probe_top1")[-1][1]
        assert info["metrics"]["train/loss"] == _logged(root, "train/loss")[-1][1]
        # The same metadata is in the W&B run's config (to compare in the UI after `wandb sync`).
        (wandb_run,) = root.glob("wandb/offline-run-*")
        configs = [
            r["config"]["update"] for r in read_wandb_records(wandb_run) if r["type"] == "config"
        ]
        last = [c["run_info"] for c in configs if "run_info" in c][-1]
        assert last["config_hash"] == info["config_hash"] and last["status"] == "finished"


def test_compare_numbers_are_the_logged_ones(runs):
    loaded = [load_run(root) for root in runs.values()]
    rows = json.loads(compare(loaded, "json"))
    table = _table(compare(loaded))
    assert [r["run"] for r in rows] == [r["run"] for r in table] == list(runs)
    for root, row, cells in zip(runs.values(), rows, table, strict=True):
        probe1, probe5 = _logged(root, "val/probe_top1"), _logged(root, "val/probe_top5")
        knn1 = _logged(root, "val/knn_top1")
        assert [e for e, _ in probe1] == list(range(EPOCHS))
        expected = {
            "probe_top1_final": probe1[-1][1],
            "probe_top1_best": max(v for _, v in probe1),
            "probe_top5_final": probe5[-1][1],
            "probe_top5_best": max(v for _, v in probe5),
            "knn_top1_final": knn1[-1][1],
            "knn_top1_best": max(v for _, v in knn1),
            "loss_final": _logged(root, "train/loss")[-1][1],
        }
        assert {k: row[k] for k in expected} == expected
        info = json.loads((root / "run.json").read_text())
        assert (row["epochs"], row["global_batch"], row["wall_time_s"]) == (
            EPOCHS,
            BATCH,
            info["wall_time_s"],
        )
        assert cells["probe top-1 final"] == f"{100 * expected['probe_top1_final']:.2f}"
        assert cells["probe top-1 best"] == f"{100 * expected['probe_top1_best']:.2f}"
        assert cells["probe top-5 final"] == f"{100 * expected['probe_top5_final']:.2f}"
        assert cells["kNN top-1 final"] == f"{100 * expected['knn_top1_final']:.2f}"
        assert cells["config"] == info["config_hash"][:8]
        assert cells["method"] == "SimCLR" and cells["dataset"] == "CIFAR10"
        assert cells["device"] == info["device"]


def test_plots_have_one_line_per_run_with_the_logged_values(runs, tmp_path):
    figures = plot([load_run(root) for root in runs.values()], tmp_path)
    expected = {
        "probe_top1.png": {
            name: [100 * v for _, v in _logged(root, "val/probe_top1")]
            for name, root in runs.items()
        },
        "loss.png": {name: _epoch_mean(_logged(root, "train/loss")) for name, root in runs.items()},
    }
    for filename, series in expected.items():
        lines = figures[filename].axes[0].lines
        assert [line.get_label() for line in lines] == list(series)
        for line, values in zip(lines, series.values(), strict=True):
            np.testing.assert_array_equal(line.get_xdata(), np.arange(1, EPOCHS + 1))
            np.testing.assert_allclose(line.get_ydata(), values, rtol=1e-12)
        png = tmp_path / filename
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = imread(png)[..., :3]
        assert pixels.shape[:2] == (504, 768)  # 6.4 x 4.2 inches at 120 dpi
        # Both runs' line colours (matplotlib's first two) are drawn in the saved image.
        for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
            drawn = np.all(np.abs(pixels * 255 - np.array(colour)) < 3, axis=-1).sum()
            assert drawn > 200, (filename, colour, drawn)


def test_wandb_offline_run_reads_like_the_csv_logs(runs):
    for root in runs.values():
        (wandb_dir,) = root.glob("wandb/offline-run-*")
        from_wandb, from_csv = load_run(wandb_dir), load_run(root)
        assert from_wandb.source == "wandb" and from_csv.source == "csv"
        assert from_wandb.final("train/loss") == _logged(root, "train/loss")[-1][1]
        for metric in ("val/probe_top1", "val/knn_top1", "train/loss"):
            assert from_wandb.values(metric) == from_csv.values(metric), metric
        assert from_wandb.info["config_hash"] == from_csv.info["config_hash"]
        # A CSV version folder is a run too.
        (version,) = root.glob("csv/version_*")
        assert load_run(version).values("val/probe_top1") == from_csv.values("val/probe_top1")


def test_compare_command_prints_the_table_and_writes_the_plots(runs, tmp_path, capsys):
    out = tmp_path / "plots"
    with pytest.raises(SystemExit) as exit_:
        main(["compare", *map(str, runs.values()), "--out", str(out)])
    assert exit_.value.code == 0
    table = _table(capsys.readouterr().out.strip())
    assert [row["run"] for row in table] == list(runs)
    assert sorted(p.name for p in out.iterdir()) == ["loss.png", "probe_top1.png"]
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(tmp_path / "missing")])
    assert exit_.value.code == 1


def test_versions_of_a_resumed_run_are_one_history(tmp_path):
    """CSVLogger starts version_1 on resume: it replaces version_0 from its first step on."""
    for version, text in {
        0: "epoch,step,train/loss,val/probe_top1\n0,3,2.0,\n0,7,,0.25\n1,11,1.5,\n",
        1: "epoch,step,train/loss,val/probe_top1\n1,11,1.25,\n1,15,,0.5\n2,19,1.0,\n2,23,,0.4\n",
    }.items():
        folder = tmp_path / f"csv/version_{version}"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(text)
    run = load_run(tmp_path)
    # Step 11 was logged by both processes: the resumed one's value is kept.
    assert run.values("train/loss") == [(0, 2.0), (1, 1.25), (2, 1.0)]
    assert run.per_epoch("val/probe_top1") == {0: 0.25, 1: 0.5, 2: 0.4}
    assert run.per_epoch("train/loss", "mean") == {0: 2.0, 1: 1.25, 2: 1.0}
    assert (run.final("val/probe_top1"), run.best("val/probe_top1")) == (0.4, 0.5)
