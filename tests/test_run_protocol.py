"""benchmarks/run_protocol.py: when a run counts as finished, and the verdict beside the
published figure (read from the run's own metrics.csv and run.json, as the runner writes them)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_protocol", REPO / "benchmarks/run_protocol.py")
run_protocol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_protocol)


def _run(folder: Path, status: str, done: int, wanted: int, knn: list[float]) -> Path:
    (folder / "csv" / "version_0").mkdir(parents=True)
    rows = ["epoch,step,val/knn_top1"] + [f"{i},{i * 10},{v}" for i, v in enumerate(knn)]
    (folder / "csv" / "version_0" / "metrics.csv").write_text("\n".join(rows) + "\n")
    info = {"status": status, "epochs_completed": done, "max_epochs": wanted}
    (folder / "run.json").write_text(json.dumps(info))
    return folder


def test_a_max_time_stop_is_not_finished(tmp_path):
    # RunInfo writes status "finished" at the end of every fit, also one stopped by max_time.
    assert not run_protocol._finished(_run(tmp_path / "a", "finished", 3, 200, [0.5]))
    assert run_protocol._finished(_run(tmp_path / "b", "finished", 200, 200, [0.5]))
    assert not run_protocol._finished(tmp_path / "missing")


def test_verdicts_compare_the_best_knn_with_the_published_figure(tmp_path):
    published = yaml.safe_load(run_protocol.PUBLISHED.read_text())["lightly"]
    tol = published["tolerance"]
    simclr, byol = published["published"]["simclr"], published["published"]["byol"]
    runs = {
        # best over epochs within tolerance (the last epoch is lower: "best", as lightly reports)
        "simclr": _run(tmp_path / "simclr", "finished", 200, 200, [0.5, simclr / 100, 0.4]),
        "byol": _run(tmp_path / "byol", "finished", 200, 200, [(byol - tol - 0.5) / 100]),
        "moco": _run(tmp_path / "moco", "finished", 10, 200, [0.9]),
    }
    lines = run_protocol.published_verdicts("lightly", runs)
    by_method = {line.split()[0]: line for line in lines[1:]}
    assert by_method["simclr"].endswith("PASS") and f"ours {simclr:6.2f}" in by_method["simclr"]
    assert by_method["byol"].endswith("FAIL")
    assert by_method["moco"].endswith("not finished")
    assert set(by_method) == set(runs)


def test_max_time_format():
    assert run_protocol.max_time(59) == "00:00:00:59"
    assert run_protocol.max_time(90061) == "01:01:01:01"


@pytest.mark.parametrize("protocol", ["lightly", "solo-learn"])
def test_published_methods_are_protocol_methods(protocol):
    published = yaml.safe_load(run_protocol.PUBLISHED.read_text())[protocol]["published"]
    assert set(published) <= set(run_protocol.METHODS)
