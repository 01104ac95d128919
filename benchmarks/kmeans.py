"""Time of PCL's k-means (:func:`lightning_ssl.nn.kmeans.kmeans`) on random unit features.

Prints a markdown table: per granularity the seconds of one Lloyd step (assignment of every
point, exact fixed-point centroid sums, empty-cluster splits) and of the whole clustering
(``iterations x restarts`` steps and the final assignment), as PCL runs it at each epoch start.
Random features are a worst case for convergence but not for time: every step costs the same.

Example:
    python benchmarks/kmeans.py --points 1281167 --clusters 25000 50000 100000 --device cuda
    OMP_NUM_THREADS=1 python benchmarks/kmeans.py --points 50000 --clusters 250 500 1000 \\
        --iterations 2 --restarts 1
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from lightning_ssl.nn.kmeans import kmeans


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_kmeans(x: torch.Tensor, k: int, iterations: int, restarts: int) -> tuple[float, float]:
    """``(seconds per Lloyd step, seconds of the whole clustering)``."""
    kmeans(x[: min(len(x), 4 * k)], k, iterations=1, restarts=1)  # warm-up (kernels, caches)
    _synchronize(x.device)
    start = time.perf_counter()
    kmeans(x, k, iterations=iterations, restarts=restarts)
    _synchronize(x.device)
    total = time.perf_counter() - start
    return total / (iterations * restarts + 1), total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    generator = torch.Generator(device).manual_seed(0)
    x = torch.randn(args.points, args.dim, generator=generator, device=device)
    x = F.normalize(x, dim=1)
    print(f"{args.points} points x {args.dim} dims on {device} ({torch.get_num_threads()} threads)")
    print(f"| K | s per step | s for {args.iterations} x {args.restarts} steps |")
    print("|---|---|---|")
    for k in args.clusters:
        step, total = time_kmeans(x, k, args.iterations, args.restarts)
        print(f"| {k} | {step:.3f} | {total:.1f} |")


if __name__ == "__main__":
    main()
