"""Warn when a method's learning-rate warm-up is longer than the whole run."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn


class WarmupCheck(L.Callback):
    """Warn at the start of training when ``warmup_epochs`` spans more optimizer steps than the
    run has (a smoke run of a 10-warm-up-epoch recipe): the learning rate would never reach its
    peak. The CLI adds it to every ``fit``.

    Examples:
        >>> trainer = L.Trainer(callbacks=[WarmupCheck()])  # doctest: +SKIP
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        warmup_epochs = pl_module.hparams.get("warmup_epochs")
        if not warmup_epochs:
            return
        # As SSLMethod.configure_optimizers counts them.
        steps_per_epoch = max(1, trainer.num_training_batches // trainer.accumulate_grad_batches)
        warmup_steps = round(warmup_epochs * steps_per_epoch)
        total_steps = int(trainer.estimated_stepping_batches)
        if warmup_steps > total_steps:
            rank_zero_warn(
                f"{warmup_steps} warm-up steps ({warmup_epochs} epochs) exceed the run's "
                f"{total_steps} steps: the learning rate never reaches its peak; lower "
                "--model.init_args.warmup_epochs or train longer"
            )
