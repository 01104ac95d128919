"""MAE (He et al., 2022): reconstruct the pixels of randomly masked patches from the rest."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_ssl.data.masking import random_masking
from lightning_ssl.losses import mae_loss
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.methods.batch_seed import batch_generator
from lightning_ssl.methods.single_view import require_one_view
from lightning_ssl.nn.mae import (
    MAEDecoder,
    encode_visible,
    mae_init_,
    patchify,
    use_mae_position_embedding,
    vit_patch_size,
)
from lightning_ssl.optim import OptimizerName
from lightning_ssl.validation import InvalidValueError, check_heads

#: Mixed into the mask generator's seed so masks and the batched views draw different numbers.
_MASK_STREAM = 0x4D4145


class MAE(SSLMethod):
    """Masked Autoencoders Are Scalable Vision Learners (MAE).

    Per image, ``mask_ratio`` of the patches are hidden (a per-sample shuffle); the ViT encoder
    sees only the visible ones (plus its class token); a light decoder gets the encoded tokens
    and a shared mask token at every hidden position, adds its fixed sin-cos position
    embedding, and predicts each patch's pixels; the loss is the mean squared error on the
    hidden patches only, against per-patch normalised pixels (``norm_pix_loss``).

    The masks are drawn from a generator seeded by (data seed, rank, batch number), so a resumed
    run repeats them. Evaluation (online probe, kNN, ``extract_features``) uses the encoder on
    the whole, unmasked image: its class token after the final norm (timm's ``global_pool``;
    MAE's linear probe reads the class token too, through a BatchNorm without affine).

    Paper/official recipe (ViT-B/16, ``main_pretrain.py``, ``PRETRAIN.md``): AdamW with betas
    (0.9, 0.95), lr 1.5e-4 per 256 images (batch 4096), weight decay 0.05 (none on biases and
    norms), 40 warm-up epochs then cosine, 800 epochs (1600 for the best), mask 0.75,
    ``norm_pix_loss``, decoder 8 blocks x 512 wide x 16 heads, fixed sin-cos position
    embeddings in encoder and decoder, Xavier-uniform initialization.

    Args:
        mask_ratio: fraction of patches hidden per image (0.75).
        norm_pix_loss: targets are each patch's pixels normalised by its mean and std.
        decoder_dim: decoder width (512).
        decoder_depth: decoder transformer blocks (8).
        decoder_num_heads: decoder attention heads (16).
        sincos_pos_embed: replace the timm ViT's learned position embedding by MAE's fixed one.
        mae_init: re-initialize the encoder as the official code (Xavier-uniform linears).
        probe_on_full_image: the online probe trains on the encoder's class token of the whole
            image (one extra forward without gradients per step, as its validation sees);
            ``False``: on the class token of the masked pass (cheaper).
        adamw_betas: AdamW's betas (official: (0.9, 0.95)).
        **kwargs: backbone, optimizer, schedule and data arguments of :class:`SSLMethod`.

    Examples:
        >>> mae = MAE(backbone="vit_tiny_patch16_224", backbone_kwargs={"patch_size": 4},
        ...     decoder_dim=32, decoder_depth=1, decoder_num_heads=2, image_size=32)
        >>> loss, pred, mask, _ = mae.reconstruct(torch.randn(2, 3, 32, 32), torch.Generator())
        >>> pred.shape, mask.sum(1).tolist()  # 4 x 4 x 3 pixels for each of the 8 x 8 patches
        (torch.Size([2, 64, 48]), [48, 48])
    """

    min_global_crops = 1

    def __init__(
        self,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        sincos_pos_embed: bool = True,
        mae_init: bool = True,
        probe_on_full_image: bool = True,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        backbone: str = "vit_base_patch16_224",
        optimizer: OptimizerName = "adamw",
        lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        warmup_epochs: float = 40.0,
        num_global_crops: int = 1,
        **kwargs: Any,
    ) -> None:
        betas = adamw_betas if isinstance(adamw_betas, list | tuple) else [adamw_betas]
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise InvalidValueError(
                f"MAE: adamw_betas must be two numbers in [0, 1), got {adamw_betas}"
            )
        super().__init__(
            backbone=backbone,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
            num_global_crops=num_global_crops,
            **kwargs,
        )
        require_one_view("MAE", "reconstructs one view per image", num_global_crops, "mae")
        vit = self.backbone.model
        self.patch_size = vit_patch_size(vit)
        check_heads("MAE", "decoder_dim", decoder_dim, "decoder_num_heads", decoder_num_heads)
        self.decoder = MAEDecoder(
            self.backbone.dim, self.patch_size, decoder_dim, decoder_depth, decoder_num_heads
        )
        if mae_init:
            mae_init_(vit)
            mae_init_(self.decoder)
        if sincos_pos_embed:
            use_mae_position_embedding(vit)

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        (images, *_), _ = batch
        loss, _, _, tokens = self.reconstruct(images, self.mask_generator(images))
        if self.hparams.probe_on_full_image:
            with torch.no_grad():
                features = self.backbone(images)
        else:
            features = tokens[:, 0]
        return self.step_output(loss, [features])

    def reconstruct(
        self, images: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mask, encode the visible patches, decode: ``(loss, predicted patches (B, N, p*p*C),
        mask (B, N), encoder tokens (B, prefix + visible, D))``."""
        vit, p = self.backbone.model, self.patch_size
        grid = (images.shape[-2] // p, images.shape[-1] // p)
        masks = random_masking(len(images), grid[0] * grid[1], self.hparams.mask_ratio, generator)
        tokens = encode_visible(vit, images, masks.ids_keep)
        prefix = getattr(vit, "num_prefix_tokens", 1)
        decoder_input = torch.cat([tokens[:, :1], tokens[:, prefix:]], dim=1)  # no registers
        pred = self.decoder(decoder_input, masks.ids_restore, grid)
        loss = mae_loss(pred, patchify(images, p), masks.mask, self.hparams.norm_pix_loss)
        return loss, pred, masks.mask, tokens

    def mask_generator(self, images: Tensor) -> torch.Generator:
        """A generator seeded by (data seed, rank, batch number): a resumed run draws the same
        masks; every process draws its own."""
        return batch_generator(self, images.device, _MASK_STREAM)
