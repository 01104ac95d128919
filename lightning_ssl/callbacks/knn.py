"""kNN monitor: weighted kNN accuracy of the current features, on un-augmented images."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.callbacks.online_probe import topk_correct
from lightning_ssl.nn.knn import knn_predict


class KNNMonitor(L.Callback):
    """Report ``val/knn_top1`` (and ``val/knn_top5``) every ``every_n_epochs`` epochs.

    At the start of a validation epoch the train split with the evaluation transform
    (``datamodule.train_eval_dataloader()``) is encoded by the module's ``extract_features``,
    each process taking every ``world_size``-th image; the shards are gathered so every rank
    holds the whole bank. Validation features vote by :func:`knn_predict` (cosine, weights
    ``exp(s/T)``), scanned in chunks so memory stays bounded. Counts are summed over processes.

    Args:
        k: neighbours (default 200, as InstDisc and lightly's CIFAR-10 protocol).
        temperature: vote temperature (default 0.1).
        every_n_epochs: run on validation epochs whose index is a multiple of this.
        chunk_size: bank rows compared at once.
        max_bank_size: use at most this many training images (a fixed, spread-out subset).

    Example:
        >>> monitor = KNNMonitor(k=20, temperature=0.07)
    """

    def __init__(
        self,
        k: int = 200,
        temperature: float = 0.1,
        every_n_epochs: int = 1,
        chunk_size: int = 16384,
        max_bank_size: int | None = None,
    ) -> None:
        if k < 1 or temperature <= 0 or every_n_epochs < 1:
            raise ValueError("KNNMonitor needs k >= 1, temperature > 0 and every_n_epochs >= 1")
        self.k, self.temperature, self.every_n_epochs = k, temperature, every_n_epochs
        self.chunk_size, self.max_bank_size = chunk_size, max_bank_size
        self._bank: tuple[Tensor, Tensor] | None = None
        self._counts: Tensor | None = None

    def _active(self, trainer: L.Trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    @torch.no_grad()
    def _build_bank(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.datamodule.train_eval_dataloader()
        dataset = loader.dataset
        size = self.max_bank_size or len(dataset)
        if trainer.fast_dev_run:  # a smoke test: a bank of a few batches, not the whole split
            size = min(size, int(trainer.fast_dev_run) * (loader.batch_size or 1))
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
                feats.append(F.normalize(pl_module.extract_features(images).float(), dim=1))
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
            self._counts = torch.zeros(3, device=pl_module.device)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._bank is None or self._counts is None:
            return
        query = F.normalize(outputs["features"].float(), dim=1)
        scores = knn_predict(
            query,
            *self._bank,
            trainer.datamodule.num_classes,
            self.k,
            self.temperature,
            self.chunk_size,
        )
        labels = batch[1]
        keep = labels >= 0
        correct = topk_correct(scores[keep], labels[keep])
        self._counts += torch.cat([correct, keep.sum().float()[None]])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bank is None or self._counts is None:
            return
        counts = trainer.strategy.reduce(self._counts, reduce_op="sum")
        seen = counts[2].clamp(min=1)
        pl_module.log("val/knn_top1", counts[0] / seen, sync_dist=False)
        pl_module.log("val/knn_top5", counts[1] / seen, sync_dist=False)
        self._bank, self._counts = None, None
