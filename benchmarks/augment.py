"""Views/s of the batched multi-crop augmentation against per-sample torchvision (PIL) pipelines.

Workloads (decoding excluded everywhere: every pipeline starts from decoded images):

* ``simclr``: 2 views of 32 px (``preset("simclr", 32)``) from CIFAR-10 test JPEGs.
* ``dino``: 2 x 224 + 8 x 96 px (``preset("dino", 224, 96, 8)``) from Imagewoof **160 px**
  images (short side 160, so the 224 px globals are upscaled; the batched path gets them as a
  zero-padded batch with per-image sizes, as the ImageFolder loader delivers them).

Pipelines:

* ``batched``: :class:`~lightning_ssl.data.batched.BatchedMultiCrop` on ``uint8`` batches;
* ``MultiCropTransform``: the library's CPU path (per sample, PIL colour ops), plus collation;
* ``torchvision v2``: a plain per-sample ``torchvision.transforms.v2`` PIL pipeline as a
  popular library writes it (2-D ``GaussianBlur``), plus collation.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/augment.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import v2

from lightning_ssl.data.batched import BatchedMultiCrop
from lightning_ssl.data.datasets import pad_collate, scan_image_folder
from lightning_ssl.data.presets import preset
from lightning_ssl.data.transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiCropTransform,
    ViewGroup,
    blur_kernel_size,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LIGHTNING_SSL_DATA", REPO / ".cache" / "data"))


def load_images(root: Path, count: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` decoded uint8 ``(3, H, W)`` images drawn at random from an ImageFolder tree."""
    _, samples = scan_image_folder(root)
    paths = random.Random(seed).sample([path for path, _ in samples], count)
    return [decode_image(read_file(p), mode=ImageReadMode.RGB) for p in paths]


def torchvision_v2(groups: list[ViewGroup], mean, std) -> Callable:
    """Per-sample multi-crop as written with plain torchvision v2 transforms (PIL input)."""

    def pipeline(g: ViewGroup) -> v2.Compose:
        steps = [
            v2.RandomResizedCrop(g.size, scale=g.scale, ratio=g.ratio, antialias=True),
            v2.RandomHorizontalFlip(g.flip_prob),
            v2.RandomApply(
                [v2.ColorJitter(g.brightness, g.contrast, g.saturation, g.hue)], p=g.jitter_prob
            ),
            v2.RandomGrayscale(g.grayscale_prob),
        ]
        if g.blur_prob > 0:
            blur = v2.GaussianBlur(blur_kernel_size(g.size), g.blur_sigma)
            steps.append(v2.RandomApply([blur], p=g.blur_prob))
        if g.solarize_prob > 0:
            steps.append(v2.RandomSolarize(128, p=g.solarize_prob))
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        return v2.Compose(steps)

    pipelines = [(pipeline(g), g.num) for g in groups]
    return lambda image: [p(image) for p, num in pipelines for _ in range(num)]


def time_per_sample(transform: Callable, images: list[Image.Image], batch: int) -> float:
    """Seconds per image: transform each image, then collate each batch as a DataLoader does."""
    for image in images[:4]:  # warm-up
        transform(image)
    start = time.perf_counter()
    for first in range(0, len(images), batch):
        views = [transform(image) for image in images[first : first + batch]]
        [torch.stack(v) for v in zip(*views, strict=True)]
    return (time.perf_counter() - start) / len(images)


def time_batched(
    augment: BatchedMultiCrop, batches: list[tuple[torch.Tensor, torch.Tensor | None]]
) -> float:
    """Seconds per image of the batched augmentation (synchronised on GPU)."""
    device = batches[0][0].device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    augment(*batches[0])  # warm-up (and CUDA kernels)
    sync()
    start = time.perf_counter()
    for images, sizes in batches:
        augment(images, sizes)
    sync()
    return (time.perf_counter() - start) / sum(len(images) for images, _ in batches)


def make_batches(images: list[torch.Tensor], batch: int, device: torch.device, padded: bool):
    out = []
    for first in range(0, len(images) - batch + 1, batch):
        chunk = images[first : first + batch]
        if padded:
            stacked, sizes, _ = pad_collate([(image, 0) for image in chunk])
            out.append((stacked.to(device), sizes.to(device)))
        else:
            out.append((torch.stack(chunk).to(device), None))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (per core: 1)")
    parser.add_argument("--cifar-images", type=int, default=2048)
    parser.add_argument("--woof-images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="round-robin rounds; the best kept")
    parser.add_argument(
        "--workloads", nargs="+", choices=["simclr", "dino"], default=["simclr", "dino"]
    )
    parser.add_argument(
        "--reference-fraction",
        type=float,
        default=0.25,
        help="fraction of the images the (slow) per-sample pipelines time",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    workloads = {
        "SimCLR 2x32 (CIFAR-10)": (
            preset("simclr", 32),
            CIFAR_MEAN,
            CIFAR_STD,
            load_images(DATA / "cifar10-jpeg" / "test", args.cifar_images),
            False,
            256,
            4096,
        ),
        "DINO 2x224+8x96 (Imagewoof 160 px)": (
            preset("dino", 224, 96, num_local=8),
            IMAGENET_MEAN,
            IMAGENET_STD,
            load_images(DATA / "imagewoof2-160" / "train", args.woof_images),
            True,
            32,
            256,
        ),
    }
    keys = {"simclr": "SimCLR 2x32 (CIFAR-10)", "dino": "DINO 2x224+8x96 (Imagewoof 160 px)"}
    workloads = {keys[k]: workloads[keys[k]] for k in args.workloads}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for name, (groups, mean, std, images, padded, batch, gpu_batch) in workloads.items():
        views_per_image = sum(g.num for g in groups)
        pil = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
        subset = pil[: max(batch, int(len(pil) * args.reference_fraction))]
        per_sample = {
            "MultiCropTransform (PIL, per sample)": MultiCropTransform(groups, mean, std),
            "torchvision v2 (PIL, per sample)": torchvision_v2(groups, list(mean), list(std)),
        }
        # (pipeline, device, threads, batch, timer): each timer returns seconds per image.
        runs: list[tuple[str, str, int | str, int, Callable[[], float]]] = [
            (label, "cpu", args.threads, batch, partial(time_per_sample, t, subset, batch))
            for label, t in per_sample.items()
        ]
        for device in devices:
            size = batch if device.type == "cpu" else gpu_batch
            augment = BatchedMultiCrop(groups, mean, std).to(device)
            repeat = 1 if device.type == "cpu" else max(1, 8 * size // len(images))
            batches = make_batches(images * repeat, size, device, padded)
            threads = args.threads if device.type == "cpu" else "-"
            timer = partial(time_batched, augment, batches)
            runs.append(("batched (ours)", device.type, threads, size, timer))
        # Round-robin rounds, best of each: load from other processes hits all pipelines alike;
        # the ratio to the first pipeline is also taken per round (median over the rounds).
        rounds = [[run[4]() for run in runs] for _ in range(args.repeats)]
        best = [min(times) for times in zip(*rounds, strict=True)]
        for k, (label, device, threads, size, _) in enumerate(runs):
            median = statistics.median(times[0] / times[k] for times in rounds)
            rows.append(
                (label, name, device, threads, size, best[k], views_per_image, best[0], median)
            )

    print(
        "| pipeline | workload | device | threads | batch | views/s | images/s "
        "| vs MultiCropTransform (best of each) | (median of the per-round ratios) |"
    )
    print("|---|---|---|---|---|---:|---:|---:|---:|")
    for label, name, device, threads, batch, value, views, base, median in rows:
        print(
            f"| {label} | {name} | {device} | {threads} | {batch} | {views / value:,.0f} "
            f"| {1 / value:,.0f} | {base / value:.2f}x | {median:.2f}x |"
        )


if __name__ == "__main__":
    main()
