"""BYOL (Grill et al., 2020): predict the EMA teacher's projection of another view."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import lightning as L
import torch
from torch import nn

from lightning_ssl.callbacks import EMA
from lightning_ssl.losses import negative_cosine_similarity, normalized_squared_distance
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.nn import MLP
from lightning_ssl.nn.teacher import frozen_copy
from lightning_ssl.optim import OptimizerName

BYOL_LOSSES = {
    "squared_distance": normalized_squared_distance,
    "neg_cosine": negative_cosine_similarity,
}


class BYOL(SSLMethod):
    """Bootstrap Your Own Latent: a new approach to self-supervised learning.

    The online network predicts ``p = q(g(f(x)))``; the target network (an EMA of ``f`` and
    ``g``, ``xi <- tau xi + (1 - tau) theta``) gives ``t = g'(f'(x'))`` of the other view; the
    loss is symmetrized, ``D(p1, t2) + D(p2, t1)`` with ``t`` detached and, by default, the
    paper's ``D = ||p/|p| - t/|t|||^2 = 2 - 2 cos`` (eq. 2; official ``regression_loss`` summed
    over both directions, as solo-learn). ``loss_form="neg_cosine"`` uses ``D = -cos``: the
    paper's loss ``(L - 4) / 2``, half its gradient (with LARS, biases and BatchNorm then move
    half as far at the paper's learning rate).

    The target network's BatchNorm running statistics are its own (it runs in training mode,
    with batch statistics, and the EMA averages parameters only), as the official code keeps a
    separate ``target_state``; evaluation uses the online network.

    Multi-crop (not in the paper): the student sees every crop, the teacher only the global
    ones; each teacher global crop is predicted by every other crop, those losses are averaged,
    and the averages are summed over the teacher crops (so two views give exactly the loss
    above). Each global view is its own forward pass (per-view BatchNorm statistics, as in the
    official code); local crops are batched together.

    Paper defaults (ImageNet, batch 4096, 1000 epochs): projector and predictor MLPs with hidden
    4096 and BN, output 256, the output layer without bias (official ``networks.py``); tau
    0.996 -> 1 (cosine); LARS, lr 0.2 per 256, weight decay 1.5e-6, 10 warm-up epochs.

    Args:
        proj_hidden_dim: projector hidden width (4096).
        proj_dim: projection and prediction size (256).
        pred_hidden_dim: predictor hidden width (4096).
        tau_base: initial target decay rate (0.996).
        tau_final: final target decay rate, reached with a cosine schedule (1.0).
        loss_form: ``"squared_distance"`` (paper, official code, solo-learn: ``2 - 2 cos``) or
            ``"neg_cosine"`` (``-cos``, half the gradient; this library's form before).
        heads_last_bias: bias in the last linear layer of projector and predictor (official:
            none; solo-learn: yes).
        optimizer: LARS.
        lr: base learning rate per 256 images (0.2).
        weight_decay: 1.5e-6.
        **kwargs: backbone, schedule and data arguments of :class:`SSLMethod`.
    """

    supports_local_crops: ClassVar[bool] = True

    def __init__(
        self,
        proj_hidden_dim: int = 4096,
        proj_dim: int = 256,
        pred_hidden_dim: int = 4096,
        tau_base: float = 0.996,
        tau_final: float = 1.0,
        loss_form: Literal["squared_distance", "neg_cosine"] = "squared_distance",
        heads_last_bias: bool = False,
        optimizer: OptimizerName = "lars",
        lr: float = 0.2,
        weight_decay: float = 1.5e-6,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, weight_decay=weight_decay, **kwargs)
        self.projector = MLP(
            self.backbone.dim, proj_hidden_dim, proj_dim, last_bias=heads_last_bias
        )
        self.predictor = MLP(proj_dim, pred_hidden_dim, proj_dim, last_bias=heads_last_bias)
        self.teacher = frozen_copy(nn.Sequential(self.backbone, self.projector))

    def configure_callbacks(self) -> list[L.Callback]:
        student = nn.Sequential(self.backbone, self.projector)
        hp = self.hparams
        ema = EMA(student, self.teacher, hp.tau_base, hp.tau_final, buffers="leave")
        return [*super().configure_callbacks(), ema]

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        views, _ = batch
        n_global = self.hparams.num_global_crops
        h = [self.backbone(x) for x in views[:n_global]] + self.encode(
            self.backbone, views[n_global:]
        )
        z = [self.projector(h_v) for h_v in h]
        p = [self.predictor(z_v) for z_v in z]
        with torch.no_grad():
            t = [self.teacher(x) for x in views[:n_global]]
        D = BYOL_LOSSES[self.hparams.loss_form]
        terms = [
            torch.stack([D(p_i, t_j) for i, p_i in enumerate(p) if i != j]).mean()
            for j, t_j in enumerate(t)
        ]
        loss = sum(terms[1:], terms[0])
        return self.step_output(loss, h[:n_global], embeddings=z[:n_global])
