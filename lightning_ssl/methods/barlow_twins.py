"""Barlow Twins (Zbontar et al., 2021): make the cross-correlation of two views the identity."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_ssl.losses import barlow_twins_loss
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.nn.heads import MLP


class BarlowTwins(SSLMethod):
    """Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Alg. 1 of the paper).

    Two views ``y_a, y_b`` go through the backbone and a 3-layer projector each (separately, so
    BatchNorm sees one view at a time, as the official code); the loss batch-normalizes both
    embeddings over the global batch and pushes their cross-correlation to the identity. Two
    global crops only (no local crops).

    Biases and BatchNorm parameters get the learning rate ``lr_biases`` (official code: 0.0048
    against 0.2 for the weights, both per 256 images) and neither weight decay nor LARS
    adaptation.

    Args:
        proj_hidden_dim: projector hidden width (paper: 8192).
        proj_dim: embedding size (paper: 8192).
        lambda_offdiag: weight ``lambda`` of the redundancy-reduction term (paper: 0.0051).
        scale_loss: factor of the whole loss (paper: 1; solo-learn's CIFAR recipe: 0.1).
        lr_biases: LR per 256 images of biases and normalization parameters; ``None`` uses
            ``lr`` (paper: 0.0048).
        lr: LR per 256 images of the weights (paper: 0.2 with LARS).
        weight_decay: weight decay (paper: 1.5e-6).
        min_lr_ratio: final LR / peak (paper: the LR is divided by 1000).
        **kwargs: backbone, optimizer and data arguments of :class:`SSLMethod`.
    """

    def __init__(
        self,
        proj_hidden_dim: int = 8192,
        proj_dim: int = 8192,
        lambda_offdiag: float = 0.0051,
        scale_loss: float = 1.0,
        lr_biases: float | None = 0.0048,
        lr: float = 0.2,
        weight_decay: float = 1.5e-6,
        min_lr_ratio: float = 0.001,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, min_lr_ratio=min_lr_ratio, **kwargs)
        if self.hparams.num_global_crops != 2:
            raise ValueError(f"BarlowTwins uses 2 views, got {self.hparams.num_global_crops}")
        self.projector = MLP(self.backbone.dim, proj_hidden_dim, proj_dim, num_layers=3)

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        (y_a, y_b), _ = batch
        h_a, h_b = self.backbone(y_a), self.backbone(y_b)
        z_a, z_b = self.projector(h_a), self.projector(h_b)
        loss = self.hparams.scale_loss * barlow_twins_loss(z_a, z_b, self.hparams.lambda_offdiag)
        return self.step_output(loss, [h_a, h_b], embeddings=[z_a, z_b])

    def no_decay_group_options(self) -> dict[str, Any]:
        """Biases and BN weights learn at ``lr_biases`` (official: 0.0048 vs 0.2 for weights)."""
        hp = self.hparams
        return {} if hp.lr_biases is None else {"lr_scale": hp.lr_biases / hp.lr}
