"""CLIP (Radford et al., 2021): contrast images with their captions over the global batch."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.callbacks.zero_shot import ZeroShotMonitor
from lightning_ssl.lightning_types import trainer_attributes
from lightning_ssl.losses import clip_loss, tiled_clip_loss
from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.nn.text import TextTower

ImageTextBatch = tuple[list[Tensor], Tensor, Tensor]  # (views, labels, caption tokens)


class CLIP(SSLMethod):
    """Contrastive Language-Image Pre-training, as the paper's pseudo-code (figure 3)::

        I_f = image_encoder(I)                 # any of our backbones, [n, d_i]
        T_f = text_encoder(T)                  # open_clip's text transformer, [n, d_t]
        I_e = l2_normalize(I_f @ W_i)          # joint embedding, [n, d_e]
        T_e = l2_normalize(T_f @ W_t)
        logits = I_e @ T_e.T * exp(t)          # t learned, init log(1 / 0.07), exp(t) <= 100
        loss = (CE(logits, arange(n)) + CE(logits.T, arange(n))) / 2

    over the global batch: every process scores its pairs against the embeddings of all
    processes, gathered with gradients (:func:`~lightning_ssl.losses.clip_loss`). Batches are
    ``(views, labels, tokens)`` of :class:`~lightning_ssl.data.ImageTextDataModule`; the
    online probe trains on the image features ``I_f`` and :class:`ZeroShotMonitor` (added
    unless configured) reports ``val/zeroshot_top1``.

    Args:
        embed_dim: joint embedding size ``d_e`` (CLIP RN50: 1024; ViT-B/32: 512).
        text_width: text transformer width (CLIP: 512).
        text_layers: text transformer blocks (CLIP: 12).
        text_heads: text attention heads (CLIP: 8).
        context_length: tokens per caption (CLIP: 77); the data's ``context_length``.
        init_logit_scale: initial ``exp(t)`` (paper: 1 / 0.07).
        max_logit_scale: ``exp(t)`` is clamped to ``[1, max_logit_scale]`` after every
            optimizer step (paper: 100; open_clip's clamp of ``t`` to ``[0, log 100]``).
        loss_tile_size: None for the plain loss; an int computes the same loss and gradients
            in tiles (Inf-CL, :func:`~lightning_ssl.losses.tiled_clip_loss`) with
            ``O(tile**2)`` memory, for very large global batches.
        **kwargs: backbone, optimizer and data arguments of :class:`SSLMethod`.

    Examples:
        >>> model = CLIP(backbone="resnet18", cifar_stem=True, image_size=32,  # doctest: +SKIP
        ...              num_global_crops=1, text_width=64, text_layers=1, text_heads=2)
    """

    min_global_crops: ClassVar[int] = 1

    def __init__(
        self,
        embed_dim: int = 512,
        text_width: int = 512,
        text_layers: int = 12,
        text_heads: int = 8,
        context_length: int = 77,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        loss_tile_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("num_global_crops", 1)
        super().__init__(**kwargs)
        if not 1 <= init_logit_scale <= max_logit_scale:
            raise ValueError(
                f"init_logit_scale must be in [1, max_logit_scale={max_logit_scale}], "
                f"got {init_logit_scale}"
            )
        self.text_encoder = TextTower(text_width, text_layers, text_heads, context_length)
        self.image_projection = nn.Linear(self.backbone.dim, embed_dim, bias=False)  # W_i
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)  # W_t
        for projection in (self.image_projection, self.text_projection):
            nn.init.normal_(projection.weight, std=projection.in_features**-0.5)  # as open_clip
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))  # t

    # ----------------------------------------------------------------- the two towers
    def embed_image(self, features: Tensor) -> Tensor:
        """``I_e``: image features ``I_f`` projected and L2-normalised."""
        return F.normalize(self.image_projection(features), dim=-1)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """``T_e``: caption tokens ``(B, context_length)`` to L2-normalised embeddings."""
        return F.normalize(self.text_projection(self.text_encoder(tokens)), dim=-1)

    def training_step(self, batch: ImageTextBatch, batch_idx: int) -> dict[str, Any]:
        if len(batch) != 3:
            raise ValueError(
                "CLIP trains on image-text batches (views, labels, tokens): use "
                "lightning_ssl.data.ImageTextDataModule as the data"
            )
        views, _, tokens = batch
        image_features = self.backbone(views[0])
        image_embeddings = self.embed_image(image_features)
        text_embeddings = self.encode_text(tokens)
        scale, tile = self.logit_scale.exp(), self.hparams.loss_tile_size
        if tile is None:
            loss = clip_loss(image_embeddings, text_embeddings, scale)
        else:
            loss = tiled_clip_loss(image_embeddings, text_embeddings, scale, tile_size=tile)
        return self.step_output(
            loss, [image_features], embeddings=image_embeddings, logit_scale=scale.detach()
        )

    # ----------------------------------------------------------------- Lightning hooks
    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # The paper clips the temperature after each update; open_clip clamps t to
        # [0, log 100] after the step (``legacy_train.py``), before any callback saves.
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, math.log(self.hparams.max_logit_scale))

    def configure_callbacks(self) -> list[L.Callback]:
        configured = trainer_attributes(self.trainer).callbacks if self._trainer is not None else []
        has_monitor = any(isinstance(c, ZeroShotMonitor) for c in configured)
        return super().configure_callbacks() + ([] if has_monitor else [ZeroShotMonitor()])
