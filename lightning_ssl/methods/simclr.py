"""SimCLR (Chen et al., 2020): contrast every view of an image against the global batch."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from lightning_ssl.losses import nt_xent_loss, tiled_nt_xent_loss
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.nn.heads import MLP


class SimCLR(SSLMethod):
    """A Simple Framework for Contrastive Learning of Visual Representations.

    ``z = g(f(x))`` for every crop; NT-Xent over all crops of the global batch (negatives
    gathered from every process with gradients). Local crops join as extra positives.

    Args:
        temperature: NT-Xent temperature (paper: 0.1 with LARS at batch 4096; 0.5 on CIFAR).
        proj_hidden_dim: projector hidden width (paper: 2048).
        proj_dim: projection size (paper: 128).
        loss_tile_size: None for the plain NT-Xent; an int computes the same loss and gradients
            in tiles of that size (:func:`~lightning_ssl.losses.tiled_nt_xent_loss`), with
            memory ``O(tile**2)`` instead of ``O(batch**2)``, for very large global batches.
        **kwargs: backbone, optimizer and data arguments of :class:`SSLMethod`.

    Example:
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
        loss_tile_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.projector = MLP(self.backbone.dim, proj_hidden_dim, proj_dim)

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        views, _ = batch
        h = self.encode(self.backbone, views)
        z = [self.projector(h_v) for h_v in h]
        T, tile = self.hparams.temperature, self.hparams.loss_tile_size
        loss = nt_xent_loss(z, T) if tile is None else tiled_nt_xent_loss(z, T, tile_size=tile)
        g = self.hparams.num_global_crops
        return self.step_output(loss, h[:g], embeddings=z[:g])
