"""One checkpoint per run, ``last.ckpt``: what ``--ckpt_path last`` resumes."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Rewrite ``<dirpath>/last.ckpt`` at every training epoch end (after that epoch's validation)
    and, when ``every_n_train_steps`` is set, every that many optimizer steps: one file, always
    the newest state. Lightning's ``ModelCheckpoint`` cannot combine step and epoch triggers in
    one callback, and two callbacks with ``save_last`` leave three copies of the final state.

    Args:
        every_n_train_steps: also save every this many optimizer steps (0: only at epoch ends).
        dirpath: folder of ``last.ckpt`` (default: the CLI's ``<run_dir>/checkpoints``).

    Examples:
        >>> checkpoint = LastCheckpoint(every_n_train_steps=1000)
    """

    def __init__(self, every_n_train_steps: int = 0, dirpath: str | None = None) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath,
            filename=self.CHECKPOINT_NAME_LAST,
            save_top_k=1,
            every_n_train_steps=every_n_train_steps or None,
            every_n_epochs=0,  # epoch ends: on_train_epoch_end below
            enable_version_counter=False,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
