"""Online linear probe: a linear classifier trained on detached features while SSL runs."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl import distributed
from lightning_ssl.callbacks.accuracy import EpochAccuracy, batch_top1
from lightning_ssl.lightning_types import eval_data
from lightning_ssl.validation import check_values


def topk_correct(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> Tensor:
    """Number of samples whose label is among the top-k logits, for each k (micro-averaged):
    the hand count that the probe's and the kNN monitor's torchmetrics accuracies agree with."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return torch.stack([hits[:, :k].any(dim=1).sum() for k in ks]).float()


class OnlineLinearProbe(L.Callback):
    """Train a linear head on detached backbone features of the training crops.

    The head has its own SGD optimizer (not coupled to the method's learning rate, weight decay
    or LR scaling). Under DDP its gradients are averaged over processes and its initial weights
    broadcast from rank 0, so the head is identical on every rank. Features are cast to float32
    (callbacks run outside autocast). Reports ``train/probe_top1`` and ``train/probe_loss`` per
    step and ``val/probe_top1``, ``val/probe_top5`` (``test/...`` when testing), micro-averaged
    over the whole validation set of all processes (:class:`EpochAccuracy`). Labels below 0
    (STL-10's unlabeled images) are ignored.

    Args:
        lr: probe learning rate.
        momentum: SGD momentum.
        weight_decay: probe weight decay.

    Examples:
        >>> probe = OnlineLinearProbe(lr=0.1)
        >>> # Trainer(callbacks=[probe]); the method's steps return {"features": ...}
    """

    def __init__(self, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        check_values("OnlineLinearProbe", dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.head: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_state: dict[str, Any] | None = None
        self._accuracy: EpochAccuracy | None = None
        self._labels_checked = False

    # ------------------------------------------------------------------ set-up and state
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.head is None:
            num_classes = int(
                getattr(pl_module, "num_classes", 0) or eval_data(trainer).num_classes
            )
            backbone: Any = pl_module.backbone  # the method's Backbone: its feature size is dim
            self.head = nn.Linear(backbone.dim, num_classes)

    def _ready(self, device: torch.device) -> nn.Linear:
        """Move the head to ``device``, make it identical on every rank, restore saved state."""
        assert self.head is not None, "OnlineLinearProbe used before setup"
        if self.optimizer is None:
            self.head.to(device)
            for tensor in self.head.state_dict().values():
                distributed.broadcast_(tensor)
            self.optimizer = torch.optim.SGD(
                self.head.parameters(), self.lr, self.momentum, weight_decay=self.weight_decay
            )
            if self._pending_state is not None:
                self.head.load_state_dict(self._pending_state["head"])
                self.optimizer.load_state_dict(self._pending_state["optimizer"])
                self._pending_state = None
            self._labels_checked = False
        return self.head

    def state_dict(self) -> dict[str, Any]:
        if self._pending_state is not None:
            return self._pending_state
        if self.head is None or self.optimizer is None:
            return {}
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._pending_state = state_dict
            self.optimizer = None  # rebuilt on the module's device by _ready

    # ------------------------------------------------------------------ training
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        features = outputs["features"].float()
        labels = batch[1].repeat(features.shape[0] // batch[1].shape[0])
        keep = labels >= 0
        head = self._ready(features.device)
        optimizer = self.optimizer
        assert optimizer is not None, "built by _ready"
        self._check_labels(labels, head)
        with torch.enable_grad():
            logits = head(features[keep])
            loss = F.cross_entropy(logits, labels[keep])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        for param in head.parameters():
            assert param.grad is not None, "set by the backward above"
            distributed.all_reduce_mean_(param.grad)
        optimizer.step()
        top1 = batch_top1(logits.detach(), labels[keep])  # a tensor: no host sync per step
        pl_module.log("train/probe_loss", loss.detach())
        pl_module.log("train/probe_top1", top1, prog_bar=True)

    # ------------------------------------------------------------------ evaluation
    def _eval_start(self, pl_module: L.LightningModule) -> None:
        assert self.head is not None, "OnlineLinearProbe used before setup"
        self._labels_checked = False
        self._accuracy = EpochAccuracy(self.head.out_features, pl_module.device)

    @torch.no_grad()
    def _eval_batch(self, outputs: Any, batch: Any) -> None:
        features, labels = outputs["features"].float(), batch[1]
        head = self._ready(features.device)
        keep = labels >= 0
        self._check_labels(labels, head)
        if self._accuracy is not None:
            self._accuracy.update(head(features[keep]), labels[keep])

    def _eval_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> None:
        if self._accuracy is None or trainer.sanity_checking:
            return
        top1, top5 = self._accuracy.compute()  # summed over processes
        self._accuracy = None
        pl_module.log(f"{prefix}/probe_top1", top1, sync_dist=False, rank_zero_only=False)
        pl_module.log(f"{prefix}/probe_top5", top5, sync_dist=False, rank_zero_only=False)

    def _check_labels(self, labels: Tensor, head: nn.Linear) -> None:
        """Fail clearly on labels the head cannot predict (checked once: it syncs the host)."""
        if self._labels_checked:
            return
        self._labels_checked = True
        if labels.numel() and int(labels.max()) >= head.out_features:
            raise ValueError(
                f"label {int(labels.max())} but the probe has {head.out_features} classes: "
                "num_classes of the model does not match the data"
            )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_start(pl_module)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_batch(outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_end(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_start(pl_module)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_batch(outputs, batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_end(trainer, pl_module, "test")
