"""The plots of ``lightning-ssl compare``: one line per run against the epoch (1-based: the value
after that many epochs): ``probe_top1.png`` (validation probe top-1, %) and ``loss.png``
(training loss averaged over each epoch's logged steps).

Examples:
    >>> figures = plot([load_run("runs/a"), load_run("runs/b")], "compare")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_ssl.run_logs import Run

LOSS = "train/loss"
PROBE_TOP1 = "val/probe_top1"


def unique_names(runs: Sequence[Run]) -> list[Run]:
    """Runs named by their paths when their names clash (same config run twice)."""
    names = [run.name for run in runs]
    if len(set(names)) == len(names):
        return list(runs)
    return [
        Run(r.path, str(r.path), r.info, r.config, r.rows, r.source, r.segments, r.evaluations)
        for r in runs
    ]


PLOTS = {
    "probe_top1.png": (PROBE_TOP1, "last", 100.0, "probe top-1 (%)"),
    "loss.png": (LOSS, "mean", 1.0, "training loss (epoch mean)"),
}


def plot(runs: Sequence[Run], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write ``probe_top1.png`` and ``loss.png`` into ``out_dir``: one line per run (label: run
    name, x: epochs completed); return the matplotlib figures by file name.

    Examples:
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
        for run in unique_names(runs):
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
