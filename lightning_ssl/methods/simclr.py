"""SimCLR (Chen et al., 2020): contrast every view of an image against the global batch."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from lightning_ssl.losses import nt_xent_loss, tiled_nt_xent_loss
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.nn.heads import MLP, BatchNormLayout, LastNormAffine


class SimCLR(SSLMethod):
    """A Simple Framework for Contrastive Learning of Visual Representations.

    ``z = g(f(x))`` for every crop; NT-Xent over all crops of the global batch (negatives
    gathered from every process with gradients). Local crops join as extra positives.

    The projector defaults to the official code's (``model_util.py`` ``projection_head``):
    BatchNorm after every linear layer, the output BN with a scale but no shift, no biases.
    solo-learn's is ``proj_batch_norm="none"`` (Linear-ReLU-Linear with biases).

    Loss scale: the paper's loss (eq. 1) is the mean over all ``2N`` anchors, as ``nt_xent_loss``;
    the official code returns ``loss_a + loss_b`` (``objective.py``), the sum of the two
    directions' means, i.e. ``loss_scale=2``. With LARS the parameters it does not adapt
    (biases, BatchNorm) move ``loss_scale`` times as far, so a recipe copying the official
    learning rate needs the official scale; solo-learn's loss is the mean (scale 1).

    Args:
        temperature: NT-Xent temperature (paper: 0.1 with LARS at batch 4096; 0.5 on CIFAR).
        proj_hidden_dim: projector hidden width (paper: 2048; official code: the backbone's
            width, 2048 for ResNet-50).
        proj_dim: projection size (paper: 128).
        proj_num_layers: linear layers of the projector (v1: 2; SimCLR v2: 3).
        proj_batch_norm: BatchNorm after ``"all"`` linear layers (official), the ``"hidden"``
            ones only, or ``"none"`` (solo-learn).
        proj_last_norm_affine: what the output BatchNorm learns with ``proj_batch_norm="all"``:
            ``"scale"`` (official, ``center=False``), ``"scale_shift"`` or ``"none"``.
        loss_scale: factor of the loss (official code: 2, the sum of both directions).
        loss_tile_size: None for the plain NT-Xent; an int computes the same loss and gradients
            in tiles of that size (:func:`~lightning_ssl.losses.tiled_nt_xent_loss`), with
            memory ``O(tile**2)`` instead of ``O(batch**2)``, for very large global batches.
        **kwargs: backbone, optimizer and data arguments of :class:`SSLMethod`.

    Examples:
        >>> import torch
        >>> model = SimCLR(backbone="resnet18", cifar_stem=True, image_size=32)
        >>> views = [torch.randn(4, 3, 32, 32) for _ in range(2)]
        >>> out = model.training_step((views, torch.zeros(4).long()), 0)  # doctest: +SKIP
    """

    supports_local_crops: ClassVar[bool] = True

    def __init__(
        self,
        temperature: float = 0.1,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        proj_num_layers: int = 2,
        proj_batch_norm: BatchNormLayout = "all",
        proj_last_norm_affine: LastNormAffine = "scale",
        loss_scale: float = 1.0,
        loss_tile_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.projector = MLP.with_layout(
            self.backbone.dim,
            proj_hidden_dim,
            proj_dim,
            proj_num_layers,
            batch_norm=proj_batch_norm,
            last_norm_affine=proj_last_norm_affine,
        )

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        views, _ = batch
        h = self.encode(self.backbone, views)
        z = self.encode(self.projector, h)  # one batch, as the official head's BatchNorm sees
        T, tile = self.hparams.temperature, self.hparams.loss_tile_size
        loss = nt_xent_loss(z, T) if tile is None else tiled_nt_xent_loss(z, T, tile_size=tile)
        loss = self.hparams.loss_scale * loss
        g = self.hparams.num_global_crops
        return self.step_output(loss, h[:g], embeddings=z[:g])
