"""Peak memory and forward+backward time of the tiled vs the plain contrastive loss.

Prints a markdown table. ``batch`` is the number of images per process: NT-Xent with 2 views
has a ``2B x 2B`` logit matrix, InfoNCE (``--loss info_nce``) a ``B x B`` one, CLIP
(``--loss clip``: image-text pairs, both directions, logit scale ``1 / temperature``) two
``B x B`` ones.

* CUDA: peak of ``torch.cuda.max_memory_allocated`` above the inputs, in this process.
* CPU: every configuration runs in a fresh subprocess, which reports its peak RSS
  (``resource.getrusage(...).ru_maxrss``) minus its RSS before the loss (inputs allocated and a
  tiny warm-up loss done, so library initialisation is not counted).

Plain configurations whose estimated peak exceeds the free memory are skipped: the estimate
extrapolates, quadratically in the batch, a plain run at batch 2048.

Example:
    python benchmarks/loss_memory.py --batch-sizes 8192 32768 65536 --dim 128 --device cuda
    OMP_NUM_THREADS=1 python benchmarks/loss_memory.py --batch-sizes 2048 8192 --device cpu
    python benchmarks/loss_memory.py --loss clip --batch-sizes 32768 131072 --dim 512
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from lightning_ssl.losses import (
    clip_loss,
    info_nce_loss,
    nt_xent_loss,
    tiled_clip_loss,
    tiled_info_nce_loss,
    tiled_nt_xent_loss,
)

CALIBRATION_BATCH = 2048
GIB, MIB = 2**30, 2**20


@dataclass
class Config:
    loss: str  # "nt_xent", "info_nce" or "clip"
    impl: str  # "plain" or "tiled"
    batch: int
    dim: int
    tile_size: int
    temperature: float
    repeats: int
    device: str


def _loss_fn(cfg: Config) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    t, tile = cfg.temperature, cfg.tile_size
    if cfg.loss == "nt_xent":
        if cfg.impl == "plain":
            return lambda x: nt_xent_loss(x, t)
        return lambda x: tiled_nt_xent_loss(x, t, tile_size=tile)
    if cfg.loss == "clip":  # x = (image features, text features)
        if cfg.impl == "plain":
            return lambda x: clip_loss(x[0], x[1], 1 / t)
        return lambda x: tiled_clip_loss(x[0], x[1], 1 / t, tile_size=tile)
    if cfg.impl == "plain":
        return lambda x: info_nce_loss(x[0], x[1], t)
    return lambda x: tiled_info_nce_loss(x[0], x[1], t, tile_size=tile)


def _inputs(cfg: Config, batch: int) -> list[torch.Tensor]:
    g = torch.Generator(device=cfg.device).manual_seed(0)
    return [
        torch.randn(batch, cfg.dim, device=cfg.device, generator=g).requires_grad_()
        for _ in range(2)
    ]


def _step(fn: Callable, inputs: list[torch.Tensor]) -> None:
    for x in inputs:
        x.grad = None
    fn(inputs).backward()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_ms(cfg: Config, fn: Callable, inputs: list[torch.Tensor]) -> float:
    times = []
    for _ in range(cfg.repeats):
        _sync(cfg.device)
        start = time.perf_counter()
        _step(fn, inputs)
        _sync(cfg.device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure_here(cfg: Config) -> dict:
    """Peak extra memory (bytes) of one forward+backward and its median time, in this process."""
    fn, inputs = _loss_fn(cfg), _inputs(cfg, cfg.batch)
    _step(fn, _inputs(cfg, 8))  # load kernels and libraries outside the measurement
    if cfg.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _step(fn, inputs)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss_bytes()
        _step(fn, inputs)
        peak = _rss_bytes() - base
    return {"peak": peak, "ms": _median_ms(cfg, fn, inputs)}


def measure(cfg: Config) -> dict:
    """:func:`measure_here`, in a fresh subprocess on CPU (RSS peaks never go down)."""
    if cfg.device == "cuda":
        try:
            return measure_here(cfg)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return {"error": "out of memory"}
    cmd = [sys.executable, __file__, "--worker", json.dumps(asdict(cfg))]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": f"failed (rc {proc.returncode}): {proc.stderr.strip()[-200:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def free_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def _row(cfg: Config, result: dict, plain: dict | None) -> str:
    cells = [str(cfg.batch), str(cfg.dim), cfg.impl]
    if "error" in result:
        return "| " + " | ".join([*cells, result["error"], "-", "-", "-"]) + " |"
    mem_ratio = time_ratio = "-"
    if cfg.impl == "tiled" and plain and "error" not in plain:
        mem_ratio = f"{result['peak'] / plain['peak']:.4f} (1/{plain['peak'] / result['peak']:.0f})"
        time_ratio = f"{result['ms'] / plain['ms']:.2f}"
    cells += [f"{result['peak'] / MIB:.1f}", f"{result['ms']:.1f}", mem_ratio, time_ratio]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8192, 32768, 65536])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--loss", choices=["nt_xent", "info_nce", "clip"], default="nt_xent")
    parser.add_argument("--tile-size", type=int, default=4096)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    parser.add_argument("--max-memory-gib", type=float, help="default: the free memory")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # CPU subprocess: measure one configuration, print JSON
        print(json.dumps(measure_here(Config(**json.loads(args.worker)))))
        return

    def config(impl: str, batch: int) -> Config:
        return Config(
            args.loss, impl, batch, args.dim, args.tile_size, args.temperature, args.repeats,
            args.device,
        )  # fmt: skip

    budget = args.max_memory_gib * GIB if args.max_memory_gib else free_bytes(args.device)
    calibration = measure(config("plain", CALIBRATION_BATCH))
    print(
        f"loss={args.loss} device={args.device} tile_size={args.tile_size} "
        f"memory budget={budget / GIB:.1f} GiB; plain at batch {CALIBRATION_BATCH}: "
        f"{calibration['peak'] / MIB:.1f} MiB\n"
    )
    print("| batch | dim | impl | peak MiB | fwd+bwd ms | mem tiled/plain | time tiled/plain |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batch_sizes:
        need = calibration["peak"] * (batch / CALIBRATION_BATCH) ** 2
        plain: dict | None = None
        if need > budget:
            plain = {"error": f"skipped: would need {need / GIB:.1f} GiB"}
        else:
            plain = measure(config("plain", batch))
        print(_row(config("plain", batch), plain, None), flush=True)
        tiled = measure(config("tiled", batch))
        print(_row(config("tiled", batch), tiled, plain), flush=True)


if __name__ == "__main__":
    main()
