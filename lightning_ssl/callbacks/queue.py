"""Enqueue the keys of each training batch into a :class:`~lightning_ssl.nn.queue.FeatureQueue`.

The keys are gathered from all processes before the push, so every rank holds the same queue
(MoCo's ``_dequeue_and_enqueue``). The queue itself is a submodule of the LightningModule: its
contents are checkpointed with the model and this callback has no state of its own.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn

from lightning_ssl import distributed
from lightning_ssl.nn.queue import FeatureQueue


class QueueUpdater(pl.Callback):
    """Push ``outputs[output_key]`` of every training batch into ``queue``, gathered over ranks.

    ``training_step`` returns ``{"loss": loss, "queue_keys": keys.detach()}``; the push happens in
    ``on_train_batch_end``, after the loss used the queue, once per batch (also under gradient
    accumulation). Every rank must push the same number of keys (use ``drop_last=True``).

    Args:
        queue: The queue, a submodule of the LightningModule (so it is saved in checkpoints).
        output_key: Key of the ``training_step`` output holding the keys, shape ``(B, dim)``.
        label_key: Key of the output holding the labels ``(B,)`` if the queue has labels; ``None``
            takes them from the batch, ``(views, labels)``.
        start_epoch: First epoch whose keys are enqueued (NNCLR/SwAV start the queue late).

    Examples:
        >>> def configure_callbacks(self):  # doctest: +SKIP
        ...     return [QueueUpdater(self.queue, output_key="queue_keys")]
    """

    def __init__(
        self,
        queue: FeatureQueue,
        output_key: str = "queue_keys",
        label_key: str | None = None,
        start_epoch: int = 0,
    ) -> None:
        if not isinstance(queue, FeatureQueue):
            raise TypeError(f"queue must be a FeatureQueue, got {type(queue).__name__}")
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")
        self.queue = queue
        self.output_key = output_key
        self.label_key = label_key
        self.start_epoch = start_epoch
        self._size_checked = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not any(m is self.queue for m in pl_module.modules()):
            raise ValueError(
                "the queue must be a submodule of the LightningModule, so that it moves to the "
                "device and is saved in checkpoints"
            )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.current_epoch < self.start_epoch:
            return
        if not isinstance(outputs, dict) or self.output_key not in outputs:
            raise KeyError(f"training_step must return a dict with the key {self.output_key!r}")
        keys = distributed.gather_no_grad(outputs[self.output_key].detach())
        labels = None
        if self.queue.with_labels:
            labels = outputs[self.label_key] if self.label_key is not None else batch[1]
            labels = distributed.gather_no_grad(labels.detach())
        self._check_size(keys.shape[0])
        self.queue.push(keys, labels)

    def _check_size(self, global_batch: int) -> None:
        if not self._size_checked and global_batch > self.queue.size:
            rank_zero_warn(
                f"The queue holds {self.queue.size} rows but the global batch has {global_batch} "
                f"keys: only the last {self.queue.size} keys of each batch are kept."
            )
        self._size_checked = True
