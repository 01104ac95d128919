"""MoCo v3 (Chen, Xie & He, 2021): symmetric InfoNCE of predictions against momentum keys."""

from __future__ import annotations

import functools
from typing import Any, Literal

import lightning as L
import torch
from torch import nn

from lightning_ssl.callbacks import EMA
from lightning_ssl.losses import info_nce_loss, tiled_info_nce_loss
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.nn import MLP
from lightning_ssl.nn.teacher import frozen_copy
from lightning_ssl.nn.vit import mocov3_vit_init_, use_sincos_position_embedding
from lightning_ssl.optim import OptimizerName


class MoCoV3(SSLMethod):
    """An Empirical Study of Training Self-Supervised Vision Transformers (MoCo v3).

    ``q = h(g(f(x)))`` (predictor on projector on backbone) and ``k = g_m(f_m(x))`` from the
    momentum encoder, for both views; the loss is ``ctr(q1, k2) + ctr(q2, k1)`` with
    ``ctr(q, k) = 2T * InfoNCE(q, k; T)`` whose negatives are the other keys of the global batch
    (gathered from every process), no queue. Each view is its own forward pass, as in the
    official code.

    Paper defaults (ResNet-50, batch 4096): 3-layer projector and 2-layer predictor, hidden 4096,
    output 256, BatchNorm after every layer (the last one without affine); T = 1.0; momentum
    0.99 -> 1 (cosine); LARS, weight decay 1e-6, lr 0.6 per 256 for 100 epochs (0.3 for 300 and
    1000 epochs, with wd 1.5e-6 and momentum 0.996 for 1000; official ``CONFIG.md``). The
    official PyTorch ResNet code uses a 2-layer projector and no BN at the predictor's output
    (``proj_num_layers=2, pred_last_batch_norm=False``). ViTs: T = 0.2, AdamW lr 1.5e-4 per 256,
    weight decay 0.1, 40 warm-up epochs, and ``freeze_patch_embed=True``; the official ViT has a
    fixed 2-D sin-cos position embedding and its own initialization (``vits.py``), our defaults
    for timm ViT backbones (``sincos_pos_embed``, ``vit_init``; CNNs ignore both). The official
    ViT-S has 12 heads (timm's ``vit_small_patch16_224`` 6: ``backbone_kwargs: {num_heads: 12}``).

    Args:
        temperature: softmax temperature (ResNet: 1.0, ViT: 0.2).
        proj_hidden_dim: hidden width of the projector (4096).
        proj_dim: output size of the projector and the predictor (256).
        proj_num_layers: linear layers of the projector (paper: 3).
        pred_hidden_dim: hidden width of the 2-layer predictor (4096).
        pred_last_batch_norm: BatchNorm (no affine) after the predictor's last layer (paper: yes).
        pred_last_bias: bias of the predictor's last linear layer when no BatchNorm follows it
            (official and solo-learn ResNet heads: none; ``True`` keeps this library's former
            head).
        tau_base: initial momentum of the key encoder (0.99).
        tau_final: final momentum, reached with a cosine schedule (1.0).
        freeze_patch_embed: keep a ViT's random patch embedding frozen (the paper's stability
            trick, ``--stop-grad-conv1``); the backbone must have a ``patch_embed``.
        sincos_pos_embed: ViTs: replace timm's learned position embedding by the official fixed
            2-D sin-cos one (:func:`~lightning_ssl.nn.vit.sincos_2d_position_embedding`).
        vit_init: ViTs: ``"mocov3"`` re-initializes as the official ``VisionTransformerMoCo``
            (Xavier-uniform, ``qkv`` split in three, the patch projection that
            ``freeze_patch_embed`` keeps); ``"timm"`` keeps timm's initialization.
        optimizer: LARS (ResNet) or AdamW (ViT).
        lr: base learning rate per 256 images.
        weight_decay: 1e-6 (ResNet) or 0.1 (ViT).
        loss_tile_size: None for the plain InfoNCE; an int computes the same loss and gradients
            in tiles of that size (:func:`~lightning_ssl.losses.tiled_info_nce_loss`), with
            memory ``O(tile**2)`` instead of ``O(batch**2)``, for very large global batches.
        **kwargs: backbone, schedule and data arguments of :class:`SSLMethod`.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        proj_hidden_dim: int = 4096,
        proj_dim: int = 256,
        proj_num_layers: int = 3,
        pred_hidden_dim: int = 4096,
        pred_last_batch_norm: bool = True,
        pred_last_bias: bool = True,
        tau_base: float = 0.99,
        tau_final: float = 1.0,
        freeze_patch_embed: bool = False,
        sincos_pos_embed: bool = True,
        vit_init: Literal["mocov3", "timm"] = "mocov3",
        optimizer: OptimizerName = "lars",
        lr: float = 0.6,
        weight_decay: float = 1e-6,
        loss_tile_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, weight_decay=weight_decay, **kwargs)
        vit = self.backbone.model
        if hasattr(vit, "pos_embed") and hasattr(vit, "patch_embed"):  # a timm ViT
            if vit_init == "mocov3":
                mocov3_vit_init_(vit)
            if sincos_pos_embed:
                use_sincos_position_embedding(vit)
        if freeze_patch_embed:
            patch_embed = getattr(self.backbone.model, "patch_embed", None)
            if patch_embed is None:
                raise ValueError(
                    f"freeze_patch_embed needs a ViT backbone with a patch_embed, "
                    f"{self.backbone.name!r} has none"
                )
            patch_embed.requires_grad_(False)
        self.projector = MLP(
            self.backbone.dim,
            proj_hidden_dim,
            proj_dim,
            proj_num_layers,
            last_batch_norm=True,
            last_affine=False,
        )
        self.predictor = MLP(
            proj_dim,
            pred_hidden_dim,
            proj_dim,
            2,
            last_batch_norm=pred_last_batch_norm,
            last_affine=False,
            last_bias=pred_last_bias,
        )
        self.teacher = frozen_copy(nn.Sequential(self.backbone, self.projector))

    def configure_callbacks(self) -> list[L.Callback]:
        student = nn.Sequential(self.backbone, self.projector)
        hp = self.hparams
        ema = EMA(student, self.teacher, hp.tau_base, hp.tau_final, buffers="leave")
        return [*super().configure_callbacks(), ema]

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        (x1, x2, *_), _ = batch
        h1, h2 = self.backbone(x1), self.backbone(x2)
        z1, z2 = self.projector(h1), self.projector(h2)
        q1, q2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            k1, k2 = self.teacher(x1), self.teacher(x2)
        T, tile = self.hparams.temperature, self.hparams.loss_tile_size
        if tile is None:
            ctr = functools.partial(info_nce_loss, temperature=T)
        else:
            ctr = functools.partial(tiled_info_nce_loss, temperature=T, tile_size=tile)
        loss = 2 * T * (ctr(q1, k2) + ctr(q2, k1))
        return self.step_output(loss, [h1, h2], embeddings=[z1, z2])
