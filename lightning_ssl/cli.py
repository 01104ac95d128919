"""The ``lightning-ssl`` command: LightningCLI over every method and DataModule.

Example:
    ``lightning-ssl fit --config configs/simclr/cifar10.yaml --data.init_args.data_dir DIR``
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger

from lightning_ssl.callbacks.run_info import RunInfo
from lightning_ssl.checkpoint import check_checkpoint_method, load_checkpoint
from lightning_ssl.checkpoint_io import AtomicCheckpointIO
from lightning_ssl.commands import user_errors
from lightning_ssl.data import SSLDataModule
from lightning_ssl.eval import knn_eval, linear  # noqa: F401 (short names: --model KNNEvaluation)
from lightning_ssl.methods import SSLMethod  # noqa: F401 (short names: --model SimCLR)
from lightning_ssl.validation import check_trainer

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
        # A checkpoint of another method must fail with both names, not run the other method;
        # a file that would run code fails here, before anything is built.
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            checkpoint = load_checkpoint(ckpt_path)
            check_checkpoint_method(checkpoint, config.model.class_path.rsplit(".", 1)[-1])

    def _parse_ckpt_path(self) -> None:
        """Keep the model the command line and config files describe.

        LightningCLI would replace the model arguments with the checkpoint's hyperparameters
        (silently dropping ``--model.init_args.lr 0.01`` on resume) and import the class path
        written in the file. Instead the run's own values are compared with the checkpoint's
        when it is restored (:mod:`lightning_ssl.resume_hparams`): optimizer settings and
        other values that do not change the weights apply from the resumed step, the others
        are refused naming both values.
        """

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:
            # jsonargparse reports a constructor's error inside "Does not validate against any
            # of the Union subtypes": raise the user's own error (a hostile or mismatched
            # checkpoint, a value out of its domain) as itself.
            raise _user_error(error) or error from None

    def before_instantiate_classes(self) -> None:
        # W&B logs offline unless the user opts in (no network is the common cluster case).
        os.environ.setdefault("WANDB_MODE", "offline")

    def _set_run_defaults(self) -> None:
        """Checkpoints under ``<default_root_dir>/checkpoints`` (so ``--ckpt_path last`` finds
        them in a new process), written atomically unless the user chose a CheckpointIO, W&B
        group/tags from the method, dataset and backbone, and a :class:`RunInfo` (``run.json``)."""
        trainer, model, data = self.trainer, self.model, self.datamodule
        check_trainer(trainer.accumulate_grad_batches, trainer.max_epochs)
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
        # Linear evaluation trains on labelled single images, not on the pretraining views.
        if callable(wrap := getattr(self.model, "wrap_datamodule", None)):
            self.datamodule = wrap(self.datamodule)

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


def _user_error(error: BaseException) -> BaseException | None:
    """The first error of the user's input (:func:`~lightning_ssl.commands.user_errors`) in
    ``error``'s chain."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not s for s in seen):
        if isinstance(current, user_errors()):
            return current
        seen.append(current)
        current = current.__cause__ or current.__context__
    return None


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


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lightning-ssl`` (see :mod:`lightning_ssl.commands`)."""
    from lightning_ssl.commands import main as commands_main

    commands_main(argv)
