"""LightningCLI over every method and DataModule: ``fit``, ``validate``, ``test``, ``predict``.

The ``lightning-ssl`` command itself is :func:`lightning_ssl.commands.main`, which dispatches
here (this module never imports it back).

Examples:
    ``lightning-ssl fit --config configs/simclr/cifar10.yaml --data.init_args.data_dir DIR``
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lightning_ssl.callbacks.epoch_end_resume import EpochEndResume
from lightning_ssl.callbacks.run_info import RunInfo
from lightning_ssl.callbacks.warmup_check import WarmupCheck
from lightning_ssl.checkpoint import check_checkpoint_method, load_checkpoint
from lightning_ssl.checkpoint_io import AtomicCheckpointIO
from lightning_ssl.cli_messages import (
    ConciseArgumentParser,
    filter_third_party_noise,
    user_errors,
)
from lightning_ssl.data import SSLDataModule
from lightning_ssl.eval import finetune, knn_eval, linear  # noqa: F401 (short names: --model FineTune)
from lightning_ssl.lightning_types import trainer_attributes
from lightning_ssl.loggers import configure_wandb, place_loggers
from lightning_ssl.methods import SSLMethod  # noqa: F401 (short names: --model SimCLR)
from lightning_ssl.run_folder import check_new_fit, record_evaluation, resolve_ckpt_path
from lightning_ssl.run_lock import RunFolderLock
from lightning_ssl.signals import GracefulStop
from lightning_ssl.validation import check_trainer

#: Values the data knows, linked into the method so that no config types them twice.
DATA_TO_MODEL = ("num_classes", "image_size", "num_global_crops", "num_local_crops")


class LightningSSLCLI(LightningCLI):
    """LightningCLI in subclass mode over ``LightningModule`` (every :class:`SSLMethod`, and the
    offline evaluations of :mod:`lightning_ssl.eval`) and :class:`SSLDataModule`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in DATA_TO_MODEL:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="The run's folder (checkpoints, logs, config.yaml, run.json); sets "
            "trainer.default_root_dir. --ckpt_path last resumes the run in it; "
            "--ckpt_path last_if_exists resumes only when it holds a checkpoint.",
        )
        parser.add_argument(
            "--log_model",
            type=bool | str | None,
            default=None,
            help="W&B checkpoint artifacts: true (final checkpoints) or all (every checkpoint).",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand or "", self.config)
        self._place_run(config, subcommand)
        # A checkpoint of another method must fail with both names, not run the other method;
        # a file that would run code fails here, before anything is built.
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            checkpoint = load_checkpoint(ckpt_path)
            check_checkpoint_method(checkpoint, config.model.class_path.rsplit(".", 1)[-1])

    def _place_run(self, config: Any, subcommand: str | None) -> None:
        """One folder per run: ``--run_dir`` sets ``default_root_dir``, ``--ckpt_path last`` is
        looked up in it only, a new ``fit`` into a folder holding a run is refused, and every
        logger writes into it."""
        trainer = config.trainer
        if subcommand is None:  # run=False (notebooks): place the loggers, nothing to resume
            place_loggers(trainer.logger, trainer.default_root_dir or os.getcwd(), "fit")
            return
        if config.get("run_dir"):
            trainer.default_root_dir = config.run_dir
        root = trainer.default_root_dir or os.getcwd()
        fit = subcommand == "fit"
        requested = config.get("ckpt_path")
        config.ckpt_path = resolve_ckpt_path(root, requested, fit)
        self._resuming = fit and config.ckpt_path is not None
        # last_if_exists may start afresh in a folder whose run died before its first checkpoint.
        if fit and not trainer.fast_dev_run and requested is None:
            check_new_fit(root)
        place_loggers(trainer.logger, root, subcommand, config.get("log_model"))
        self._eval_start = time.time()

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
        attrs = trainer_attributes(trainer)
        if attrs.fast_dev_run:
            # Lightning 2.6's ModelCheckpoint.on_train_end still writes last.ckpt under
            # fast_dev_run, which would overwrite a real run's last.ckpt with a 1-step model.
            attrs.callbacks = [c for c in attrs.callbacks if not isinstance(c, ModelCheckpoint)]
        elif not any(isinstance(c, RunInfo) for c in attrs.callbacks):
            # Not under fast_dev_run (it would overwrite a real run's run.json). First, so that
            # a checkpoint saved at epoch end holds this epoch's time and images.
            attrs.callbacks.insert(0, RunInfo())
        for missing in (WarmupCheck, EpochEndResume):
            if not any(isinstance(c, missing) for c in attrs.callbacks):
                attrs.callbacks.append(missing())
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        dataset = type(data).__name__.removesuffix("DataModule").lower()
        subcommand = self.subcommand
        assert subcommand is not None, "called from before_fit/validate/test only"
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                configure_wandb(
                    logger,
                    trainer.default_root_dir,
                    subcommand,
                    resume=getattr(self, "_resuming", False),
                    group=type(model).__name__.lower(),
                    tags=[dataset, str(model.hparams.get("backbone", ""))],
                )

    def before_fit(self) -> None:
        self._set_run_defaults()
        self._add_fault_handling()
        # Linear evaluation trains on labelled single images, not on the pretraining views.
        if callable(wrap := getattr(self.model, "wrap_datamodule", None)):
            self.datamodule = wrap(self.datamodule)

    def _add_fault_handling(self) -> None:
        """One writer per run folder (locked here, before Lightning's ``setup`` creates the
        loggers' version folders), and
        a checkpoint and a non-zero exit on SIGTERM/SIGUSR1/Ctrl-C (first among the callbacks,
        so that ``run.json`` records the signal after the save)."""
        callbacks = trainer_attributes(self.trainer).callbacks
        if not trainer_attributes(self.trainer).fast_dev_run:
            # After RunInfo: on an exception the lock is released once run.json is written.
            infos = [i for i, c in enumerate(callbacks) if isinstance(c, RunInfo)]
            lock = RunFolderLock()
            callbacks.insert(infos[0] + 1 if infos else 0, lock)
            # The rank from the environment: launched ranks have theirs. (Lightning sets the
            # attribute on the function object, which its type does not declare.)
            if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
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
        self._record_evaluation()
        self._finish_wandb()

    def after_test(self) -> None:
        self._record_evaluation()
        self._finish_wandb()

    def _record_evaluation(self) -> None:
        """Add this validate/test to the run's ``run.json`` (its history stays untouched)."""
        trainer = self.trainer
        if trainer_attributes(trainer).fast_dev_run or not trainer.is_global_zero:
            return
        metrics = {}
        for key, value in trainer.callback_metrics.items():
            if isinstance(value, (int, float)) or getattr(value, "numel", lambda: 0)() == 1:
                metrics[key] = float(value)
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        record_evaluation(
            trainer.default_root_dir,
            {
                "subcommand": self.subcommand,
                "ckpt_path": os.path.abspath(ckpt_path) if ckpt_path else None,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._eval_start)),
                "log_dir": trainer.log_dir,
                "metrics": metrics,
            },
        )

    def before_validate(self) -> None:
        self._set_run_defaults()

    def before_test(self) -> None:
        self._set_run_defaults()


def _user_error(error: BaseException) -> BaseException | None:
    """The first error of the user's input (:func:`~lightning_ssl.cli_messages.user_errors`) in
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
    filter_third_party_noise()
    return LightningSSLCLI(
        LightningModule,
        SSLDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        parser_class=ConciseArgumentParser,
        save_config_kwargs={"overwrite": True},
        args=args,
    )
