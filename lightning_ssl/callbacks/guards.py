"""Stop on a non-finite loss before it reaches a checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from lightning_ssl.run_folder import RunFolderError, newest_intact_last


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss is NaN or infinite."""


class NonFiniteLossGuard(L.Callback):
    """Raise :class:`NonFiniteLossError` naming the step when the loss is NaN/Inf.

    Policy: stop (never skip silently), and never write a checkpoint after a non-finite loss:
    ``last.ckpt`` stays the last good state. Resume from it with a lower learning rate:
    ``lightning-ssl fit --config CONFIG --ckpt_path last --model.init_args.lr LR`` (the new value
    applies from the resumed step; see :mod:`lightning_ssl.resume_hparams`).

    With ``check_every_n_steps=1`` (default) the loss is read before the backward pass, so the
    optimizer never applies a step computed from a non-finite loss; reading it costs one
    host-device synchronisation per step. A larger interval keeps the GPU's queue full: the
    first bad step is recorded on the device and read every ``check_every_n_steps`` steps and
    before every checkpoint (a checkpoint is then refused, the run stops naming that step).

    Args:
        check_every_n_steps: how often the host reads the finiteness flag.

    Examples:
        >>> guard = NonFiniteLossGuard(check_every_n_steps=50)  # for long GPU runs
        >>> # Trainer(callbacks=[guard]) replaces the method's default per-step guard
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: Tensor | None = None  # global step of the first bad loss, -1 if none

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        finite = torch.isfinite(loss.detach()).all()
        if self.check_every_n_steps == 1:
            if not finite:
                self._raise(loss.detach(), trainer.global_step, trainer)
            return
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        first_seen = (~finite) & (self._first_bad < 0)
        self._first_bad = torch.where(first_seen, trainer.global_step, self._first_bad)
        if (trainer.global_step + 1) % self.check_every_n_steps == 0:
            self.check(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        """Raise if a non-finite loss was recorded since the start (reads the device flag)."""
        if self._first_bad is not None and (step := int(self._first_bad)) >= 0:
            self._raise(None, step, trainer)

    @staticmethod
    def _raise(loss: Tensor | None, step: int, trainer: L.Trainer) -> None:
        value = f" ({loss.item()})" if loss is not None else ""
        where = (
            f"(epoch {trainer.current_epoch}, batch {trainer.fit_loop.batch_idx}); stopped "
            "before the optimizer step"
            if loss is not None
            else "(found at a deferred check); stopped before any later checkpoint"
        )
        raise NonFiniteLossError(
            f"non-finite training loss{value} at global step {step} {where}; {_saved(trainer)}"
        )


def _newest_checkpoint(trainer: L.Trainer) -> Path | None:
    """The newest checkpoint file the trainer's ``ModelCheckpoint``s wrote or can resume from
    (their tracked best/last paths and the newest intact ``last*.ckpt`` of their folders, found
    as ``--ckpt_path last`` finds it), or ``None`` when none exists."""
    paths: set[str] = set()
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        if callback.dirpath is not None and os.path.isdir(callback.dirpath):
            try:
                last = newest_intact_last(callback.dirpath)
            except RunFolderError:
                last = None  # every last*.ckpt there is corrupt: none to name
            paths |= {os.fspath(last)} if last is not None else set()
        paths |= {callback.last_model_path, callback.best_model_path}
    existing = [path for path in paths if path and os.path.isfile(path)]
    return Path(max(existing, key=lambda path: os.stat(path).st_mtime_ns)) if existing else None


def _saved(trainer: L.Trainer) -> str:
    """What can be resumed: the newest checkpoint (none is written after a bad loss), if any."""
    newest = _newest_checkpoint(trainer)
    if newest is None:
        return "no checkpoint was written before it, so there is nothing to resume from"
    return (
        f"the newest checkpoint, {newest}, was written before it; resume from it with a lower "
        "learning rate: lightning-ssl fit --config CONFIG --run_dir RUN --ckpt_path last "
        "--model.init_args.lr LR"
    )
