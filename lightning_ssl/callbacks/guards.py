"""Stop on a non-finite loss before it reaches the weights or a checkpoint."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss is NaN or infinite."""


class NonFiniteLossGuard(L.Callback):
    """Raise :class:`NonFiniteLossError` naming the step when the loss is NaN/Inf.

    The check runs before the backward pass, so the optimizer never applies a step computed
    from a non-finite loss, and no checkpoint is written after it: ``last.ckpt`` stays the last
    good state. Policy: stop (never skip silently). Resume with ``--ckpt_path last`` after
    lowering the learning rate or raising the temperature.
    """

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at global step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}, batch {trainer.fit_loop.batch_idx}); stopped "
                "before the optimizer step, the last checkpoint is intact"
            )
