"""``lightning-ssl grid``: a local grid search, one ``lightning-ssl fit`` process per point.

W&B sweeps need a W&B server (their controller runs there); this launcher needs nothing. It runs
the Cartesian product of the ``--set`` values sequentially, each point as
``python -m lightning_ssl fit --config CFG ...`` in a subprocess, continues past failed points,
and prints the ``lightning-ssl compare`` table of the points that finished (plots go to
``ROOT/NAME/compare``).

Each point is named from its values (``lr=0.1_batch_size=128``: the last component of each key)
and gets its own ``ROOT/NAME/<point>`` as ``trainer.default_root_dir`` and as the ``save_dir`` of
its loggers (the config's loggers, or a CSV and an offline W&B logger if it has none; a CSV
logger is always added because ``compare`` reads it). W&B runs get ``group`` = the grid name,
``tags`` = the point's ``key=value`` pairs and ``name`` = the point, so the same comparison can be
made in the W&B UI after ``wandb sync``. A point's output goes to ``<point>/grid.log``.

Usage::

    lightning-ssl grid --config configs/simclr/cifar10.yaml \\
        --set model.init_args.lr=0.1,0.3 --set data.init_args.batch_size=128,256 \\
        [--root runs/grid] [--name NAME] [--dry-run] [-- EXTRA FIT ARGUMENTS]

Values are split at commas outside brackets and quotes (``--set 'k=[1,2],[3,4]'`` gives two
values); ``--dry-run`` prints the command lines without running them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_ssl.commands import split_passthrough

CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"
WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"


@dataclass
class Point:
    """One point of the grid: its name, its ``--key=value`` settings and its command line."""

    name: str
    values: dict[str, str]
    run_dir: Path
    command: list[str]


def split_values(text: str) -> list[str]:
    """Split at commas outside brackets and quotes.

    Examples:
        >>> split_values("0.1,[1,2],'a,b'")
        ['0.1', '[1,2]', "'a,b'"]
    """
    values, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current)
            current = ""
            continue
        current += char
    return [*values, current]


def parse_sets(sets: Sequence[str]) -> dict[str, list[str]]:
    """``["a.b=1,2", "c=x"]`` -> ``{"a.b": ["1", "2"], "c": ["x"]}``."""
    grid: dict[str, list[str]] = {}
    for item in sets:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE[,VALUE...]")
        grid[key.removeprefix("--")] = split_values(values)
    return grid


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Last dotted component of each key, or the whole key where two would clash."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: (s if last.count(s) == 1 else key) for key, s in zip(keys, last, strict=True)}


def point_name(values: dict[str, str]) -> str:
    """Folder-safe name of a point: ``lr=0.1_batch_size=128``."""
    short = short_keys(list(values))
    parts = [f"{short[key]}={value}" for key, value in values.items()]
    return re.sub(r"[^A-Za-z0-9=.,+\-_]", "-", "_".join(parts))


def _class_path(logger: dict[str, Any]) -> str:
    return str(logger.get("class_path", ""))


def loggers_for(
    config: dict[str, Any], run_dir: Path, group: str, name: str, tags: list[str]
) -> list[dict[str, Any]]:
    """The config's loggers writing into ``run_dir``; W&B ones grouped and tagged."""
    configured = (config.get("trainer") or {}).get("logger")
    if isinstance(configured, dict):
        configured = [configured]
    if not isinstance(configured, list) or not configured:
        configured = [
            {"class_path": CSV_LOGGER, "init_args": {"name": "csv"}},
            {"class_path": WANDB_LOGGER, "init_args": {"project": "lightning-ssl"}},
        ]
    loggers = []
    for logger in configured:
        logger = {**logger, "init_args": dict(logger.get("init_args") or {})}
        kind = _class_path(logger).rsplit(".", 1)[-1]
        if kind in ("CSVLogger", "TensorBoardLogger", "WandbLogger"):
            logger["init_args"]["save_dir"] = str(run_dir)
        if kind == "CSVLogger":  # the run folder's layout (run_dir/csv), as the CLI sets it
            logger["init_args"]["name"] = "csv"
        if kind == "WandbLogger":
            logger["init_args"].update(group=group, name=name, tags=tags)
            logger["init_args"].pop("version", None)
        loggers.append(logger)
    if not any(_class_path(lg).endswith("CSVLogger") for lg in loggers):
        loggers.append(
            {"class_path": CSV_LOGGER, "init_args": {"save_dir": str(run_dir), "name": "csv"}}
        )
    return loggers


def build_points(
    config: str | Path,
    grid: dict[str, list[str]],
    root: str | Path,
    name: str,
    extra: Sequence[str] = (),
) -> list[Point]:
    """Every point of the Cartesian product of ``grid`` with its ``lightning-ssl fit`` command.

    Examples:
        >>> points = build_points("configs/simclr/cifar10.yaml", {"model.init_args.lr": ["0.1",
        ...     "0.3"]}, "runs/grid", "simclr-lr")  # doctest: +SKIP
        >>> [p.name for p in points]  # doctest: +SKIP
        ['lr=0.1', 'lr=0.3']
    """
    loaded = yaml.safe_load(Path(config).read_text()) or {}
    short = short_keys(list(grid))
    points = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination, strict=True))
        label = point_name(values)
        run_dir = Path(root) / name / label
        tags = [f"{short[key]}={value}" for key, value in values.items()]
        loggers = loggers_for(loaded, run_dir, group=name, name=label, tags=tags)
        command = [
            sys.executable,
            "-m",
            "lightning_ssl",
            "fit",
            f"--config={config}",
            f"--trainer.default_root_dir={run_dir}",
            f"--trainer.logger={json.dumps(loggers, separators=(',', ':'))}",
            *(f"--{key}={value}" for key, value in values.items()),
            *extra,
        ]
        points.append(Point(label, values, run_dir, command))
    return points


def run_points(points: Sequence[Point]) -> list[tuple[Point, int]]:
    """Run the points one after the other (output to ``<run_dir>/grid.log``); exit codes."""
    results = []
    for index, point in enumerate(points, 1):
        point.run_dir.mkdir(parents=True, exist_ok=True)
        log = point.run_dir / "grid.log"
        start = time.perf_counter()
        with open(log, "w") as file:
            file.write(shlex.join(point.command) + "\n")
            file.flush()
            code = subprocess.run(point.command, stdout=file, stderr=subprocess.STDOUT).returncode
        status = "ok" if code == 0 else f"FAILED (exit {code}), see {log}"
        elapsed = time.perf_counter() - start
        print(f"[{index}/{len(points)}] {point.name}: {status} ({elapsed:.1f} s)", flush=True)
        results.append((point, code))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``lightning-ssl grid --config CFG --set KEY=V1,V2 ... [--dry-run] [-- EXTRA]``."""
    argv, extra = split_passthrough(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(
        prog="lightning-ssl grid", description="Run a grid of `lightning-ssl fit` locally."
    )
    parser.add_argument("--config", required=True, help="the fit config of every point")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a config key and its values (repeat for more keys)",
    )
    parser.add_argument("--root", default="runs/grid", help="folder of the grids (runs/grid)")
    parser.add_argument("--name", help="grid name and W&B group (default: <method>-<config>)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    try:
        grid = parse_sets(args.set)
    except ValueError as error:
        parser.error(str(error))
    config = Path(args.config)
    name = args.name or f"{config.parent.name}-{config.stem}"
    points = build_points(config, grid, args.root, name, extra)
    if args.dry_run:
        for point in points:
            print(shlex.join(point.command))
        return 0
    results = run_points(points)
    finished = [point for point, code in results if code == 0]
    failed = [point.name for point, code in results if code != 0]
    if finished:
        # Imported here: the plotting stack is only needed once something has run.
        from lightning_ssl.compare import compare, load_run, plot

        runs = [load_run(point.run_dir) for point in finished]
        print(compare(runs))
        plot(runs, Path(args.root) / name / "compare")
    if failed:
        print(f"{len(failed)} of {len(points)} failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
