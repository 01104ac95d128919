"""One command that measures a GPU in minutes: augmentation, training step, loss memory, SimCLR.

Made for a machine lent for minutes (see ``benchmarks/README.md`` for the exact device command).
Each part runs in its own ``try``: a failing part records its error and the next one still runs;
the script exits 0 and ends with a summary of the failures. Parts that would not fit in what is
left of ``--budget-s`` are skipped (and say so). Writes ``gpu_check.md`` and ``gpu_check.json``
into ``--out`` (device name, torch/CUDA versions, commit, every part's figures).

Parts (every figure measured in this one process):

1. ``augment``: ``BatchedMultiCrop`` on the device: SimCLR 2 x 32 px CIFAR-10 views/s and DINO
   2 x 224 + 8 x 96 images/s (Imagewoof 160 px with ``--imagewoof``, else CIFAR-10 images
   upscaled to 160 px: the augmentation's cost depends on sizes, not content).
2. ``train_step``: ``benchmarks/train_step.py``: images/s of the plain loop and of ours (bf16,
   channels_last) with ``torch.compile`` off and on.
3. ``loss_memory``: ``benchmarks/loss_memory.py``: plain vs tiled NT-Xent at batch 32,768.
4. ``simclr``: ``benchmarks/gpu_check_simclr.py``: a short ``configs/simclr/cifar10.yaml`` run,
   images on the device, CSV logger: images/s and the projected wall time of 200 epochs.

``--smoke`` runs every part at tiny sizes on the CPU (tests/test_gpu_check.py).

Usage::

    python benchmarks/gpu_check.py --cifar10 ../shared/data/cifar10-jpeg --out OUT
    python benchmarks/gpu_check.py --smoke --out /tmp/check
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark scripts
import augment
import gpu_check_simclr
import loss_memory
import train_step

from lightning_ssl.data.batched import BatchedMultiCrop
from lightning_ssl.data.presets import preset
from lightning_ssl.data.transforms import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD

REPO = Path(__file__).resolve().parents[1]
#: Seconds each part needs at least (GPU sizes): a part is skipped when less is left.
MIN_SECONDS = {"augment": 30, "train_step": 60, "loss_memory": 20, "simclr": 90}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_batched(augmenter: BatchedMultiCrop, batches: list, repeats: int) -> float:
    return min(augment.time_batched(augmenter, batches) for _ in range(repeats))


def part_augment(ctx: dict) -> list[dict]:
    """Views/s and images/s of the batched augmentation on the device (best of repeats)."""
    device, smoke = ctx["device"], ctx["smoke"]
    split = "test" if (ctx["cifar_root"] / "test").is_dir() else "train"
    cifar = augment.load_images(ctx["cifar_root"] / split, 64 if smoke else 4096)
    if ctx["imagewoof"] is not None:
        woof, source = augment.load_images(ctx["imagewoof"] / "train", 8 if smoke else 256), ""
    else:  # same sizes as Imagewoof 160 px: the cost depends on sizes, not content
        up = [F.interpolate(i[None].float(), size=160, mode="bilinear") for i in cifar[:256]]
        woof = [u[0].round().clamp(0, 255).to(torch.uint8) for u in up[: 8 if smoke else 256]]
        source = " (CIFAR-10 upscaled to 160 px)"
    workloads = [
        ("SimCLR 2x32 (CIFAR-10)", preset("simclr", 32), CIFAR_MEAN, CIFAR_STD, cifar,
         False, 32 if smoke else 4096, 2 if smoke else 16),
        (f"DINO 2x224+8x96{source}", preset("dino", 224, 96, num_local=8), IMAGENET_MEAN,
         IMAGENET_STD, woof, True, 4 if smoke else 256, 2 if smoke else 16),
    ]  # fmt: skip
    rows = []
    for name, groups, mean, std, images, padded, batch, cycles in workloads:
        augmenter = BatchedMultiCrop(groups, mean, std).to(device)
        repeat = max(1, cycles * batch // len(images))
        batches = augment.make_batches(images * repeat, batch, device, padded)
        seconds = _best_batched(augmenter, batches, 1 if smoke else 3)
        views = sum(g.num for g in groups)
        rows.append(
            {"workload": name, "device": device.type, "batch": batch,
             "views_per_s": round(views / seconds), "images_per_s": round(1 / seconds)}
        )  # fmt: skip
    return rows


def part_train_step(ctx: dict) -> list[dict]:
    """Images/s of one SimCLR step: plain loop, ours eager, ours compiled (GPU only)."""
    device, smoke = ctx["device"], ctx["smoke"]
    batch, size, steps, warmup = (4, 16, 1, 1) if smoke else (512, 32, 30, 10)
    torch.manual_seed(0)
    views = torch.randn(4, 2, batch, 3, size, size, device=device)
    gpu = device.type == "cuda"
    lean = "bf16, channels_last" if gpu else "fp32 (CPU)"
    runs: list[tuple[str, Callable[[], float]]] = [
        ("plain loop (eager, fp32, NCHW)", lambda: train_step.time_plain(views, steps, warmup)),
        (f"ours ({lean}, eager)",
         lambda: train_step.time_ours(views, steps, warmup, lean=True, compile_backbone=False)),
    ]  # fmt: skip
    if gpu:  # compiling on a CPU takes minutes: GPU only
        runs.append(
            (f"ours ({lean}, compiled)",
             lambda: train_step.time_ours(views, steps, warmup, lean=True, compile_backbone=True))
        )  # fmt: skip
    rows, plain = [], None
    for label, timer in runs:
        seconds = timer()
        plain = plain or seconds
        rows.append(
            {"implementation": label, "batch": batch, "image_size": size, "steps": steps,
             "images_per_s": round(steps * batch / seconds, 1),
             "ms_per_step": round(1000 * seconds / steps, 2),
             "vs_plain": round(plain / seconds, 2)}
        )  # fmt: skip
    return rows


def part_loss_memory(ctx: dict) -> list[dict]:
    """Peak memory and time of plain vs tiled NT-Xent (2 views) at batch 32,768."""
    device, smoke = ctx["device"].type, ctx["smoke"]
    batch, tile = (1024, 256) if smoke else (32768, 4096)
    rows = []
    for impl in ("plain", "tiled"):
        config = loss_memory.Config(
            "nt_xent", impl, batch, 128, tile, 0.1, 1 if smoke else 3, device
        )
        # Smoke: in this process (the CUDA path's function), not in the CPU subprocesses
        result = loss_memory.measure_here(config) if smoke else loss_memory.measure(config)
        if "error" in result:
            raise RuntimeError(f"{impl}: {result['error']}")
        rows.append(
            {"impl": impl, "batch": batch, "dim": 128, "tile_size": tile,
             "peak_mib": round(result["peak"] / 2**20, 1), "fwd_bwd_ms": round(result["ms"], 1)}
        )  # fmt: skip
    if rows[0]["peak_mib"] > 0:
        rows[1]["vs_plain_memory"] = round(rows[1]["peak_mib"] / rows[0]["peak_mib"], 4)
    return rows


def part_simclr(ctx: dict) -> list[dict]:
    """A short SimCLR R18 run (config of configs/simclr/cifar10.yaml, images on the device)."""
    left = ctx["deadline"] - time.perf_counter() - 15
    result = gpu_check_simclr.run(
        ctx["cifar_source"], ctx["work"] / "simclr", 2 if ctx["smoke"] else ctx["epochs"],
        left, ctx["smoke"],
    )  # fmt: skip
    return [result]


PARTS: dict[str, Callable[[dict], list[dict]]] = {
    "augment": part_augment,
    "train_step": part_train_step,
    "loss_memory": part_loss_memory,
    "simclr": part_simclr,
}


def environment(device: torch.device, commit: str | None) -> dict:
    """Device name, versions and commit (``--commit`` where the copy has no ``.git``)."""
    import lightning

    from lightning_ssl.callbacks.run_info import git_commit

    found, dirty = git_commit(REPO)
    gpu = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if gpu else None,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "commit": commit or found,
        "dirty": dirty,
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def run_parts(ctx: dict, names: list[str]) -> dict[str, dict]:
    """Each part in its own ``try``; skipped when the budget left is below its minimum."""
    results: dict[str, dict] = {}
    for name in names:
        left = ctx["deadline"] - time.perf_counter()
        if not ctx["smoke"] and left < MIN_SECONDS[name]:
            results[name] = {"status": "skipped", "error": f"budget: {left:.0f} s left"}
            continue
        start = time.perf_counter()
        try:
            rows = PARTS[name](ctx)
            results[name] = {"status": "ok", "rows": rows}
        except Exception as err:  # fail soft: report and go on
            traceback.print_exc()
            results[name] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        finally:
            if ctx["device"].type == "cuda":
                torch.cuda.empty_cache()
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"[gpu_check] {name}: {results[name]['status']} "
              f"({results[name]['seconds']} s)", flush=True)  # fmt: skip
    return results


def markdown(env: dict, results: dict[str, dict]) -> str:
    lines = ["# gpu_check", "", *(f"- {k}: {v}" for k, v in env.items()), ""]
    for name, result in results.items():
        lines += [f"## {name} ({result['status']}, {result.get('seconds', 0)} s)", ""]
        if result.get("error"):
            lines += [f"error: `{result['error']}`", ""]
        rows = result.get("rows") or []
        if rows:
            keys = list(dict.fromkeys(k for row in rows for k in row))
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]
            lines.append("")
    failed = [f"{n}: {r['error']}" for n, r in results.items() if r["status"] != "ok"]
    lines += ["## summary", "", f"{len(results) - len(failed)}/{len(results)} parts ok", ""]
    lines += [f"- {line}" for line in failed]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    shared = REPO.parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the md/json reports")
    parser.add_argument(
        "--cifar10",
        type=Path,
        default=shared / "cifar10-jpeg",
        help="folder with train.zip (+ test.zip) or an extracted train/ test/ tree",
    )
    parser.add_argument("--work", type=Path, help="scratch folder (data, run); default: a temp dir")
    parser.add_argument("--imagewoof", type=Path, help="extracted Imagewoof 160 px tree (DINO)")
    parser.add_argument("--budget-s", type=float, default=420, help="total seconds for all parts")
    parser.add_argument("--epochs", type=int, default=3, help="SimCLR epochs (budget permitting)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--commit", help="the code's commit, where the copy has no .git")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (tests)")
    return parser.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if gpu else "cpu")
    ctx = {"device": device, "smoke": args.smoke, "out": args.out, "epochs": args.epochs,
           "deadline": start + args.budget_s, "imagewoof": args.imagewoof}  # fmt: skip
    ctx["work"] = args.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))  # not under --out:
    env = environment(device, args.commit)  # the device tool brings back only a few files
    results: dict[str, dict] = {}
    try:
        root, note = gpu_check_simclr.prepare_cifar10(
            args.cifar10, ctx["work"] / "data", per_class=8 if args.smoke else None
        )
        ctx.update(cifar_root=root, cifar_source=root)
        results["data"] = {"status": "ok", "rows": [{"cifar10": str(root), "note": note}]}
    except Exception as err:
        traceback.print_exc()
        results["data"] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
    results["data"]["seconds"] = round(time.perf_counter() - start, 1)
    if results["data"]["status"] == "ok":
        results |= run_parts(ctx, args.parts)
    else:
        results |= run_parts(ctx, [p for p in args.parts if p in ("train_step", "loss_memory")])
    report = markdown(env, results)
    (args.out / "gpu_check.md").write_text(report)
    payload = {"environment": env, "wall_s": round(time.perf_counter() - start, 1), **results}
    (args.out / "gpu_check.json").write_text(json.dumps(payload, indent=2, default=str))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
