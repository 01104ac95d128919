"""Write each training batch's features into a :class:`~lightning_ssl.nn.memory_bank.MemoryBank`.

The features and indices are gathered from all processes before the update, so every rank holds
the same bank (InstDisc). The bank is a submodule of the LightningModule: its rows are
checkpointed with the model and this callback has no state of its own. As a callback it runs
before Lightning's ``ModelCheckpoint`` (always last), so a checkpoint written after a batch holds
that batch's update and a resumed run continues exactly.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from lightning_ssl import distributed
from lightning_ssl.nn.memory_bank import MemoryBank


class MemoryBankUpdater(pl.Callback):
    """``bank.update(features, indices, momentum)`` after every training batch, over all ranks.

    ``training_step`` returns ``{"loss": ..., "bank_features": v.detach(), "bank_indices": i}``.

    Args:
        bank: A function returning the bank (it may be built at ``setup``).
        momentum: Weight of the old entry (InstDisc: 0.5).

    Examples:
        >>> def configure_callbacks(self):  # doctest: +SKIP
        ...     return [MemoryBankUpdater(lambda: self.memory_bank, momentum=0.5)]
    """

    def __init__(self, bank: Any, momentum: float) -> None:
        self.bank, self.momentum = bank, momentum

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        bank: MemoryBank = self.bank()
        features = distributed.gather_no_grad(outputs["bank_features"])
        indices = distributed.gather_no_grad(outputs["bank_indices"])
        bank.update(features, indices, self.momentum)
