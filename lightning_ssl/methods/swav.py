"""SwAV (Caron et al., 2020): predict the Sinkhorn cluster code of one crop from another."""

from __future__ import annotations

import math
from typing import Any, ClassVar, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_ssl import distributed
from lightning_ssl.callbacks import QueueUpdater
from lightning_ssl.losses import sinkhorn_knopp, swav_loss
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.nn.heads import MLP
from lightning_ssl.nn.queue import FeatureQueue


class SwAV(SSLMethod):
    """Unsupervised Learning of Visual Features by Contrasting Cluster Assignments.

    As Alg. 1 of the paper and the official ``main_swav.py``: the prototypes ``C`` are
    L2-normalized (without gradient) at every step; every crop gives ``z = normalize(g(f(x)))``
    and scores ``z C^T``; the codes of the global crops come from Sinkhorn-Knopp over the global
    batch and are predicted from every other crop (multi-crop swapped prediction). The prototypes
    get no update during the first ``freeze_prototypes_steps`` optimizer steps.
    Under mixed precision, ``z`` and its scores are computed in float32 (:meth:`prototype_scores`).

    With ``queue_size > 0``, from epoch ``queue_start_epoch`` on each global crop keeps a queue of
    its past projections (all processes); once the queue is full (official ``main_swav.py``:
    ``use_the_queue`` turns on when the queue's last row is non-zero) their scores join the
    batch in Sinkhorn-Knopp and only the batch's codes are kept. Each process uses its own share
    of the (gathered, identical) queue, so the global Sinkhorn sees every stored row once, as the
    official per-GPU queues.

    Args:
        proj_hidden_dim: projector hidden width (SwAV: 2048).
        proj_dim: projection size (SwAV: 128).
        num_prototypes: number of prototypes ``K`` (SwAV: 3000).
        temperature: softmax temperature of the predictions (SwAV: 0.1).
        sinkhorn_epsilon: entropy regularization of Sinkhorn-Knopp (SwAV: 0.05).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (SwAV: 3).
        queue_size: rows of each queue over all processes, 0 for none (SwAV: 3840 for small
            batches, none at batch 4096).
        queue_start_epoch: first epoch whose projections are queued (SwAV: 15).
        queue_wait_until_full: use a queue only once it is full (official); ``False`` uses the
            rows stored so far from the first push on.
        freeze_prototypes_steps: optimizer steps without prototype updates (SwAV: 313).
        lr: peak LR per 256 images (SwAV: 4.8 at batch 4096 with LARS).
        weight_decay: weight decay (SwAV: 1e-6).
        min_lr_ratio: final LR / peak (SwAV: 0.0048 / 4.8).
        **kwargs: backbone, optimizer and data arguments of :class:`SSLMethod`.
    """

    supports_local_crops: ClassVar[bool] = True

    def __init__(
        self,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        num_prototypes: int = 3000,
        temperature: float = 0.1,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        queue_size: int = 0,
        queue_start_epoch: int = 15,
        queue_wait_until_full: bool = True,
        freeze_prototypes_steps: int = 313,
        lr: float = 0.3,
        weight_decay: float = 1e-6,
        min_lr_ratio: float = 0.001,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, min_lr_ratio=min_lr_ratio, **kwargs)
        if num_prototypes <= proj_dim:
            rank_zero_warn(few_prototypes_message(num_prototypes, proj_dim))
        self.projector = MLP(self.backbone.dim, proj_hidden_dim, proj_dim)
        self.prototypes = nn.Linear(proj_dim, num_prototypes, bias=False)
        num_queues = self.hparams.num_global_crops if queue_size > 0 else 0
        self.queues = nn.ModuleList(FeatureQueue(queue_size, proj_dim) for _ in range(num_queues))

    def configure_callbacks(self) -> list[L.Callback]:
        start = self.hparams.queue_start_epoch
        updaters = [
            QueueUpdater(cast(FeatureQueue, q), f"queue_{i}", start_epoch=start)
            for i, q in enumerate(self.queues)
        ]
        return [*super().configure_callbacks(), *updaters]

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        views, _ = batch
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        h = self.encode(self.backbone, views)
        dtype = self.prototypes.weight.dtype  # float32 under mixed precision
        z = F.normalize(self.projector(torch.cat(h)).to(dtype), dim=1).chunk(len(views))
        scores = [self.prototype_scores(z_v) for z_v in z]
        g = self.hparams.num_global_crops
        codes = [self.codes(scores[i].detach(), i) for i in range(g)]  # global crops only
        loss = swav_loss(scores, codes, self.hparams.temperature)
        queue_keys = {f"queue_{i}": z[i].detach() for i in range(len(self.queues))}
        return self.step_output(loss, h[:g], embeddings=list(z[:g])) | queue_keys

    def prototype_scores(self, z: Tensor) -> Tensor:
        """Scores ``z C^T`` ``(B, K)`` of normalized projections in the prototypes' dtype (float32
        under mixed precision, float64 in a float64 run), whatever autocast is active.

        They are the loss's logits (divided by ``temperature``) and Sinkhorn's exponents
        (divided by ``epsilon = 0.05``): a bf16 score's rounding (2^-9 of ~1) would move the
        codes' exponents by up to 0.04. The ``K``-wide product costs little next to the backbone.
        """
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.prototypes(z.to(self.prototypes.weight.dtype))

    @torch.no_grad()
    def codes(self, scores: Tensor, crop: int) -> Tensor:
        """Sinkhorn-Knopp codes ``(B, K)`` of global crop ``crop`` from its scores ``(B, K)``."""
        batch = scores.shape[0]
        queue = self.queues[crop] if self.queues else None
        if isinstance(queue, FeatureQueue) and (
            queue.is_full() or not self.hparams.queue_wait_until_full
        ):
            stored = queue.valid()
            share = stored.shape[0] // distributed.world_size()
            rows = stored[distributed.rank() * share :][:share]
            scores = torch.cat([self.prototype_scores(rows), scores])
        hp = self.hparams
        return sinkhorn_knopp(scores, hp.sinkhorn_epsilon, hp.sinkhorn_iterations)[-batch:]

    def on_after_backward(self) -> None:
        if self.global_step < self.hparams.freeze_prototypes_steps:
            self.prototypes.weight.grad = None  # skipped by the optimizer: no update at all


def few_prototypes_message(num_prototypes: int, proj_dim: int) -> str:
    """Why ``K <= proj_dim`` prototypes let SwAV collapse, and the fix.

    ``K <= d`` prototypes of a ``d``-dimensional space leave a unit projection ``z`` with
    ``C z`` the same for every prototype (``C z = s 1`` has a solution). Projections that
    drift there get equal scores, Sinkhorn-Knopp gives uniform codes, and the loss sits at
    ``log K`` with no gradient back out: measured in the CPU protocol with ``K = 100``,
    ``d = 128`` (the loss went to 4.6055 = ln 100 and the kNN top-1 below an untrained
    network's). With ``K > d`` no ``z`` scores all prototypes equally unless they collapse too.
    """
    return (
        f"SwAV with num_prototypes={num_prototypes} <= proj_dim={proj_dim}: a projection can "
        "score every prototype equally, the codes become uniform and the loss stays at "
        f"log(num_prototypes) = {math.log(num_prototypes):.4f} (collapse). Use more prototypes "
        f"than proj_dim (SwAV: 3000 for 128)."
    )
