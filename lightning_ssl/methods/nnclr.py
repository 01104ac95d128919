"""NNCLR (Dwibedi et al., 2021): a nearest neighbour from a support set is the positive."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl.callbacks import QueueUpdater
from lightning_ssl.losses import info_nce_loss
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.nn import MLP, FeatureQueue
from lightning_ssl.optim import OptimizerName


class NNCLR(SSLMethod):
    """With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning.

    ``z = g(f(x))``, ``p = h(z)``; ``NN(z, Q)`` is the row of the support set ``Q`` most
    cosine-similar to ``z``. The loss ``InfoNCE(NN(z1), p2) / 2 + InfoNCE(NN(z2), p1) / 2`` has
    the neighbour as anchor and the predictions of the global batch as candidates (gathered
    from every process), symmetrized as in solo-learn. The normalized ``z1`` of the batch and
    its labels are then enqueued; ``train/nn_acc`` is how often a neighbour's label equals the
    sample's (labels are used for this diagnostic only). Until the first push the support set is
    empty and ``z`` is its own neighbour (plain contrastive learning for one step).

    Multi-crop (not in the paper): every crop's prediction is contrasted with the neighbour of
    every other global crop; the loss is the mean over those pairs. Global views are separate
    forward passes (per-view BatchNorm statistics); local crops are batched together.

    Paper defaults (ImageNet, batch 4096, 1000 epochs, BYOL's augmentations): projector
    ``[2048, 2048, 256]`` with BN after every layer, predictor ``[4096, 256]`` with BN on the
    hidden layer, T = 0.1, support set of 98,304; LARS, lr 0.3 per 256, weight decay 1e-6.

    Args:
        temperature: InfoNCE temperature (0.1).
        queue_size: rows of the support set (98,304).
        proj_hidden_dim: projector hidden width (2048).
        proj_dim: embedding size ``d`` (256).
        pred_hidden_dim: predictor hidden width (4096).
        optimizer: LARS.
        lr: base learning rate per 256 images (0.3).
        weight_decay: 1e-6.
        **kwargs: backbone, schedule and data arguments of :class:`SSLMethod`.
    """

    supports_local_crops: ClassVar[bool] = True

    def __init__(
        self,
        temperature: float = 0.1,
        queue_size: int = 98304,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 256,
        pred_hidden_dim: int = 4096,
        optimizer: OptimizerName = "lars",
        lr: float = 0.3,
        weight_decay: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, weight_decay=weight_decay, **kwargs)
        self.projector = MLP(
            self.backbone.dim, proj_hidden_dim, proj_dim, num_layers=3, last_batch_norm=True
        )
        self.predictor = MLP(proj_dim, pred_hidden_dim, proj_dim)
        self.support_set = FeatureQueue(queue_size, proj_dim, with_labels=True)

    def configure_callbacks(self) -> list[L.Callback]:
        return [*super().configure_callbacks(), QueueUpdater(self.support_set, "queue_keys")]

    @torch.no_grad()
    def nearest_neighbour(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``NN(z, Q)`` by cosine similarity and its label (``z`` and -1 while ``Q`` is empty).

        Shape: z (B, d) normalized -> (B, d), (B,).
        """
        support = self.support_set.valid()
        if support.shape[0] == 0:
            return z, torch.full((z.shape[0],), -1, dtype=torch.long, device=z.device)
        index = (z @ support.T).argmax(dim=1)
        return support[index], self.support_set.valid_labels()[index]

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        views, labels = batch
        n_global = self.hparams.num_global_crops
        h = [self.backbone(x) for x in views[:n_global]] + self.encode(
            self.backbone, views[n_global:]
        )
        z = [self.projector(h_v) for h_v in h]
        p = [self.predictor(z_v) for z_v in z]
        z_hat = [F.normalize(z_v.detach(), dim=-1) for z_v in z[:n_global]]
        neighbours, neighbour_labels = zip(*map(self.nearest_neighbour, z_hat), strict=True)
        T = self.hparams.temperature
        loss = torch.stack(
            [
                info_nce_loss(nn_j, p_i, T)
                for j, nn_j in enumerate(neighbours)
                for i, p_i in enumerate(p)
                if i != j
            ]
        ).mean()
        labelled = labels >= 0  # unlabelled images (label -1) do not count
        nn_acc = ((neighbour_labels[0] == labels) & labelled).sum() / labelled.sum().clamp(min=1)
        out = self.step_output(loss, h[:n_global], embeddings=z[:n_global], nn_acc=nn_acc)
        out["queue_keys"] = z_hat[0]
        return out
