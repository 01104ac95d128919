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

``--time-limit SECONDS`` bounds one invocation (e.g. a 10-minute command limit): each run gets
the time left as ``--trainer.max_time``, stops cleanly with its ``last.ckpt`` (mid-epoch
included) and the same command continues it next time; a run counts as finished only once
``run.json`` says all its epochs are done.

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
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lightning_ssl.commands import split_passthrough
from lightning_ssl.compare import compare, load_run
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
#: Methods of the cpu protocol only (their recipes' explicit views do not take the overlays'
#: image sizes, and no library publishes figures for them).
CPU_ONLY_METHODS = ("instdisc",)
PUBLISHED = REPO / "benchmarks" / "cifar10" / "published.yaml"
#: Seconds kept back from --time-limit for start-up and the final checkpoint.
TIME_MARGIN = 90
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


def run_method(
    protocol: str,
    method: str,
    root: Path,
    data_dir: str,
    extra: list[str],
    seconds: float | None = None,
) -> tuple[Path, int]:
    """Run (or resume) one method, for at most ``seconds``; return its folder and exit code."""
    run_dir = root / protocol / method
    if _finished(run_dir):
        print(f"[{method}] finished before: {run_dir}", flush=True)
        return run_dir, 0
    configs = configs_for(protocol, method)
    merged = yaml.safe_load(configs[0].read_text())
    loggers = loggers_for(merged, run_dir, group=f"{protocol}-protocol", name=method, tags=[])
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
    print(f"[{method}] exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=["cpu", *OVERLAYS])
    every = (*METHODS, *CPU_ONLY_METHODS)
    parser.add_argument("--methods", nargs="+", choices=every, help="default: the protocol's")
    parser.add_argument("--data-dir", required=True, help="the dataset folder of the protocol")
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "protocols")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument(
        "--time-limit", type=float, help="seconds for this invocation; rerun to continue"
    )
    own, extra = split_passthrough(sys.argv[1:] if argv is None else argv)  # extra: for `fit`
    args = parser.parse_args(own)
    args.methods = args.methods or list(every if args.protocol == "cpu" else METHODS)
    deadline = None if args.time_limit is None else time.monotonic() + args.time_limit
    results = []
    for method in args.methods:
        left = None if deadline is None else deadline - time.monotonic() - TIME_MARGIN
        if left is not None and left <= 0:
            print(f"[{method}] time limit reached: rerun the same command to continue", flush=True)
            break
        results.append(run_method(args.protocol, method, args.root, args.data_dir, extra, left))
    for line in published_verdicts(args.protocol, {path.name: path for path, _ in results}):
        print(line, flush=True)
    runs = [load_run(path) for path, code in results if code == 0 and _finished(path)]
    if not runs:
        return 0 if all(code == 0 for _, code in results) else 1
    table = compare(runs)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python benchmarks/run_protocol.py", args.protocol, "--data-dir <dir>"])
        args.out.write_text(f"<!-- generated by: {command} -->\n{table}\n")
    return 0 if all(code == 0 for _, code in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
