"""kNN monitor: weighted kNN accuracy of the current features, on un-augmented images."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.callbacks.accuracy import EpochAccuracy
from lightning_ssl.lightning_types import eval_data, trainer_attributes
from lightning_ssl.nn.knn import knn_predict
from lightning_ssl.validation import check_values


def is_last_epoch(trainer: L.Trainer) -> bool:
    """Whether the running epoch is the run's last (``max_epochs`` or ``max_steps`` reached).

    Examples:
        >>> is_last_epoch(L.Trainer(max_epochs=1))
        True
    """
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    max_steps = trainer.max_steps
    if max_steps is not None and max_steps >= 0:
        # Validation at epoch end runs after that epoch's optimizer steps.
        left = max_steps - trainer.global_step
        return left <= 0 or left < trainer.num_training_batches / max(
            trainer.accumulate_grad_batches, 1
        )
    return False


def bank_size(trainer: L.Trainer, dataset_size: int, batch_size: int, limit: int | None) -> int:
    """Training images in the kNN bank: all of them, at most ``limit`` (``bank_limit``), and no
    more than the trainer's ``limit_val_batches`` allows (that many batches, or that fraction);
    a ``fast_dev_run`` smoke test takes ``fast_dev_run`` batches.

    Examples:
        >>> bank_size(L.Trainer(limit_val_batches=2), 50_000, 256, None)
        512
    """
    size = dataset_size if limit is None else min(limit, dataset_size)
    if fast_dev_run := trainer_attributes(trainer).fast_dev_run:
        return min(size, int(fast_dev_run) * batch_size)
    val_limit = trainer.limit_val_batches
    if isinstance(val_limit, int) and not isinstance(val_limit, bool):
        size = min(size, val_limit * batch_size)
    elif isinstance(val_limit, float) and val_limit < 1.0:
        size = min(size, max(1, round(val_limit * dataset_size)))
    return size


class KNNMonitor(L.Callback):
    """Report ``val/knn_top1`` (and ``val/knn_top5``) every ``every_n_epochs`` epochs and after
    the last epoch.

    At the start of a validation epoch the train split with the evaluation transform
    (``datamodule.train_eval_dataloader()``) is encoded by the module's ``extract_features``,
    each process taking every ``world_size``-th image; the shards are gathered so every rank
    holds the whole bank. Validation features vote by :func:`knn_predict` (cosine, weights
    ``exp(s/T)``), scanned in chunks so memory stays bounded. The accuracies
    (:class:`~lightning_ssl.callbacks.accuracy.EpochAccuracy`) are summed over processes.

    Args:
        k: neighbours (default 200, as InstDisc and lightly's CIFAR-10 protocol).
        temperature: vote temperature (default 0.1).
        every_n_epochs: run on validation epochs whose index is a multiple of this (and on the
            last epoch, so that a run always ends with a kNN figure).
        chunk_size: bank rows compared at once.
        bank_limit: use at most this many training images (a fixed, spread-out subset). The
            trainer's ``limit_val_batches`` limits the bank too: ``N`` batches of the training
            set, or that fraction of it (a smoke run must not encode all 50,000 CIFAR images).

    Examples:
        >>> monitor = KNNMonitor(k=20, temperature=0.07)
    """

    def __init__(
        self,
        k: int = 200,
        temperature: float = 0.1,
        every_n_epochs: int = 1,
        chunk_size: int = 16384,
        bank_limit: int | None = None,
    ) -> None:
        values = dict(k=k, temperature=temperature, every_n_epochs=every_n_epochs)
        check_values("KNNMonitor", {**values, "chunk_size": chunk_size, "bank_limit": bank_limit})
        self.k, self.temperature, self.every_n_epochs = k, temperature, every_n_epochs
        self.chunk_size, self.bank_limit = chunk_size, bank_limit
        self._bank: tuple[Tensor, Tensor] | None = None
        self._accuracy: EpochAccuracy | None = None

    def _active(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        return trainer.current_epoch % self.every_n_epochs == 0 or is_last_epoch(trainer)

    @torch.no_grad()
    def _build_bank(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        extract_features = getattr(pl_module, "extract_features", None)
        if not callable(extract_features):
            name = type(pl_module).__name__
            raise TypeError(f"KNNMonitor needs a module with extract_features(), got {name}")
        loader = eval_data(trainer).train_eval_dataloader()
        dataset = loader.dataset
        assert isinstance(dataset, Sized), "the kNN bank needs a dataset with a length"
        size = bank_size(trainer, len(dataset), loader.batch_size or 1, self.bank_limit)
        indices = torch.arange(len(dataset))
        if len(indices) > size:
            indices = torch.linspace(0, len(dataset) - 1, size).long()
        shard = indices[distributed.rank() :: distributed.world_size()].tolist()
        shard_loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, shard),
            batch_size=loader.batch_size,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            worker_init_fn=loader.worker_init_fn,
        )
        feats, labels = [], []
        with trainer.precision_plugin.forward_context():
            for images, targets in shard_loader:
                if trainer.received_sigterm:  # SIGTERM/SIGUSR1/Ctrl-C: stop within one batch
                    break  # (raised below: leaving the loop first shuts its workers down)
                images = images.to(pl_module.device, non_blocking=True)
                feats.append(F.normalize(extract_features(images).float(), dim=1))
                labels.append(targets.to(pl_module.device))
        if trainer.received_sigterm:
            raise SIGTERMException()
        bank, bank_labels = torch.cat(feats), torch.cat(labels)
        # Shards differ by at most one image: pad with label -1 (never votes) to gather.
        pad = -(-len(indices) // distributed.world_size()) - bank.shape[0]
        bank = torch.cat([bank, bank.new_zeros(pad, bank.shape[1])])
        bank_labels = torch.cat([bank_labels, bank_labels.new_full((pad,), -1)])
        self._bank = (distributed.gather_no_grad(bank), distributed.gather_no_grad(bank_labels))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer):
            self._build_bank(trainer, pl_module)
            self._accuracy = EpochAccuracy(eval_data(trainer).num_classes, pl_module.device)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._bank is None or self._accuracy is None:
            return
        query = F.normalize(outputs["features"].float(), dim=1)
        scores = knn_predict(
            query,
            *self._bank,
            eval_data(trainer).num_classes,
            self.k,
            self.temperature,
            self.chunk_size,
        )
        labels = batch[1]
        keep = labels >= 0
        self._accuracy.update(scores[keep], labels[keep])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bank is None or self._accuracy is None:
            return
        top1, top5 = self._accuracy.compute()  # summed over processes
        pl_module.log("val/knn_top1", top1, sync_dist=False)
        pl_module.log("val/knn_top5", top5, sync_dist=False)
        self._bank, self._accuracy = None, None
