"""Wall time of a full pretraining run with online evaluation, from the command line to the end.

Runs ``python -m lightning_ssl fit`` with the given config and arguments in a fresh folder and
prints the process's wall time next to what the run recorded itself (``run.json``: training
time, images/s, peak memory, device) and its final probe/kNN accuracies. The default is the
issue's target: SimCLR ResNet-18 on CIFAR-10, batch 512, 200 epochs, online probe every epoch
and kNN every 10, with the batched on-device augmentation and the images held on the GPU.

Example::

    python benchmarks/end_to_end.py --data-dir DIR                     # GPU: the 200-epoch run
    OMP_NUM_THREADS=2 python benchmarks/end_to_end.py --data-dir DIR \\
        --config configs/simclr/quickstart.yaml --no-device-data        # CPU: the quickstart
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightning_ssl.commands import split_passthrough
from lightning_ssl.compare import load_run, summary

REPO = Path(__file__).resolve().parents[1]
GPU_ARGS = [
    "--trainer.max_epochs=200",
    "--data.init_args.batch_size=512",
    "--data.init_args.num_workers=0",
    "--data.init_args.batched_augmentation=true",
    "--data.init_args.images_on_device=true",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/simclr/cifar10.yaml"))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--root", help="run folder (default: a temporary one)")
    parser.add_argument(
        "--no-device-data",
        action="store_true",
        help="keep the config's own data settings instead of the GPU defaults above",
    )
    own, extra = split_passthrough(sys.argv[1:] if argv is None else argv)  # extra: for `fit`
    args = parser.parse_args(own)
    root = Path(args.root or tempfile.mkdtemp(prefix="lightning-ssl-e2e-"))
    command = [
        sys.executable,
        "-m",
        "lightning_ssl",
        "fit",
        f"--config={args.config}",
        f"--data.init_args.data_dir={args.data_dir}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger={json.dumps(_csv_logger(root))}",
        *([] if args.no_device_data else GPU_ARGS),
        *extra,
    ]
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    code = subprocess.call(command, cwd=REPO)
    wall = time.perf_counter() - start
    if code != 0:
        print(f"the run failed with exit code {code}")
        return code
    row = summary(load_run(root))
    info = json.loads((root / "run.json").read_text())
    print("\n| measure | value |\n|---|---|")
    print(f"| process wall time (start-up, data, training, evaluation) | {wall / 60:.1f} min |")
    for key in ("wall_time_s", "train_time_s", "images_per_s", "device", "peak_memory_mib"):
        if key in info:
            print(f"| run.json {key} | {info[key]} |")
    for key in ("probe_top1_final", "probe_top5_final", "knn_top1_final"):
        if row.get(key) is not None:
            print(f"| {key} | {row[key]:.4f} |")
    print(f"| run folder | {root} |")
    return 0


def _csv_logger(root: Path) -> list[dict]:
    """CSV only: W&B is not installed on every GPU image, and compare reads the CSV logs."""
    init = {"save_dir": str(root), "name": "csv"}
    return [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": init}]


if __name__ == "__main__":
    raise SystemExit(main())
