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


def _probe_knn_run(folder: Path, probe: float, knn: float, done: int = 6) -> Path:
    """A run folder whose last epoch logged ``probe`` and ``knn`` (fractions, as the callbacks)."""
    (folder / "csv" / "version_0").mkdir(parents=True)
    rows = ["epoch,step,val/probe_top1,val/knn_top1", "0,10,0.1,0.1", f"1,20,{probe},{knn}"]
    (folder / "csv" / "version_0" / "metrics.csv").write_text("\n".join(rows) + "\n")
    info = {"status": "finished", "epochs_completed": done, "max_epochs": 6}
    (folder / "run.json").write_text(json.dumps(info))
    return folder


def test_a_method_learns_when_its_knn_beats_the_untrained_reference_by_the_margin(tmp_path):
    margin = run_protocol.LEARN_MARGIN / 100
    runs = {
        "simclr": _probe_knn_run(tmp_path / "simclr", 0.20, 0.32 + margin + 0.001),
        "byol": _probe_knn_run(tmp_path / "byol", 0.40, 0.32 + margin - 0.001),  # kNN too low
        "moco": _probe_knn_run(tmp_path / "moco", 0.40, 0.40, done=3),
        "untrained": _probe_knn_run(tmp_path / "untrained", 0.30, 0.32),
    }
    lines = run_protocol.learning_verdicts("cpu", runs)
    assert "> 32.0 + 2" in lines[0] and "probe top-1: 30.0" in lines[0] and "chance 10" in lines[0]
    verdicts = {line.split()[0]: line for line in lines[1:]}
    assert set(verdicts) == {"simclr", "byol", "moco"}
    # the probe is shown, not judged: below the reference's and still learning
    assert verdicts["simclr"].endswith(" LEARNS") and "probe  20.0" in verdicts["simclr"]
    assert verdicts["byol"].endswith("DOES NOT LEARN")
    assert verdicts["moco"].endswith("not finished")
    # without a finished reference there is nothing to judge against
    assert run_protocol.learning_verdicts("cpu", {"simclr": runs["simclr"]}) == []


def test_cpc_is_judged_against_its_own_untrained_config_and_the_others_against_simclrs(tmp_path):
    """CPC's features are the mean of its patch vectors: a random network's kNN on them is not
    the whole-image one's, so its bar is its own config at lr 0."""
    margin = run_protocol.LEARN_MARGIN / 100
    runs = {
        "byol": _probe_knn_run(tmp_path / "byol", 0.40, 0.32 + margin + 0.001),
        "cpc": _probe_knn_run(tmp_path / "cpc", 0.30, 0.32 + margin + 0.001),  # < its own bar
        "untrained": _probe_knn_run(tmp_path / "untrained", 0.30, 0.32),
        "untrained_cpc": _probe_knn_run(tmp_path / "untrained_cpc", 0.30, 0.40),
    }
    verdicts = {line.split()[0]: line for line in run_protocol.learning_verdicts("cpu", runs)[1:]}
    assert set(verdicts) == {"byol", "cpc"}
    assert verdicts["byol"].endswith(" LEARNS")
    assert "(untrained_cpc: kNN 40.0)" in verdicts["cpc"]
    assert verdicts["cpc"].endswith("DOES NOT LEARN")
    del runs["untrained_cpc"]
    lines = run_protocol.learning_verdicts("cpu", runs)
    assert next(line for line in lines if line.split()[0] == "cpc").endswith("no untrained_cpc run")
    # CPC alone with its own reference (what `--methods cpc` runs) is judged too
    alone = {"cpc": runs["cpc"], "untrained_cpc": tmp_path / "untrained_cpc"}
    lines = run_protocol.learning_verdicts("cpu", alone)
    assert "its reference's + 2" in lines[0] and lines[1].split()[0] == "cpc", lines
    assert lines[1].endswith("DOES NOT LEARN")
    jobs = run_protocol.jobs_for("cpu", ["cpc", "byol"])
    assert [name for name, _, _ in jobs] == ["cpc", "byol", "untrained", "untrained_cpc"]
    assert jobs[-1][1:] == ("cpc", ["--model.init_args.lr=0", "--trainer.max_epochs=1"])


def test_the_cpu_protocol_runs_the_untrained_reference_after_the_methods():
    jobs = run_protocol.jobs_for("cpu", ["simclr", "dino"])
    assert [name for name, _, _ in jobs] == ["simclr", "dino", "untrained"]
    assert jobs[-1][1:] == ("simclr", ["--model.init_args.lr=0"])
    assert run_protocol.jobs_for("lightly", ["simclr"]) == [("simclr", "simclr", [])]


def test_readme_table_judges_a_method_with_its_own_reference_when_there_is_one():
    spec = importlib.util.spec_from_file_location("cpu_table", REPO / "benchmarks/cpu_table.py")
    cpu_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu_table)
    columns = ["run", "method", "probe top-1 final", "probe top-5 final", "kNN top-1 final"]
    columns += ["epochs", "wall time", "images/s", "peak memory", "config", "commit", "device"]
    rows = [("byol", "BYOL", 35.0), ("cpc", "CPC", 35.0), ("untrained", "SimCLR", 32.0)]
    rows.append(("untrained_cpc", "CPC", 34.0))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for run, method, knn in rows:
        cells = [run, method, "30", "80", str(knn), "6", "1 min", "100", "1 MiB RSS", "c", "x"]
        cells.append("cpu")
        lines.append("| " + " | ".join(cells) + " |")
    table = cpu_table.readme_table("\n".join(lines), margin=2.0).splitlines()[2:]
    learns = {line.split(" | ")[0].strip("| "): line.split(" | ")[4] for line in table}
    assert learns == {
        "*untrained* (SimCLR config, lr 0)": "reference",
        "BYOL": "yes",  # 35 > 32 + 2
        "CPC": "**no**",  # 35 < 34 + 2, its own reference's
        "*untrained* (CPC config, lr 0)": "reference",
    }


def test_readme_cpu_table_is_the_one_generated_from_the_results_file():
    spec = importlib.util.spec_from_file_location("cpu_table", REPO / "benchmarks/cpu_table.py")
    cpu_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu_table)
    assert cpu_table.main(["--check"]) == 0, "run python benchmarks/cpu_table.py"
    table = cpu_table.readme_table(cpu_table.RESULTS.read_text(), run_protocol.LEARN_MARGIN)
    results = cpu_table.parse_table(cpu_table.RESULTS.read_text())
    # one README row per run of the results file, the reference (when there is one) first
    assert len(table.splitlines()) == 2 + len(results)
    if any(row["run"] == cpu_table.REFERENCE for row in results):
        assert table.splitlines()[2].startswith("| *untrained*")
