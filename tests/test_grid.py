"""``lightning-ssl grid``: the command lines of a grid, and a real grid run end to end."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from lightning_ssl.compare import load_run, read_wandb_records
from lightning_ssl.compare import main as compare_main
from lightning_ssl.grid import Point, main, run_points, split_values

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/simclr/quickstart.yaml"


def _option(argv: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    return value


def test_dry_run_prints_the_command_of_every_point(tmp_path, capsys):
    root = tmp_path / "grid"
    code = main(
        [
            f"--config={CONFIG}",
            "--set",
            "model.init_args.lr=0.1,0.3",
            "--set",
            "data.init_args.batch_size=128,256",
            f"--root={root}",
            "--dry-run",
            "--",
            "--trainer.max_epochs=1",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    points = [("0.1", "128"), ("0.1", "256"), ("0.3", "128"), ("0.3", "256")]
    assert len(lines) == len(points)
    for line, (lr, batch) in zip(lines, points, strict=True):
        argv = shlex.split(line)
        name = f"lr={lr}_batch_size={batch}"
        run_dir = str(root / "simclr-quickstart" / name)
        assert argv[:4] == [sys.executable, "-m", "lightning_ssl", "fit"]
        assert _option(argv, "config") == str(CONFIG)
        assert _option(argv, "trainer.default_root_dir") == run_dir
        assert _option(argv, "model.init_args.lr") == lr
        assert _option(argv, "data.init_args.batch_size") == batch
        assert argv[-1] == "--trainer.max_epochs=1"  # extra arguments last: they win
        csv_logger, wandb_logger = json.loads(_option(argv, "trainer.logger"))
        assert csv_logger["init_args"] == {"save_dir": run_dir, "name": "csv"}
        init = wandb_logger["init_args"]
        assert init["save_dir"] == run_dir and init["group"] == "simclr-quickstart"
        assert (init["name"], init["tags"]) == (name, [f"lr={lr}", f"batch_size={batch}"])
        assert not root.exists(), "a dry run runs nothing"


def test_values_split_at_top_level_commas_only():
    assert split_values("0.1,0.3") == ["0.1", "0.3"]
    assert split_values("[0.9,0.99],[0.9,0.999]") == ["[0.9,0.99]", "[0.9,0.999]"]
    assert split_values('"a,b",c') == ['"a,b"', "c"]


def test_points_run_one_after_the_other_past_a_failure(tmp_path, capsys):
    order = tmp_path / "order.txt"

    def point(name: str, exit_code: int) -> Point:
        code = f"open({str(order)!r}, 'a').write({name!r}); print('out {name}'); exit({exit_code})"
        return Point(name, {}, tmp_path / name, [sys.executable, "-c", code])

    results = run_points([point("a", 3), point("b", 0)])
    assert [(p.name, code) for p, code in results] == [("a", 3), ("b", 0)]
    assert order.read_text() == "ab"  # in order, the second after the failed first
    assert "out a" in (tmp_path / "a/grid.log").read_text()
    status = capsys.readouterr().out
    assert "[1/2] a: FAILED (exit 3)" in status and "[2/2] b: ok" in status


def test_a_real_grid_runs_and_prints_the_comparison(cifar10_dir, tmp_path, capsys):
    root = tmp_path / "grid"
    code = main(
        [
            f"--config={CONFIG}",
            "--set=model.init_args.temperature=0.2,0.5",
            f"--root={root}",
            "--name=tiny",
            "--",
            f"--data.init_args.data_dir={cifar10_dir}",
            "--data.init_args.train_subset=64",
            "--data.init_args.val_subset=32",
            "--data.init_args.batch_size=32",
            "--data.init_args.num_workers=0",
            "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    table = [ln for ln in out.splitlines() if ln.startswith("| temperature=")]
    assert [ln.split("|")[1].strip() for ln in table] == ["temperature=0.2", "temperature=0.5"]
    assert sorted(p.name for p in (root / "tiny/compare").iterdir()) == [
        "loss.png",
        "probe_top1.png",
    ]
    # The grid's folder stands for its runs in `lightning-ssl compare`.
    assert compare_main([str(root / "tiny"), "--out", str(tmp_path / "again")]) == 0
    table_lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert capsys.readouterr().out.strip().splitlines() == table_lines
    for value in ("0.2", "0.5"):
        run_dir = root / f"tiny/temperature={value}"
        run = load_run(run_dir)
        assert run.info["status"] == "finished" and run.info["epochs_completed"] == 1
        assert run.config["model"]["init_args"]["temperature"] == float(value)
        (wandb_run,) = run_dir.glob("wandb/offline-run-*")
        (header,) = [r["run"] for r in read_wandb_records(wandb_run) if r["type"] == "run"]
        assert (header["run_group"], header["display_name"]) == ("tiny", f"temperature={value}")
        assert header["tags"] == [f"temperature={value}"]
