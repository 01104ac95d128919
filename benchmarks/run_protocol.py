"""Run a baseline protocol for several methods and write its results table from the runs.

Protocols (see ``benchmarks/README.md``):

* ``cpu``: ``benchmarks/cpu/<method>.yaml``, CIFAR-10 subset, small backbone, minutes per method;
* ``lightly``: ``configs/<method>/cifar10.yaml`` + ``benchmarks/cifar10/lightly.yaml``;
* ``solo-learn``: ``configs/<method>/cifar10.yaml`` + ``benchmarks/cifar10/solo_learn.yaml``;
* ``imagewoof``: ``configs/<method>/imagenet.yaml`` + ``benchmarks/imagewoof/imagewoof.yaml``.

Each method runs as ``python -m lightning_ssl fit`` in ``ROOT/<protocol>/<method>`` (a finished
run is skipped, an interrupted one resumes from its ``last.ckpt``). The table is made by
``lightning-ssl compare`` from the runs' own logs and ``run.json`` (config hash, commit, device,
wall time), so every number in it can be traced to a run. For ``lightly`` and ``solo-learn`` the
runner then prints each method's figure beside the published one
(``benchmarks/cifar10/published.yaml``) with pass/fail at the protocol's tolerance.

The ``cpu`` protocol also makes a reference run, ``untrained``: the SimCLR config at lr 0, so
the backbone keeps its random initialisation (only its BatchNorm statistics and the online probe,
which has its own optimizer, move). A method *learns* when its final kNN top-1 beats that
reference's by more than ``LEARN_MARGIN`` points; the runner prints the verdicts and writes them,
the exact command, dates, machine and chance level beside the table (``--out``).

``--time-limit SECONDS`` bounds one invocation (e.g. a 10-minute command limit): each run gets
the time left as ``--trainer.max_time``, stops cleanly with its ``last.ckpt`` (mid-epoch
included) and the same command continues it next time; a run counts as finished only once
``run.json`` says all its epochs are done. ``--table-only`` runs nothing and writes the table of
the runs finished so far (e.g. while other invocations still run the rest).

Example::

    python benchmarks/run_protocol.py cpu --data-dir .cache/data/cifar10-jpeg \\
        --out benchmarks/results/cpu.md
    python benchmarks/run_protocol.py lightly --methods simclr byol --data-dir DIR \\
        -- --trainer.devices=1
    python benchmarks/run_protocol.py solo-learn --data-dir DIR --time-limit 540  # repeat
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lightning_ssl.commands import split_passthrough
from lightning_ssl.compare import Run, compare, load_run, plot
from lightning_ssl.compare_plots import PLOTS
from lightning_ssl.grid import loggers_for

REPO = Path(__file__).resolve().parents[1]
METHODS = (
    "simclr",
    "moco",
    "mocov3",
    "byol",
    "simsiam",
    "nnclr",
    "swav",
    "dino",
    "barlow_twins",
    "vicreg",
)
#: Methods of the cpu protocol only: the overlay protocols' published tables have none of them
#: (and some of their recipes' explicit views do not take the overlays' image sizes).
CPU_ONLY_METHODS = ("instdisc", "pcl", "cpc", "clip", "mae", "ibot", "ijepa")
PUBLISHED = REPO / "benchmarks" / "cifar10" / "published.yaml"
#: Seconds kept back from --time-limit for start-up and the final checkpoint.
TIME_MARGIN = 90
#: Reference runs of a protocol: run name -> (method whose config it runs, extra fit arguments).
#: ``untrained`` (the SimCLR config at lr 0) stands for every method whose features are a
#: whole-image ``test_resnet``'s. CPC's features (the mean of its patch vectors) and the ViT
#: methods' are not that network's: each is judged against its own config at lr 0
#: (``untrained_<method>``, :func:`reference_of`). Those have no BatchNorm statistics, so at
#: lr 0 nothing of theirs changes after the first step: one epoch gives their final kNN (their
#: online probe, which does train, sees one epoch).
UNTRAINED = ["--model.init_args.lr=0"]
UNTRAINED_FROZEN = [*UNTRAINED, "--trainer.max_epochs=1"]
REFERENCES = {
    "cpu": {
        "untrained": ("simclr", UNTRAINED),
        **{f"untrained_{m}": (m, UNTRAINED_FROZEN) for m in ("cpc", "mae", "ibot", "ijepa")},
    },
}
#: Points a method's final kNN top-1 must beat the ``untrained`` reference's by: the spread of
#: one seeded run across CPUs is about 1 point (README, quickstart). kNN, not the online probe:
#: the probe trains while the features move under it, so after 6 epochs it lags a learning
#: backbone more than the reference's fixed one (shown beside the verdict, not part of it).
LEARN_MARGIN = 2.0
#: Top-1 of a constant guess, in %: CIFAR-10's 10 balanced classes.
CHANCE = {"cpu": 10.0}
OVERLAYS = {
    "lightly": ("cifar10", "benchmarks/cifar10/lightly.yaml"),
    "solo-learn": ("cifar10", "benchmarks/cifar10/solo_learn.yaml"),
    "imagewoof": ("imagenet", "benchmarks/imagewoof/imagewoof.yaml"),
}


def configs_for(protocol: str, method: str) -> list[Path]:
    """The config files of ``method`` under ``protocol``, later ones overriding earlier ones."""
    if protocol == "cpu":
        return [REPO / "benchmarks" / "cpu" / f"{method}.yaml"]
    dataset, overlay = OVERLAYS[protocol]
    return [REPO / "configs" / method / f"{dataset}.yaml", REPO / overlay]


def _finished(run_dir: Path) -> bool:
    """``run.json`` says finished with every epoch done (a ``max_time`` stop also ends fit)."""
    info = run_dir / "run.json"
    if not info.exists():
        return False
    run = json.loads(info.read_text())
    done, wanted = run.get("epochs_completed") or 0, run.get("max_epochs") or 0
    return run.get("status") == "finished" and done >= wanted


def max_time(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for ``seconds``.

    Example:
        >>> max_time(3725)
        '00:01:02:05'
    """
    s = int(seconds)
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def jobs_for(protocol: str, methods: list[str]) -> list[tuple[str, str, list[str]]]:
    """``(run name, method, extra fit arguments)`` of every run: the methods, then references.

    Example:
        >>> jobs_for("cpu", ["byol"])
        [('byol', 'byol', []), ('untrained', 'simclr', ['--model.init_args.lr=0'])]
    """
    jobs = [(method, method, []) for method in methods]
    references = REFERENCES.get(protocol, {})
    wanted = {reference_of(protocol, method) for method in methods}
    return jobs + [
        (name, method, list(args)) for name, (method, args) in references.items() if name in wanted
    ]


def reference_of(protocol: str, name: str) -> str:
    """The reference run that judges run ``name``: its own (``untrained_<name>``) if the
    protocol has one, else ``untrained``.

    Example:
        >>> reference_of("cpu", "cpc"), reference_of("cpu", "byol")
        ('untrained_cpc', 'untrained')
    """
    own = f"untrained_{name}"
    return own if own in REFERENCES.get(protocol, {}) else "untrained"


def run_method(
    protocol: str,
    method: str,
    root: Path,
    data_dir: str,
    extra: list[str],
    seconds: float | None = None,
    name: str | None = None,
) -> tuple[Path, int]:
    """Run (or resume) one method in ``root/protocol/name`` for at most ``seconds``; return
    its folder and exit code."""
    name = name or method
    run_dir = root / protocol / name
    if _finished(run_dir):
        print(f"[{name}] finished before: {run_dir}", flush=True)
        return run_dir, 0
    configs = configs_for(protocol, method)
    merged = yaml.safe_load(configs[0].read_text())
    loggers = loggers_for(merged, run_dir, group=f"{protocol}-protocol", name=name, tags=[])
    command = [sys.executable, "-m", "lightning_ssl", "fit"]
    command += [f"--config={c}" for c in configs]
    command += [
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger={json.dumps(loggers)}",
        f"--data.init_args.data_dir={data_dir}",
    ]
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        command.append("--ckpt_path=last")
    if seconds is not None:
        command.append(f"--trainer.max_time={max_time(seconds)}")
    command += extra
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir / "protocol.log", "a") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    print(f"[{name}] exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
    return run_dir, code


def published_verdicts(protocol: str, runs: dict[str, Path]) -> list[str]:
    """One line per method: our figure, the published one, pass/fail at the tolerance."""
    spec = yaml.safe_load(PUBLISHED.read_text()).get(protocol)
    if spec is None:
        return []
    lines = [f"{protocol}: {spec['source']} (tolerance {spec['tolerance']} points)"]
    for method, published in spec["published"].items():
        if method not in runs:
            continue
        run_dir = runs[method]
        ours = None
        if _finished(run_dir):
            run = load_run(run_dir)
            read = run.best if spec["reduce"] == "best" else run.final
            ours = read(spec["metric"])
        if ours is None:
            lines.append(f"  {method:13s} published {published:6.2f}  ours: not finished")
            continue
        ours = 100 * ours if ours <= 1 else ours
        verdict = "PASS" if abs(ours - published) <= spec["tolerance"] else "FAIL"
        lines.append(f"  {method:13s} published {published:6.2f}  ours {ours:6.2f}  {verdict}")
    return lines


def _final_percent(run_dir: Path, metric: str) -> float:
    """The run's last logged ``metric`` in % (nan when never logged)."""
    value = load_run(run_dir).final(metric)
    if value is None:
        return float("nan")
    return 100 * value if value <= 1 else value


def learning_verdicts(protocol: str, runs: dict[str, Path]) -> list[str]:
    """One line per method: its final kNN top-1 against its reference's (:func:`reference_of`)
    plus ``LEARN_MARGIN`` (probe top-1 beside it); empty without any finished reference."""
    references = {name for name in REFERENCES.get(protocol, {}) if name in runs}
    finished = {name for name in references if _finished(runs[name])}
    if not finished:
        return []
    lines = [_verdict_header(protocol, runs.get("untrained") if "untrained" in finished else None)]
    for name, run_dir in runs.items():
        if name in references:
            continue
        if not _finished(run_dir):
            lines.append(f"  {name:13s} not finished")
            continue
        probe, knn = (_final_percent(run_dir, m) for m in ("val/probe_top1", "val/knn_top1"))
        own = reference_of(protocol, name)
        if own not in finished:
            lines.append(f"  {name:13s} kNN {knn:5.1f}  probe {probe:5.1f}  no {own} run")
            continue
        bar = _final_percent(runs[own], "val/knn_top1")
        against = "" if own == "untrained" else f"  ({own}: kNN {bar:.1f})"
        verdict = "LEARNS" if knn > bar + LEARN_MARGIN else "DOES NOT LEARN"
        lines.append(f"  {name:13s} kNN {knn:5.1f}  probe {probe:5.1f}{against}  {verdict}")
    return lines


def _verdict_header(protocol: str, untrained: Path | None) -> str:
    chance = f"chance {CHANCE.get(protocol, float('nan')):g}"
    if untrained is None:
        rule = f"its reference's + {LEARN_MARGIN:g}"
        return f"{protocol}: learns = final kNN top-1 > {rule}; {chance}"
    probe0, knn0 = (_final_percent(untrained, m) for m in ("val/probe_top1", "val/knn_top1"))
    return (
        f"{protocol}: learns = final kNN top-1 > {knn0:.1f} + {LEARN_MARGIN:g} (the untrained "
        f"reference's, lr 0; its probe top-1: {probe0:.1f}; CPC and the ViT methods: their own "
        f"config's at lr 0); {chance}"
    )


def provenance(argv: list[str], runs: list[Run], note: str | None) -> str:
    """Comment lines for the table file: the exact command, when the runs ran, and where."""
    threads = os.environ.get("OMP_NUM_THREADS")
    env = [f"OMP_NUM_THREADS={threads}"] if threads else []
    command = " ".join([*env, "python benchmarks/run_protocol.py", *argv])
    starts = sorted(str(run.info["start_time"]) for run in runs if run.info.get("start_time"))
    ends = sorted(str(run.info["ended_at"]) for run in runs if run.info.get("ended_at"))
    when = f"runs from {starts[0][:16]} to {ends[-1][:16]} UTC" if starts and ends else "runs"
    # each run's own thread count is its table row's device column (from run.json)
    machine = f"{os.cpu_count()} CPUs" + (f", {note}" if note else "")
    return f"<!-- generated by: {command} -->\n<!-- {when}; {machine} -->"


def write_results(out: Path, head: str, table: str, verdicts: list[str], runs: list[Run]) -> None:
    """The table file, its verdicts, and the curves beside it (``<out stem>_probe_top1.png``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    body = f"{head}\n{table}\n"
    if verdicts:
        body += "\n```text\n" + "\n".join(verdicts) + "\n```\n"
    out.write_text(body)
    with tempfile.TemporaryDirectory() as folder:
        plot(runs, folder)
        for name in PLOTS:
            shutil.copyfile(Path(folder) / name, out.with_name(f"{out.stem}_{name}"))


def run_all(args: argparse.Namespace, extra: list[str]) -> list[tuple[Path, int]]:
    """Run (or resume) every job of the protocol within ``--time-limit``."""
    deadline = None if args.time_limit is None else time.monotonic() + args.time_limit
    results = []
    for name, method, own_extra in jobs_for(args.protocol, args.methods):
        left = None if deadline is None else deadline - time.monotonic() - TIME_MARGIN
        if left is not None and left <= 0:
            print(f"[{name}] time limit reached: rerun the same command to continue", flush=True)
            break
        results.append(
            run_method(
                args.protocol, method, args.root, args.data_dir, extra + own_extra, left, name
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=["cpu", *OVERLAYS])
    every = (*METHODS, *CPU_ONLY_METHODS)
    parser.add_argument("--methods", nargs="+", choices=every, help="default: the protocol's")
    parser.add_argument("--data-dir", required=True, help="the dataset folder of the protocol")
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "protocols")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--note", help="the machine in words, for --out (e.g. 'shared VM')")
    parser.add_argument(
        "--table-only", action="store_true", help="run nothing: the table of the finished runs"
    )
    parser.add_argument(
        "--time-limit", type=float, help="seconds for this invocation; rerun to continue"
    )
    argv = sys.argv[1:] if argv is None else argv
    own, extra = split_passthrough(argv)  # extra: for `fit`
    args = parser.parse_args(own)
    args.methods = args.methods or list(every if args.protocol == "cpu" else METHODS)
    if args.table_only:
        names = [name for name, _, _ in jobs_for(args.protocol, args.methods)]
        results = [(args.root / args.protocol / name, 0) for name in names]
        results = [(path, code) for path, code in results if _finished(path)]
    else:
        results = run_all(args, extra)
    by_name = {path.name: path for path, _ in results}
    verdicts = learning_verdicts(args.protocol, by_name)
    for line in published_verdicts(args.protocol, by_name) + verdicts:
        print(line, flush=True)
    runs = [load_run(path) for path, code in results if code == 0 and _finished(path)]
    if not runs:
        return 0 if all(code == 0 for _, code in results) else 1
    table = compare(runs)
    print(table)
    if args.out:
        write_results(args.out, provenance(argv, runs, args.note), table, verdicts, runs)
    return 0 if all(code == 0 for _, code in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
