"""The SimCLR part of ``gpu_check.py``: a short ResNet-18 CIFAR-10 run, images on the device.

It builds what ``python -m lightning_ssl fit --config configs/simclr/cifar10.yaml`` builds (the
config's model, data and callbacks, the CSV logger only) directly in Python: the CLI needs
jsonargparse and the config's second logger wandb, and a GPU machine may have neither. The
data options are the ones a fast GPU run uses (``batched_augmentation``, ``images_on_device``).

Data: ``prepare_cifar10`` accepts a folder holding ``train.zip`` (and ``test.zip``, optional),
as ``../shared/data/cifar10-jpeg`` ships them, or an extracted ``train/`` + ``test/`` tree.
Without a test split, 1,000 training images per class stand in for it (speed only: the probe's
accuracy is then not a test figure).
"""

from __future__ import annotations

import importlib
import itertools
import shutil
import statistics
import time
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from lightning_ssl.data import CIFAR10DataModule
from lightning_ssl.data.transforms import ViewGroup
from lightning_ssl.loggers import CSVLogger
from lightning_ssl.methods import SimCLR

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "simclr" / "cifar10.yaml"
#: Class paths the config may name for callbacks: the run builds nothing else.
ALLOWED_PREFIXES = ("lightning_ssl.callbacks.", "lightning.pytorch.callbacks.")
#: Callbacks left out: the bar only prints.
LEFT_OUT = ("TQDMProgressBar",)


def _extract(archive: Path, target: Path, per_class: int | None) -> None:
    with zipfile.ZipFile(archive) as zipped:
        names = [n for n in zipped.namelist() if not n.endswith("/")]
        if per_class is not None:
            taken: dict[str, int] = {}
            chosen = []
            for name in sorted(names):
                folder = name.rsplit("/", 1)[0]
                if taken.get(folder, 0) < per_class:
                    taken[folder] = taken.get(folder, 0) + 1
                    chosen.append(name)
            names = chosen
        zipped.extractall(target, members=names)


def _copy_tree(source: Path, target: Path, per_class: int | None, offset: int = 0) -> None:
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        files = files[offset : offset + per_class] if per_class is not None else files[offset:]
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copy(file, target / folder.name / file.name)


def prepare_cifar10(source: Path, work: Path, per_class: int | None = None) -> tuple[Path, str]:
    """An extracted CIFAR-10 tree (``train/``, ``test/``) from zips or a tree, and a note.

    ``per_class``: keep only that many images per class (smoke runs); the full tree is used in
    place when it is already extracted and complete.
    """
    note = ""
    if (source / "train").is_dir() and per_class is None and (source / "test").is_dir():
        return source, note
    root = work / "cifar10"
    if root.exists():
        shutil.rmtree(root)
    for split in ("train", "test"):
        if (source / f"{split}.zip").is_file():
            _extract(source / f"{split}.zip", root, per_class)
        elif (source / split).is_dir():
            _copy_tree(source / split, root / split, per_class)
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"{source} holds neither train.zip nor train/ (CIFAR-10 JPEGs)")
    if not (root / "test").is_dir():
        _copy_tree(root / "train", root / "test", per_class or 1000)
        note = "no test split: training images stand in for it (speed only)"
    return root, note


def _callbacks(entries: list[dict]) -> list[L.Callback]:
    callbacks = []
    for entry in entries:
        path = entry["class_path"]
        module, _, name = path.rpartition(".")
        if name in LEFT_OUT:
            continue
        if not path.startswith(ALLOWED_PREFIXES):
            raise ValueError(f"unexpected callback {path} in {CONFIG}")
        cls = getattr(importlib.import_module(module), name)
        callbacks.append(cls(**entry.get("init_args", {})))
    return callbacks


class EpochClock(L.Callback):
    """Wall time of every epoch (start to start, validation and checkpoints included) and of
    the training steps of each epoch (first step's start to last step's end)."""

    def __init__(self) -> None:
        self.epoch_starts: list[float] = []
        self.step_spans: list[tuple[float, float, int]] = []  # (start, end, images)
        self.end = 0.0

    def _now(self, module: L.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_starts.append(self._now(pl_module))
        self.step_spans.append((0.0, 0.0, 0))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.step_spans[-1] = (self._now(pl_module), 0.0, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        start, _, images = self.step_spans[-1]
        self.step_spans[-1] = (start, 0.0, images + len(batch[1]))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        start, _, images = self.step_spans[-1]
        self.step_spans[-1] = (start, self._now(pl_module), images)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.end = self._now(pl_module)


def build(data_dir: Path, work: Path, smoke: bool) -> tuple[SimCLR, CIFAR10DataModule, dict]:
    """The config's model, DataModule and trainer options, with on-device data."""
    config = yaml.safe_load(CONFIG.read_text())
    data_args: dict[str, Any] = dict(config["data"]["init_args"])
    data_args.update(
        data_dir=str(data_dir),
        views=[ViewGroup(**view) for view in data_args["views"]],
        batched_augmentation=True,
        images_on_device=True,
        cache_dir=str(work / "decoded"),
    )
    model_args: dict[str, Any] = dict(config["model"]["init_args"])
    if smoke:  # tiny network and batches: CPU seconds, same code path
        data_args.update(batch_size=32, eval_batch_size=64, num_workers=0)
        model_args.update(backbone="timm:test_resnet", cifar_stem=False, channels_last=False)
    data = CIFAR10DataModule(**data_args)
    for name in ("num_classes", "image_size", "num_global_crops", "num_local_crops"):
        model_args[name] = getattr(data, name)  # the CLI's links
    return SimCLR(**model_args), data, config["trainer"]


def run(source: Path, work: Path, epochs: int, time_left_s: float, smoke: bool) -> dict:
    """Train a few epochs; images/s of the steps and the projected wall time of 200 epochs."""
    data_dir, note = prepare_cifar10(source, work, per_class=8 if smoke else None)
    model, data, trainer_config = build(data_dir, work, smoke)
    clock = EpochClock()
    gpu = torch.cuda.is_available() and not smoke
    trainer = L.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision=trainer_config["precision"] if gpu else "32-true",
        max_epochs=epochs,
        max_time={"seconds": max(1, int(time_left_s))},
        default_root_dir=str(work / "run"),
        logger=CSVLogger(str(work / "run")),
        log_every_n_steps=trainer_config["log_every_n_steps"],
        callbacks=[*_callbacks(trainer_config["callbacks"]), clock],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return _summary(clock, data, time.perf_counter() - start, note)


def _summary(clock: EpochClock, data: CIFAR10DataModule, wall: float, note: str) -> dict:
    starts = [*clock.epoch_starts, clock.end]
    epoch_s = [b - a for a, b in itertools.pairwise(starts)]
    steady = [(e - s, n) for s, e, n in clock.step_spans[1:] if e > s] or [
        (e - s, n) for s, e, n in clock.step_spans if e > s
    ]
    if not epoch_s or not steady:
        raise RuntimeError("no complete epoch within the time left")
    images_per_s = sum(n for _, n in steady) / sum(t for t, _ in steady)
    later = epoch_s[1:] or epoch_s
    projected = epoch_s[0] + 199 * statistics.median(later)
    return {
        "train_images": len(data.dataset("train")),
        "batch_size": data.batch_size,
        "epochs_run": len(epoch_s),
        "first_epoch_s": round(epoch_s[0], 2),
        "later_epoch_s_median": round(statistics.median(later), 2),
        "train_images_per_s": round(images_per_s, 1),
        "projected_200_epochs_min": round(projected / 60, 2),
        "fit_wall_s": round(wall, 1),
        "note": note,
    }
