"""LightningCLI over every method and DataModule: ``fit``, ``validate``, ``test``, ``predict``.

The ``lightning-ssl`` command itself is :func:`lightning_ssl.commands.main`, which dispatches
here (this module never imports it back).

Example:
    ``lightning-ssl fit --config configs/simclr/cifar10.yaml --data.init_args.data_dir DIR``
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lightning_ssl.callbacks.run_info import RunInfo
from lightning_ssl.checkpoint_io import AtomicCheckpointIO
from lightning_ssl.data import SSLDataModule
from lightning_ssl.eval import knn_eval, linear  # noqa: F401 (short names: --model KNNEvaluation)
from lightning_ssl.last_checkpoint import resolve_last
from lightning_ssl.methods import SSLMethod  # noqa: F401 (short names: --model SimCLR)
from lightning_ssl.methods.base import check_checkpoint_method
from lightning_ssl.run_lock import RunFolderLock
from lightning_ssl.signals import GracefulStop

#: Values the data knows, linked into the method so that no config types them twice.
DATA_TO_MODEL = ("num_classes", "image_size", "num_global_crops", "num_local_crops")


class LightningSSLCLI(LightningCLI):
    """LightningCLI in subclass mode over ``LightningModule`` (every :class:`SSLMethod`, and the
    offline evaluations of :mod:`lightning_ssl.eval`) and :class:`SSLDataModule`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in DATA_TO_MODEL:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        # Before LightningCLI swaps in the checkpoint's own class: a checkpoint of another
        # method must fail with both names, not silently run the other method.
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            check_checkpoint_method(checkpoint, config.model.class_path.rsplit(".", 1)[-1])

    def before_instantiate_classes(self) -> None:
        # W&B logs offline unless the user opts in (no network is the common cluster case).
        os.environ.setdefault("WANDB_MODE", "offline")

    def _set_run_defaults(self) -> None:
        """Checkpoints under ``<default_root_dir>/checkpoints`` (so ``--ckpt_path last`` finds
        them in a new process), written atomically unless the user chose a CheckpointIO, W&B
        group/tags from the method, dataset and backbone, and a :class:`RunInfo` (``run.json``)."""
        trainer, model, data = self.trainer, self.model, self.datamodule
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.fast_dev_run:
            # Lightning 2.6's ModelCheckpoint.on_train_end still writes last.ckpt under
            # fast_dev_run, which would overwrite a real run's last.ckpt with a 1-step model.
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]
        elif not any(isinstance(c, RunInfo) for c in trainer.callbacks):
            # Not under fast_dev_run (it would overwrite a real run's run.json). First, so that
            # a checkpoint saved at epoch end holds this epoch's time and images.
            trainer.callbacks.insert(0, RunInfo())
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                init = logger._wandb_init
                if init.get("dir"):
                    # W&B's service process resolves a relative folder against its own working
                    # directory (that of the first run in this process tree), not this run's.
                    init["dir"] = logger._save_dir = os.path.abspath(init["dir"])
                init.setdefault("group", type(model).__name__.lower())
                dataset = type(data).__name__.removesuffix("DataModule").lower()
                init.setdefault("tags", [dataset, model.hparams.get("backbone", "")])

    def before_fit(self) -> None:
        self._set_run_defaults()
        self._add_fault_handling()
        # Linear evaluation trains on labelled single images, not on the pretraining views.
        if callable(wrap := getattr(self.model, "wrap_datamodule", None)):
            self.datamodule = wrap(self.datamodule)

    def _add_fault_handling(self) -> None:
        """``--ckpt_path last`` that skips a corrupt newest file, one writer per run folder
        (locked here, before Lightning's ``setup`` creates the loggers' version folders), and
        a checkpoint and a non-zero exit on SIGTERM/SIGUSR1/Ctrl-C (first among the callbacks,
        so that ``run.json`` records the signal after the save)."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last" and (path := resolve_last(self.trainer)):
            config["ckpt_path"] = path
        callbacks = self.trainer.callbacks
        if not self.trainer.fast_dev_run:
            # After RunInfo: on an exception the lock is released once run.json is written.
            infos = [i for i, c in enumerate(callbacks) if isinstance(c, RunInfo)]
            lock = RunFolderLock()
            callbacks.insert(infos[0] + 1 if infos else 0, lock)
            if rank_zero_only.rank == 0:  # from the environment: launched ranks have theirs
                lock.lock(self.trainer.default_root_dir)
        callbacks.insert(0, GracefulStop())

    def _finish_wandb(self) -> None:
        # Lightning leaves the W&B run open: the next WandbLogger of this process (a notebook,
        # run_cli in a loop) would silently log into it instead of starting its own run.
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()

    def after_fit(self) -> None:
        self._finish_wandb()

    def after_validate(self) -> None:
        self._finish_wandb()

    def after_test(self) -> None:
        self._finish_wandb()

    def before_validate(self) -> None:
        self._set_run_defaults()

    def before_test(self) -> None:
        self._set_run_defaults()


def run_cli(args: list[str] | None = None) -> LightningSSLCLI:
    """Run the CLI on ``args`` (default: ``sys.argv``) and return it (for tests and notebooks)."""
    return LightningSSLCLI(
        LightningModule,
        SSLDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        args=args,
    )
