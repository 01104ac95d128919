"""``lightning-ssl compare``: a table and plots of runs, one row per run.

A run is read from its folder (see :mod:`lightning_ssl.run_logs`): the training history from the
CSV logs (``--source csv``) or the W&B run (``--source wandb``; ``auto`` prefers CSV), the
segments of a resumed run merged into one history, and the ``validate``/``test`` results
recorded beside it as their own columns (they never enter the history).

Final means the last logged value, best the maximum over epochs. Plots: see
:mod:`lightning_ssl.compare_plots`.

Examples:
    ``lightning-ssl compare runs/simclr-cifar10 runs/byol-cifar10 --out compare``

A folder that is not a run but holds runs (``lightning-ssl grid``'s ``ROOT/NAME``) stands for them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning_ssl.compare_plots import LOSS, PLOTS, PROBE_TOP1, plot, unique_names
from lightning_ssl.run_logs import SOURCES, Run, find_runs, load_run, read_wandb_records

PROBE_TOP5 = "val/probe_top5"
KNN_TOP1 = "val/knn_top1"
KNN_TOP5 = "val/knn_top5"
__all__ = ["Run", "compare", "find_runs", "load_run", "main", "plot", "read_wandb_records"]


# ---------------------------------------------------------------------- the table
def _config_value(run: Run, section: str, key: str) -> Any:
    """``key`` of the saved LightningCLI config (nested) or of a W&B config (flat)."""
    nested = run.config.get(section)
    if isinstance(nested, dict):
        return (nested.get("init_args") or {}).get(key)
    return run.config.get(key)


def summary(run: Run) -> dict[str, Any]:
    """The comparison row of ``run`` as raw values (fractions, seconds, MiB).

    Examples:
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
        "validate_probe_top1": run.evaluation("validate", PROBE_TOP1),
        "validate_knn_top1": run.evaluation("validate", KNN_TOP1),
        "test_probe_top1": run.evaluation("test", "test/probe_top1"),
        "segments": run.segments,
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
    "validate probe top-1": lambda r: _percent(r["validate_probe_top1"]),
    "validate kNN top-1": lambda r: _percent(r["validate_knn_top1"]),
    "test probe top-1": lambda r: _percent(r["test_probe_top1"]),
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

    Examples:
        >>> print(compare([load_run("runs/a"), load_run("runs/b")]))  # doctest: +SKIP
    """
    rows = [summary(run) for run in unique_names(runs)]
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
    parser.add_argument(
        "--source",
        default="auto",
        choices=SOURCES,
        help="read the CSV logs or the W&B runs (default: auto, CSV when a run has both)",
    )
    args = parser.parse_args(argv)
    try:
        runs = [load_run(run, args.source) for path in args.runs for run in find_runs(path)]
    except (FileNotFoundError, RuntimeError) as error:
        print(f"lightning-ssl compare: {error}", file=sys.stderr)
        return 1
    print(compare(runs, args.format))
    plot(runs, args.out)
    written = ", ".join(str(Path(args.out) / name) for name in PLOTS)
    print(f"plots: {written}", file=sys.stderr)
    return 0
