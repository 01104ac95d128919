"""VICReg (Bardes et al., 2022): variance-invariance-covariance regularization of two views."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_ssl.losses import vicreg_terms
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.nn.heads import MLP


class VICReg(SSLMethod):
    """VICReg: Variance-Invariance-Covariance Regularization (Alg. 1 of the paper).

    Two views go through the backbone and a 3-layer expander each (separately, as the official
    code); the loss pulls the embeddings together (invariance), keeps the standard deviation of
    every dimension above 1 over the global batch (variance) and decorrelates the dimensions
    (covariance). Logs the three unweighted terms. Two global crops only (no local crops).

    Args:
        proj_hidden_dim: expander hidden width (paper: 8192).
        proj_dim: embedding size (paper: 8192).
        sim_coeff: invariance weight ``lambda`` (paper: 25).
        std_coeff: variance weight ``mu`` (paper: 25).
        cov_coeff: covariance weight ``nu`` (paper: 1).
        lr: peak LR per 256 images (paper: base_lr 0.2 with LARS).
        weight_decay: weight decay (paper: 1e-6).
        min_lr_ratio: final LR / peak (official code: 0.001).
        **kwargs: backbone, optimizer and data arguments of :class:`SSLMethod`.
    """

    def __init__(
        self,
        proj_hidden_dim: int = 8192,
        proj_dim: int = 8192,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        lr: float = 0.2,
        weight_decay: float = 1e-6,
        min_lr_ratio: float = 0.001,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, min_lr_ratio=min_lr_ratio, **kwargs)
        if self.hparams.num_global_crops != 2:
            raise ValueError(f"VICReg uses 2 views, got {self.hparams.num_global_crops}")
        self.expander = MLP(self.backbone.dim, proj_hidden_dim, proj_dim, num_layers=3)

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        (x_a, x_b), _ = batch
        y_a, y_b = self.backbone(x_a), self.backbone(x_b)
        z_a, z_b = self.expander(y_a), self.expander(y_b)
        hp = self.hparams
        terms = vicreg_terms(z_a, z_b, hp.sim_coeff, hp.std_coeff, hp.cov_coeff)
        return self.step_output(
            terms.loss,
            [y_a, y_b],
            embeddings=[z_a, z_b],
            invariance=terms.invariance,
            variance=terms.variance,
            covariance=terms.covariance,
        )
