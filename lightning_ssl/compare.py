"""``lightning-ssl compare``: a table and plots of finished (or running) runs.

A run is read from its folder: the ``default_root_dir`` of ``lightning-ssl fit`` (``run.json``,
the CSV logger's ``csv/version_*/metrics.csv`` and LightningCLI's ``config.yaml``), one CSV
version folder, or a W&B offline run folder (``wandb/offline-run-*``). W&B runs are read with
``wandb leet inspect --json`` (the W&B CLI's reader of the ``.wandb`` transaction log; W&B 0.31
has no Python reader); the CSV logs are preferred when a folder has both. Versions of a resumed
run (``version_0``, ``version_1``, ...) are read in order, as one history: a version's rows
replace those of earlier versions from its first step on.

Final means the last logged value, best the maximum over epochs. Plots have one line per run
against the epoch (1-based: the value after that many epochs): ``probe_top1.png`` (validation
probe top-1, %) and ``loss.png`` (training loss averaged over each epoch's logged steps).

Example:
    ``lightning-ssl compare runs/simclr-cifar10 runs/byol-cifar10 --out compare``

A folder that is not a run but holds runs (``lightning-ssl grid``'s ``ROOT/NAME``) stands for them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LOSS = "train/loss"
PROBE_TOP1 = "val/probe_top1"
PROBE_TOP5 = "val/probe_top5"
KNN_TOP1 = "val/knn_top1"
KNN_TOP5 = "val/knn_top5"
RUN_FILE = "run.json"  # written by lightning_ssl.callbacks.RunInfo


@dataclass
class Run:
    """One run: its metadata (``run.json``), its config and its logged rows.

    ``rows`` are in logging order, each with ``epoch``, ``step`` and the metrics logged together.
    """

    path: Path
    name: str
    info: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, float]] = field(default_factory=list)
    source: str = "csv"

    def values(self, metric: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` of every logged value of ``metric``, in logging order."""
        return [(int(r["epoch"]), r[metric]) for r in self.rows if metric in r]

    def per_epoch(self, metric: str, reduce: str = "last") -> dict[int, float]:
        """One value per epoch: the ``last`` logged one or the ``mean`` of those logged."""
        groups: dict[int, list[float]] = {}
        for epoch, value in self.values(metric):
            groups.setdefault(epoch, []).append(value)
        if reduce == "mean":
            return {e: sum(v) / len(v) for e, v in sorted(groups.items())}
        return {e: v[-1] for e, v in sorted(groups.items())}

    def final(self, metric: str) -> float | None:
        """Last logged value of ``metric``."""
        values = self.values(metric)
        return values[-1][1] if values else None

    def best(self, metric: str) -> float | None:
        """Largest per-epoch value of ``metric``."""
        return max(self.per_epoch(metric).values(), default=None)


# ---------------------------------------------------------------------- reading runs
def load_run(path: str | os.PathLike) -> Run:
    """Read a run folder: a ``default_root_dir``, a CSV ``version_*`` folder or a W&B run.

    Example:
        >>> run = load_run("runs/quickstart")  # doctest: +SKIP
        >>> run.final("val/probe_top1"), run.info["config_hash"]  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".wandb":
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder {path}")
    if any(path.glob("*.wandb")):
        return _load_wandb(path)
    versions = _csv_versions(path)
    if versions:
        return _load_csv(path, versions)
    wandb_runs = sorted(path.glob("wandb/offline-run-*")) + sorted(path.glob("wandb/run-*"))
    if wandb_runs:
        return _load_wandb(max(wandb_runs, key=lambda p: p.name.split("-", 2)[-1]))
    raise FileNotFoundError(f"{path} holds no metrics.csv and no W&B run")


def _is_run(path: Path) -> bool:
    return (
        (path / RUN_FILE).is_file()
        or any(path.glob("*.wandb"))
        or bool(_csv_versions(path))
        or any(path.glob("wandb/*run-*"))
    )


def find_runs(path: str | os.PathLike) -> list[Path]:
    """``path`` if it is a run, else the runs directly inside it (a grid's folder), by name.

    Example:
        >>> find_runs("runs/grid/simclr-quickstart")  # doctest: +SKIP
        [PosixPath('runs/grid/simclr-quickstart/lr=0.1'), ...]
    """
    path = Path(path)
    if not path.is_dir() or _is_run(path):
        return [path]
    runs = sorted(child for child in path.iterdir() if child.is_dir() and _is_run(child))
    return runs or [path]


def _csv_versions(path: Path) -> list[Path]:
    """CSV logger folders of the run at ``path``, oldest version first."""
    if (path / "metrics.csv").is_file():
        return [path]

    def version(folder: Path) -> int:
        suffix = folder.name.removeprefix("version_")
        return int(suffix) if suffix.isdigit() else -1

    # CSVLogger layout: <save_dir>/<name>/version_<n>/metrics.csv
    folders = [m.parent for m in path.glob("*/version_*/metrics.csv")]
    return sorted(folders, key=lambda f: (f.parent.name, version(f)))


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a CSVLogger ``metrics.csv`` with their non-empty cells as floats."""
    with open(path, newline="") as file:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(file)
        ]


def _load_csv(path: Path, versions: list[Path]) -> Run:
    rows: list[dict[str, float]] = []
    for folder in versions:
        new = read_metrics_csv(folder / "metrics.csv")
        if new:
            # A resumed (or restarted) process re-does the steps from its first one on: its rows
            # replace the earlier version's from there.
            first = min(row.get("step", 0.0) for row in new)
            rows = [row for row in rows if row.get("step", 0.0) < first]
        rows += new
    info_files = [f / RUN_FILE for f in versions if (f / RUN_FILE).is_file()]
    info_file = info_files[-1] if info_files else path / RUN_FILE
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    config_files = [f / "config.yaml" for f in versions if (f / "config.yaml").is_file()]
    config = yaml.safe_load(config_files[-1].read_text()) if config_files else {}
    name = info.get("name") or (path.parent.parent.name if path == versions[0] else path.name)
    return Run(path=path, name=name, info=info, config=config or {}, rows=rows, source="csv")


def _wandb_executable() -> str:
    local = Path(sys.executable).with_name("wandb")
    found = str(local) if local.is_file() else shutil.which("wandb")
    if found is None:
        raise RuntimeError("reading W&B runs needs the `wandb` command (pip install wandb)")
    return found


def read_wandb_records(run_dir: Path) -> list[dict[str, Any]]:
    """Records of a W&B run's ``.wandb`` log, as printed by ``wandb leet inspect --json``."""
    result = subprocess.run(
        [_wandb_executable(), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"`wandb leet inspect --json {run_dir}` failed (wandb>=0.31 is needed to read W&B "
            f"runs): {result.stderr.strip()[-500:]}"
        )
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _load_wandb(run_dir: Path) -> Run:
    config: dict[str, Any] = {}
    rows: list[dict[str, float]] = []
    for record in read_wandb_records(run_dir):
        kind = record.get("type")
        if kind == "config":
            config.update(record["config"].get("update", {}))
        elif kind == "history":
            item = record["history"]["item"]
            row = {
                key: float(value)
                for key, value in item.items()
                if not key.startswith("_") and isinstance(value, (int, float))
            }
            if "trainer/global_step" in row:
                row["step"] = row.pop("trainer/global_step")
            if "epoch" in row:
                rows.append(row)
    info = config.pop("run_info", None) or {}
    name = info.get("name") or run_dir.name
    return Run(path=run_dir, name=name, info=info, config=config, rows=rows, source="wandb")


# ---------------------------------------------------------------------- the table
def _config_value(run: Run, section: str, key: str) -> Any:
    """``key`` of the saved LightningCLI config (nested) or of a W&B config (flat)."""
    nested = run.config.get(section)
    if isinstance(nested, dict):
        return (nested.get("init_args") or {}).get(key)
    return run.config.get(key)


def summary(run: Run) -> dict[str, Any]:
    """The comparison row of ``run`` as raw values (fractions, seconds, MiB).

    Example:
        >>> summary(load_run("runs/quickstart"))["probe_top1_best"]  # doctest: +SKIP
        0.375
    """
    info = run.info

    def class_name(section: str) -> str | None:
        class_path = (run.config.get(section) or {}).get("class_path", "")
        return class_path.rsplit(".", 1)[-1] or None

    epochs = info.get("epochs_completed")
    if epochs is None and run.rows:
        epochs = int(max(r["epoch"] for r in run.rows)) + 1
    return {
        "run": run.name,
        "method": info.get("method") or class_name("model"),
        "dataset": info.get("dataset") or class_name("data"),
        "backbone": info.get("backbone") or _config_value(run, "model", "backbone"),
        "epochs": epochs,
        "global_batch": info.get("global_batch_size"),
        "probe_top1_final": run.final(PROBE_TOP1),
        "probe_top1_best": run.best(PROBE_TOP1),
        "probe_top5_final": run.final(PROBE_TOP5),
        "probe_top5_best": run.best(PROBE_TOP5),
        "knn_top1_final": run.final(KNN_TOP1),
        "knn_top1_best": run.best(KNN_TOP1),
        "loss_final": run.final(LOSS),
        "wall_time_s": info.get("wall_time_s"),
        "images_per_s": info.get("images_per_s"),
        "peak_memory_mib": info.get("peak_memory_mib"),
        "peak_memory_kind": info.get("peak_memory_kind"),
        "config_hash": info.get("config_hash"),
        "git_commit": info.get("git_commit"),
        "git_dirty": info.get("git_dirty"),
        "device": info.get("device"),
        "source": run.source,
        "path": str(run.path),
    }


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def _memory(row: dict[str, Any]) -> str:
    if row["peak_memory_mib"] is None:
        return ""
    kind = {"cuda_max_allocated": "GPU", "cpu_max_rss": "RSS"}.get(row["peak_memory_kind"], "")
    return f"{row['peak_memory_mib']:.0f} MiB {kind}".strip()


def _commit(row: dict[str, Any]) -> str:
    commit = row["git_commit"]
    return "" if not commit else commit[:8] + ("+dirty" if row["git_dirty"] else "")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


#: Markdown columns: header -> formatter of a :func:`summary` row.
COLUMNS: dict[str, Callable[[dict[str, Any]], str]] = {
    "run": lambda r: r["run"],
    "method": lambda r: _text(r["method"]),
    "dataset": lambda r: _text(r["dataset"]).removesuffix("DataModule"),
    "backbone": lambda r: _text(r["backbone"]),
    "epochs": lambda r: _text(r["epochs"]),
    "global batch": lambda r: _text(r["global_batch"]),
    "probe top-1 final": lambda r: _percent(r["probe_top1_final"]),
    "probe top-1 best": lambda r: _percent(r["probe_top1_best"]),
    "probe top-5 final": lambda r: _percent(r["probe_top5_final"]),
    "probe top-5 best": lambda r: _percent(r["probe_top5_best"]),
    "kNN top-1 final": lambda r: _percent(r["knn_top1_final"]),
    "kNN top-1 best": lambda r: _percent(r["knn_top1_best"]),
    "wall time": lambda r: _duration(r["wall_time_s"]),
    "images/s": lambda r: "" if r["images_per_s"] is None else f"{r['images_per_s']:.1f}",
    "peak memory": _memory,
    "config": lambda r: _text(r["config_hash"])[:8],
    "commit": _commit,
    "device": lambda r: _text(r["device"]),
}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`summary` rows (accuracies in %)."""
    cells = [[format_(row).replace("|", "\\|") for format_ in COLUMNS.values()] for row in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(COLUMNS)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(list(COLUMNS)), separator, *(line(c) for c in cells)])


def compare(runs: Sequence[Run], fmt: str = "markdown") -> str:
    """The comparison of ``runs``: a markdown table, or raw values as ``csv`` or ``json``.

    Example:
        >>> print(compare([load_run("runs/a"), load_run("runs/b")]))  # doctest: +SKIP
    """
    rows = [summary(run) for run in _unique_names(runs)]
    if fmt == "markdown":
        return markdown_table(rows)
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    raise ValueError(f"unknown format {fmt!r}: markdown, csv or json")


def _unique_names(runs: Sequence[Run]) -> list[Run]:
    """Runs named by their paths when their names clash (same config run twice)."""
    names = [run.name for run in runs]
    if len(set(names)) == len(names):
        return list(runs)
    return [Run(r.path, str(r.path), r.info, r.config, r.rows, r.source) for r in runs]


# ---------------------------------------------------------------------- the plots
PLOTS = {
    "probe_top1.png": (PROBE_TOP1, "last", 100.0, "probe top-1 (%)"),
    "loss.png": (LOSS, "mean", 1.0, "training loss (epoch mean)"),
}


def plot(runs: Sequence[Run], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write ``probe_top1.png`` and ``loss.png`` into ``out_dir``: one line per run (label: run
    name, x: epochs completed); return the matplotlib figures by file name.

    Example:
        >>> figures = plot([load_run("runs/a"), load_run("runs/b")], "compare")  # doctest: +SKIP
    """
    # Figure without pyplot: no global backend or figure registry, safe in threads and tests.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {}
    for filename, (metric, reduce, scale, label) in PLOTS.items():
        figure = Figure(figsize=(6.4, 4.2), layout="constrained")
        axes = figure.add_subplot()
        for run in _unique_names(runs):
            series = run.per_epoch(metric, reduce)
            if series:
                epochs = [e + 1 for e in series]
                axes.plot(epochs, [scale * v for v in series.values()], marker="o", label=run.name)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize="small")
        figure.savefig(out / filename, dpi=120)
        figures[filename] = figure
    return figures


# ---------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    """``lightning-ssl compare RUN [RUN ...] [--out DIR] [--format markdown|csv|json]``."""
    parser = argparse.ArgumentParser(
        prog="lightning-ssl compare",
        description="Compare runs: print a table and write probe_top1.png and loss.png.",
    )
    parser.add_argument(
        "runs", nargs="+", help="run folders (default_root_dir, CSV or W&B run) or grid folders"
    )
    parser.add_argument("--out", default="compare", help="folder of the plots (default: compare)")
    parser.add_argument("--format", default="markdown", choices=["markdown", "csv", "json"])
    args = parser.parse_args(argv)
    try:
        runs = [load_run(run) for path in args.runs for run in find_runs(path)]
    except (FileNotFoundError, RuntimeError) as error:
        print(f"lightning-ssl compare: {error}", file=sys.stderr)
        return 1
    print(compare(runs, args.format))
    plot(runs, args.out)
    written = ", ".join(str(Path(args.out) / name) for name in PLOTS)
    print(f"plots: {written}", file=sys.stderr)
    return 0
