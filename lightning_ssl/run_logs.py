"""Reading a run's logs: one :class:`Run` per run folder, from its CSV logs or its W&B run.

A run folder (see :mod:`lightning_ssl.run_folder`) holds the training history in
``csv/version_*`` (one version per process: a resumed run has several) and in W&B segments
``wandb/offline-run-*-<id>`` of one W&B id (``wandb_id``); ``validate``/``test`` results live
beside it (``evaluations/``, and ``run.json``'s ``evaluations`` list) and never enter the history.
Segments of a resumed run are read in order, as one history: a segment's rows replace those of
earlier segments from its first step on (the steps the interrupted process logged after its
last checkpoint are done again).

W&B runs are read with ``wandb leet inspect --json`` (the W&B CLI's reader of the ``.wandb``
transaction log; W&B 0.31 has no Python reader).

Examples:
    >>> run = load_run("runs/quickstart")  # doctest: +SKIP
    >>> run.final("val/probe_top1"), run.info["config_hash"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_ssl.run_folder import FIT_LOGS, RUN_FILE, read_run_info, stored_wandb_id

SOURCES = ("auto", "csv", "wandb")


@dataclass
class Run:
    """One run: its metadata (``run.json``), its config and its logged rows.

    ``rows`` are in logging order, each with ``epoch``, ``step`` and the metrics logged together;
    ``segments`` counts the processes (resumes) merged into them; ``evaluations`` are the
    validate/test results recorded beside the run.
    """

    path: Path
    name: str
    info: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, float]] = field(default_factory=list)
    source: str = "csv"
    segments: int = 1
    evaluations: list[dict[str, Any]] = field(default_factory=list)

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

    def evaluation(self, subcommand: str, metric: str) -> float | None:
        """``metric`` of the latest ``validate``/``test`` recorded beside the run."""
        for entry in reversed(self.evaluations):
            if entry.get("subcommand") == subcommand and metric in entry.get("metrics", {}):
                return entry["metrics"][metric]
        return None


def merge_segments(segments: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """One history out of the rows of consecutive processes of a run (oldest first): each
    segment's rows replace the earlier ones from its first step on.

    Examples:
        >>> merge_segments([[{"step": 1.0}, {"step": 3.0}], [{"step": 3.0, "x": 1.0}]])
        [{'step': 1.0}, {'step': 3.0, 'x': 1.0}]
    """
    rows: list[dict[str, float]] = []
    for new in segments:
        if new:
            first = min(row.get("step", 0.0) for row in new)
            rows = [row for row in rows if row.get("step", 0.0) < first]
        rows += new
    return rows


# ---------------------------------------------------------------------- finding runs
def _is_wandb_segment(path: Path) -> bool:
    return any(path.glob("*.wandb"))


def _csv_versions(path: Path) -> list[Path]:
    """CSV logger folders of the training history at ``path``, oldest version first."""
    if (path / "metrics.csv").is_file():
        return [path]

    def version(folder: Path) -> int:
        suffix = folder.name.removeprefix("version_")
        return int(suffix) if suffix.isdigit() else -1

    # CSVLogger layout: <save_dir>/<name>/version_<n>/metrics.csv (evaluations/ is deeper)
    folders = [m.parent for m in path.glob("*/version_*/metrics.csv")]
    return sorted(folders, key=lambda f: (f.parent.name, version(f)))


_SEGMENT = re.compile(r"run-(\d{8}_\d{6})-(\w+)$")


def _wandb_segments(folder: Path, run_id: str | None = None) -> list[Path]:
    """W&B run folders (``[offline-]run-<time>-<id>``) in ``folder`` of the run ``run_id``
    (default: the newest run's id), oldest first: a resumed run has one segment per process."""
    found = [
        (match.groups(), p)
        for p in folder.glob("*run-*")
        if (match := _SEGMENT.search(p.name)) and _is_wandb_segment(p)
    ]
    if not found:
        return []
    found.sort()
    run_id = run_id or found[-1][0][1]
    return [p for (_, segment_id), p in found if segment_id == run_id]


def _is_run(path: Path) -> bool:
    return (
        (path / RUN_FILE).is_file()
        or _is_wandb_segment(path)
        or bool(_csv_versions(path))
        or bool(_wandb_segments(path / "wandb"))
    )


def find_runs(path: str | os.PathLike) -> list[Path]:
    """``path`` if it is a run, else the runs directly inside it (a grid's folder), by name.

    Examples:
        >>> find_runs("runs/grid/simclr-quickstart")  # doctest: +SKIP
        [PosixPath('runs/grid/simclr-quickstart/lr=0.1'), ...]
    """
    path = Path(path)
    if not path.is_dir() or _is_run(path):
        return [path]
    runs = sorted(child for child in path.iterdir() if child.is_dir() and _is_run(child))
    return runs or [path]


# ---------------------------------------------------------------------- reading
def load_run(path: str | os.PathLike, source: str = "auto") -> Run:
    """Read a run: a run folder, a CSV ``version_*`` folder or a W&B run (with its resumed
    segments). ``source``: ``csv``, ``wandb`` or ``auto`` (CSV when the folder has both).

    Examples:
        >>> run = load_run("runs/quickstart", source="wandb")  # doctest: +SKIP
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: {', '.join(SOURCES)}")
    path = Path(path)
    if path.is_file() and path.suffix == ".wandb":
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder {path}")
    if _is_wandb_segment(path):
        match = _SEGMENT.search(path.name)
        segments = _wandb_segments(path.parent, match.group(2)) if match else [path]
        return _load_wandb(path, segments)
    versions = _csv_versions(path)
    if versions and source != "wandb":
        return _load_csv(path, versions)
    segments = _wandb_segments(path / "wandb", stored_wandb_id(path))
    if segments and source != "csv":
        return _load_wandb(path, segments)
    raise FileNotFoundError(f"{path} holds no {'W&B run' if source == 'wandb' else 'metrics'}")


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a CSVLogger ``metrics.csv`` with their non-empty cells as floats."""
    with open(path, newline="") as file:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(file)
        ]


def _load_csv(path: Path, versions: list[Path]) -> Run:
    rows = merge_segments([read_metrics_csv(folder / "metrics.csv") for folder in versions])
    info = _run_info(path, versions)
    config_files = [f / "config.yaml" for f in versions if (f / "config.yaml").is_file()]
    config = yaml.safe_load(config_files[-1].read_text()) if config_files else {}
    name = info.get("name") or (path.parent.parent.name if path == versions[0] else path.name)
    return Run(path, name, info, config or {}, rows, "csv", len(versions), _evaluations(path, info))


def _run_info(path: Path, versions: list[Path]) -> dict[str, Any]:
    """The run folder's ``run.json``, else the newest version's."""
    info = read_run_info(path)
    for folder in reversed(versions):
        info = info or read_run_info(folder)
    return info


def _evaluations(path: Path, info: dict[str, Any]) -> list[dict[str, Any]]:
    """validate/test results recorded in the run folder's ``run.json`` (``path``, or the run
    folder above a version or W&B folder), else in ``info``."""
    for folder in (path, *path.parents[:2]):
        if evaluations := read_run_info(folder).get("evaluations"):
            return list(evaluations)
    return list(info.get("evaluations") or [])


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


def _read_wandb_segment(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """The config and the history rows (those with an epoch) of one W&B run folder."""
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
    return config, rows


def _load_wandb(path: Path, segments: list[Path]) -> Run:
    config: dict[str, Any] = {}
    histories = []
    for segment in segments:
        segment_config, rows = _read_wandb_segment(segment)
        config.update(segment_config)
        histories.append(rows)
    info = config.pop("run_info", None) or {}
    name = info.get("name") or path.name
    return Run(
        path,
        name,
        info,
        config,
        merge_segments(histories),
        "wandb",
        len(segments),
        _evaluations(path, info),
    )


__all__ = ["FIT_LOGS", "Run", "find_runs", "load_run", "merge_segments", "read_wandb_records"]
