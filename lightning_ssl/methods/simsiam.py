"""SimSiam (Chen & He, 2021): a predictor and a stop-gradient, no negatives, no momentum encoder."""

from __future__ import annotations

from typing import Any

from lightning_ssl.losses import negative_cosine_similarity
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.nn import MLP
from lightning_ssl.optim import OptimizerName


class SimSiam(SSLMethod):
    """Exploring Simple Siamese Representation Learning.

    ``z = g(f(x))`` and ``p = h(z)`` for both views; the loss is
    ``D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2`` with ``D = -cos``. The predictor's
    learning rate is not decayed (the paper's "fix lr of predictor"). Each view is its own
    forward pass (per-view BatchNorm statistics, as in the official code).

    Paper defaults (ImageNet, 100 epochs, batch 512): projector of 3 layers, hidden and output
    2048, BN on every layer (the output BN without affine, as in the official code); predictor
    2048 -> 512 -> 2048 with BN on its hidden layer; SGD, momentum 0.9, lr 0.05 per 256,
    weight decay 1e-4, cosine decay without warm-up.

    Args:
        proj_hidden_dim: projector hidden width (2048).
        proj_dim: projection size (2048).
        pred_hidden_dim: predictor bottleneck width (512).
        optimizer: SGD.
        lr: base learning rate per 256 images (0.05).
        weight_decay: 1e-4.
        warmup_epochs: 0 (the paper uses warm-up only for its LARS batch-4096 runs).
        **kwargs: backbone, schedule and data arguments of :class:`SSLMethod`.
    """

    def __init__(
        self,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 2048,
        pred_hidden_dim: int = 512,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.05,
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
        self.projector = MLP(
            self.backbone.dim,
            proj_hidden_dim,
            proj_dim,
            num_layers=3,
            last_batch_norm=True,
            last_affine=False,
        )
        self.predictor = MLP(proj_dim, pred_hidden_dim, proj_dim)

    def param_group_overrides(self) -> dict[str, dict[str, Any]]:
        return {"predictor.": {"fixed_lr": True}}

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        (x1, x2, *_), _ = batch
        h1, h2 = self.backbone(x1), self.backbone(x2)
        z1, z2 = self.projector(h1), self.projector(h2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = negative_cosine_similarity(p1, z2) / 2 + negative_cosine_similarity(p2, z1) / 2
        return self.step_output(loss, [h1, h2], embeddings=[z1, z2])
