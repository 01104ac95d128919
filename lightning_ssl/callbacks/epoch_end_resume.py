"""Resuming from a checkpoint written after an epoch's last training batch."""

from __future__ import annotations

import lightning as L


class EpochEndResume(L.Callback):
    """Start the epoch after a restored epoch-end checkpoint as an uninterrupted run would.

    A checkpoint written in ``on_train_batch_end`` of an epoch's last batch (``ModelCheckpoint``
    with ``every_n_train_steps``, or a signal's save during that epoch's validation) is closed
    by Lightning 2.5-2.6 on restore, yet the fit loop keeps its "restarted mid-epoch" stage for
    the next epoch: that epoch is neither counted as started nor given its
    ``on_train_epoch_start`` hooks. A checkpoint written during it then records it as finished,
    and a run resumed from that one trains the epoch a second time (global steps past the
    schedule, weights unlike the uninterrupted run's). Clearing the stage once the restored
    epoch is closed lets the next epoch begin normally. The CLI adds this callback to every
    run; other Trainers can pass it in ``callbacks``.

    Examples:
        >>> trainer = L.Trainer(callbacks=[EpochEndResume()], logger=False)
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fit_loop = trainer.fit_loop
        epoch_loop = fit_loop.epoch_loop
        epochs = fit_loop.epoch_progress.current
        closed_on_restore = (
            getattr(fit_loop, "restarted_mid_epoch", False)
            and getattr(epoch_loop, "restarted_on_train_batch_end", False)
            and epoch_loop.batch_progress.is_last_batch
            # fit_loop.reset() counted the restored epoch as completed; a Lightning that left
            # it open would finish it itself, so the stage is then kept.
            and epochs.completed == epochs.ready
        )
        if closed_on_restore:
            fit_loop.reset_restart_stage()
