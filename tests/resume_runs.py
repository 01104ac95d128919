"""Shared by the exact-resume tests: a shipped config (SimCLR's CIFAR-10 one by default) at a
tiny size through the CLI (:func:`cli_args`, run in this process by :func:`fit`, or both with
the final state read back by :func:`fit_and_state`), the events a run reports to a fault
injector, and a bitwise comparison of everything a run trains.

Tiny sizes: 96 training images in batches of 16 (6 steps per epoch), 2 epochs, 2 loader
worker processes (the shipped configs use workers), a checkpoint every 2 optimizer steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_ssl.cli import run_cli
from tests.cli_run import lightning_ssl_in_process

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "simclr" / "cifar10.yaml"
TRAIN, BATCH, EPOCHS, WORKERS = 96, 16, 2, 2
STEPS = EPOCHS * TRAIN // BATCH


#: The SimCLR config's heads at a tiny size (other configs pass their own ``model_args``).
SMALL_PROJECTOR = ("--model.init_args.proj_hidden_dim=64", "--model.init_args.proj_dim=32")
#: timm's tiny ResNet without the CIFAR stem (ViT configs pass their own ``backbone_args``).
TEST_RESNET = ("--model.init_args.backbone=timm:test_resnet", "--model.init_args.cifar_stem=false")


def tiny_fit_args(
    data_dir: Path,
    root: Path,
    workers: int = WORKERS,
    *,
    config: Path = CONFIG,
    model_args: tuple[str, ...] = SMALL_PROJECTOR,
    backbone_args: tuple[str, ...] = TEST_RESNET,
    val_subset: int = 32,
) -> list[str]:
    """``fit`` arguments of a shipped config (default SimCLR's) on the CPU in float32, logs and
    checkpoints under ``root``, ``val_subset`` validation images, ``workers`` loader workers;
    ``backbone_args`` and ``model_args`` shrink the method's parts. Training sizes, epochs and
    extra checkpoints are the caller's (:func:`cli_args` adds the resume tests' ones)."""
    return [
        "fit",
        f"--config={config}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.precision=32",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        *backbone_args,
        *model_args,
        f"--data.init_args.data_dir={data_dir}",
        f"--data.init_args.val_subset={val_subset}",
        f"--data.init_args.num_workers={workers}",
    ]


def cli_args(
    data_dir: Path,
    root: Path,
    workers: int = WORKERS,
    *extra: str,
    epochs: int = EPOCHS,
    **options: Any,
) -> list[str]:
    """``fit`` arguments of :func:`tiny_fit_args` (``options``: its ``config``, ``model_args``,
    ``backbone_args``, ``val_subset``) at the resume tests' sizes: ``TRAIN`` images in batches
    of ``BATCH`` for ``epochs`` epochs (``STEPS`` steps at the default 2), then ``extra``.

    Checkpoints (all in ``root/checkpoints``): the config's own (``last.ckpt`` and the newest
    ``epoch=E-step=S.ckpt`` after each validation), and every 2 optimizer steps a kept
    ``step=S.ckpt`` and a ``last-v<n>.ckpt`` for ``--ckpt_path last``.
    """
    return [
        *tiny_fit_args(data_dir, root, workers, **options),
        f"--trainer.max_epochs={epochs}",
        f"--data.init_args.train_subset={TRAIN}",
        f"--data.init_args.batch_size={BATCH}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=2",
        "--trainer.callbacks.save_top_k=-1",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.filename={step}",
        *extra,
    ]


def fit(args: list[str], root: Path) -> None:
    """Run the CLI on ``args`` in ``root``'s parent folder (where the shipped configs' relative
    paths land) with W&B disabled, in this process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root.parent)
        patch.setenv("WANDB_MODE", "disabled")
        run_cli(args)


def fit_and_state(
    data_dir: Path, root: Path, *extra: str, ckpt: Path | None = None, **options: Any
) -> dict[str, Any]:
    """:func:`fit` of ``cli_args(data_dir, root, WORKERS, *extra, **options)``, resumed from
    ``ckpt`` when given, and the :func:`trained_state` of its last step's ``step=S.ckpt``."""
    resume = (f"--ckpt_path={ckpt}",) if ckpt else ()
    fit(cli_args(data_dir, root, WORKERS, *extra, *resume, **options), root)
    steps = options.get("epochs", EPOCHS) * TRAIN // BATCH
    return trained_state(root / "checkpoints" / f"step={steps}.ckpt")


def console_fit_and_state(
    data_dir: Path, root: Path, ckpt: Path | None = None, **options: Any
) -> dict[str, Any]:
    """:func:`fit_and_state` through the console script's ``main`` (what ``lightning-ssl fit``
    runs, :func:`tests.cli_run.lightning_ssl_in_process`) rather than :func:`fit`'s
    ``run_cli``."""
    resume = [f"--ckpt_path={ckpt}"] if ckpt else []
    args = [*cli_args(data_dir, root, **options), *resume]
    done = lightning_ssl_in_process(*args, cwd=root.parent, env={"WANDB_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    return trained_state(root / "checkpoints" / f"step={STEPS}.ckpt")


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
