"""Shared by the exact-resume tests: the shipped SimCLR CIFAR-10 config at a tiny size through
the CLI, the events a run reports to a fault injector, and a bitwise comparison of everything a
run trains.

Tiny sizes: 96 training images in batches of 16 (6 steps per epoch), 2 epochs, 2 loader
worker processes (the shipped configs use workers), a checkpoint every 2 optimizer steps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "simclr" / "cifar10.yaml"
TRAIN, BATCH, EPOCHS, WORKERS = 96, 16, 2, 2
STEPS = EPOCHS * TRAIN // BATCH


#: The SimCLR config's heads at a tiny size (other configs pass their own ``model_args``).
SMALL_PROJECTOR = ("--model.init_args.proj_hidden_dim=64", "--model.init_args.proj_dim=32")


def cli_args(
    data_dir: Path,
    root: Path,
    workers: int = WORKERS,
    *extra: str,
    config: Path = CONFIG,
    model_args: tuple[str, ...] = SMALL_PROJECTOR,
) -> list[str]:
    """``fit`` arguments: a shipped config (default SimCLR's) at tiny sizes, runs under ``root``;
    ``model_args`` shrink the method's own parts (the backbone is timm's ``test_resnet``).

    Checkpoints (all in ``root/checkpoints``): the config's own (``last.ckpt`` and the newest
    ``epoch=E-step=S.ckpt`` after each validation), and every 2 optimizer steps a kept
    ``step=S.ckpt`` and a ``last-v<n>.ckpt`` for ``--ckpt_path last``.
    """
    return [
        "fit",
        f"--config={config}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.precision=32",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        f"--trainer.max_epochs={EPOCHS}",
        "--model.init_args.backbone=timm:test_resnet",
        "--model.init_args.cifar_stem=false",
        *model_args,
        f"--data.init_args.data_dir={data_dir}",
        f"--data.init_args.train_subset={TRAIN}",
        "--data.init_args.val_subset=32",
        f"--data.init_args.batch_size={BATCH}",
        f"--data.init_args.num_workers={workers}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=2",
        "--trainer.callbacks.save_top_k=-1",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.filename={step}",
        *extra,
    ]


def trained_state(checkpoint: Path) -> dict[str, Any]:
    """Everything training changes: weights and buffers, optimizer and schedule, online probe."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return {
        "global_step": saved["global_step"],
        "model": saved["state_dict"],
        "optimizer": saved["optimizer_states"],
        "schedule": saved["lr_schedulers"],
        "probe": saved["callbacks"]["OnlineLinearProbe"],
    }


def final_checkpoints(root: Path) -> list[Path]:
    """The checkpoints a run wrote at its last step (``epoch=1-step=12.ckpt``, ``step=12.ckpt``
    and their ``-v<n>`` versions); at least one exists once a run has finished."""
    folder = root / "checkpoints"
    return sorted(
        path
        for path in folder.glob("*.ckpt")
        if torch.load(path, map_location="cpu", weights_only=True)["global_step"] == STEPS
    )


def assert_bitwise_equal(got: Any, expected: Any, where: str = "") -> None:
    """Tensors equal bit for bit (dtype and shape included), other values equal, recursively."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor), where
        assert got.dtype == expected.dtype and got.shape == expected.shape, where
        bits = [t.detach().reshape(-1).contiguous().view(torch.uint8) for t in (got, expected)]
        assert torch.equal(*bits), f"{where}: {(got.double() - expected.double()).abs().max()} off"
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for key in expected:
            assert_bitwise_equal(got[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list | tuple):
        assert len(got) == len(expected), where
        for index, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_bitwise_equal(a, b, f"{where}[{index}]")
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


class FaultPoints(L.Callback):
    """Appends what the run is doing to ``path``, one line per event, for a fault injector.

    Lines: ``start <global step> <epoch>`` when training starts (after a restore),
    ``batch <global step> <epoch>`` after each training batch, ``sanity`` or ``validation`` when
    a validation pass starts, ``validated`` when it ends. No state: it changes nothing in the
    run (the uninterrupted reference run has it too).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, line: str) -> None:
        with open(self.path, "a") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())

    def on_train_start(self, trainer, pl_module) -> None:
        self._write(f"start {trainer.global_step} {trainer.current_epoch}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._write(f"batch {trainer.global_step} {trainer.current_epoch}")

    def on_validation_start(self, trainer, pl_module) -> None:
        self._write("sanity" if trainer.sanity_checking else "validation")

    def on_validation_end(self, trainer, pl_module) -> None:
        self._write("validated")
