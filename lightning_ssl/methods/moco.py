"""MoCo v1/v2 (He et al., 2020; Chen et al., 2020): queries against a queue of momentum keys."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl import distributed
from lightning_ssl.callbacks import EMA, QueueUpdater
from lightning_ssl.losses import info_nce_loss
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.nn import MLP, FeatureQueue
from lightning_ssl.nn.teacher import frozen_copy
from lightning_ssl.optim import OptimizerName


class MoCo(SSLMethod):
    """Momentum Contrast (MoCo v1, He et al., 2020) with the v2 upgrades (Chen et al., 2020).

    ``q = g(f(x1))`` from the encoder and ``k = g_m(f_m(x2))`` from its momentum copy
    (``theta_m <- m theta_m + (1 - m) theta``); InfoNCE of ``q`` against its key (positive) and
    the queue of past keys (negatives); the batch's keys, gathered from every process, are then
    enqueued. The defaults are MoCo v2 (MLP head, T 0.2); v1 is ``mlp_head=False,
    temperature=0.07``. The paper's ImageNet recipe: SGD, lr 0.03 per 256 (batch 256), weight
    decay 1e-4, 200 epochs (v1: step decay; v2: cosine, as here).

    Shuffling BN: the key encoder sees the global batch shuffled across processes
    (:func:`~lightning_ssl.distributed.batch_shuffle`), so its BatchNorm statistics do not come
    from the queries' samples. On a single device shuffling does nothing (one batch, one set of
    statistics, as with SimCLR's global BN, which leaks more the smaller the batch): train on
    several devices, or set ``trainer.sync_batchnorm: true`` (GPU only) for global BN instead.
    Each view is its own forward pass, as in the official code. The momentum update averages
    parameters only (official ``_momentum_update_key_encoder``): the key encoder's BatchNorm
    running statistics come from its own (shuffled) forward passes.

    Args:
        temperature: InfoNCE temperature (v1: 0.07, v2: 0.2).
        queue_size: number of negative keys ``K`` (65,536), initialised with random unit vectors.
        tau_base: momentum ``m`` of the key encoder (0.999).
        tau_final: momentum at the end; equal to ``tau_base`` keeps it constant (the paper),
            otherwise it follows a cosine schedule (solo-learn's CIFAR recipe).
        mlp_head: v2's 2-layer MLP head (hidden 2048, ReLU, no BN); False: v1's linear head.
        proj_hidden_dim: hidden width of the MLP head (v2: 2048).
        proj_dim: key and query size (128).
        symmetric: also contrast ``x2``'s queries against ``x1``'s keys and average both losses
            (the keys of both views are enqueued).
        optimizer: SGD (momentum 0.9).
        lr: base learning rate per 256 images (0.03).
        weight_decay: 1e-4.
        warmup_epochs: 0 (no warm-up in the paper).
        **kwargs: backbone, schedule and data arguments of :class:`SSLMethod`.
    """

    def __init__(
        self,
        temperature: float = 0.2,
        queue_size: int = 65536,
        tau_base: float = 0.999,
        tau_final: float = 0.999,
        mlp_head: bool = True,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        symmetric: bool = False,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.03,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
            **kwargs,
        )
        num_layers = 2 if mlp_head else 1
        self.projector = MLP(
            self.backbone.dim, proj_hidden_dim, proj_dim, num_layers, batch_norm=False
        )
        self.teacher = frozen_copy(nn.Sequential(self.backbone, self.projector))
        self.queue = FeatureQueue(queue_size, proj_dim, random_init=True)

    def configure_callbacks(self) -> list[L.Callback]:
        hp = self.hparams
        schedule: Literal["cosine", "constant"] = (
            "constant" if hp.tau_base == hp.tau_final else "cosine"
        )
        student = nn.Sequential(self.backbone, self.projector)
        return [
            *super().configure_callbacks(),
            EMA(student, self.teacher, hp.tau_base, hp.tau_final, schedule, buffers="leave"),
            QueueUpdater(self.queue, output_key="queue_keys"),
        ]

    @torch.no_grad()
    def momentum_keys(self, x: Tensor) -> Tensor:
        """Normalized keys of the momentum encoder, computed on the batch shuffled over ranks."""
        x, unshuffle = distributed.batch_shuffle(x)
        return F.normalize(distributed.batch_unshuffle(self.teacher(x), unshuffle), dim=-1)

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        (x1, x2, *_), _ = batch
        pairs = [(x1, x2), (x2, x1)] if self.hparams.symmetric else [(x1, x2)]  # (query, key)
        h = [self.backbone(x_q) for x_q, _ in pairs]
        q = [self.projector(h_i) for h_i in h]
        k = [self.momentum_keys(x_k) for _, x_k in pairs]
        negatives = self.queue.valid()
        T = self.hparams.temperature
        loss = torch.stack(
            [info_nce_loss(q_i, k_i, T, negatives) for q_i, k_i in zip(q, k, strict=True)]
        ).mean()
        out = self.step_output(loss, h, embeddings=q)
        out["queue_keys"] = torch.cat(k)
        return out
