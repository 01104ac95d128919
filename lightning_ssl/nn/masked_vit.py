"""A timm ViT's token pass with masked patches replaced by a learned mask token (iBOT, BEiT).

Unlike MAE's encoder (:func:`lightning_ssl.nn.mae.encode_visible`), which drops the masked
patches, masked image modelling in iBOT keeps every position: the patch embedding of a masked
patch is replaced by the mask token *before* the position embedding is added (official
``VisionTransformer.prepare_tokens`` / ``mask_model``), so the masked pixels never reach the
encoder while the mask token learns where it stands.

Examples:
    >>> import timm
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0)
    >>> mask = torch.tensor([[True, False, False, True]])
    >>> tokens = encode_tokens(vit, torch.zeros(1, 3, 32, 32), mask, torch.zeros(1, 1, 192))
    >>> tokens.shape  # class token + the 2 x 2 patches
    torch.Size([1, 5, 192])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def encode_tokens(
    vit: Any, images: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None
) -> Tensor:
    """All tokens of the timm ViT ``vit`` after its final norm: ``(B, prefix + N, D)``.

    Args:
        vit: a timm ``VisionTransformer`` (``patch_embed``, ``_pos_embed``, ``blocks``).
        images: ``(B, C, H, W)``; a size other than the model's ``img_size`` works when the
            ViT was built with ``dynamic_img_size`` (as :class:`~lightning_ssl.nn.Backbone`
            does), position embeddings interpolated by timm's own ``_pos_embed``.
        mask: ``(B, N)`` booleans over the row-major patch grid, ``True`` where the patch
            embedding is replaced by ``mask_token``; ``None``: no patch is masked.
        mask_token: ``(1, 1, D)`` (or broadcastable to ``(B, N, D)``) learned embedding.

    Without a mask this is timm's ``forward_features``; ``vit.forward_head(tokens)`` then
    gives the backbone's pooled features.
    """
    x = vit.patch_embed(images)  # (B, N, D), or (B, h, w, D) with dynamic_img_size
    if mask is not None:
        if mask_token is None:
            raise ValueError("a mask needs the mask token that replaces the masked patches")
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        if mask.shape != flat.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match {flat.shape[1]} patches")
        flat = torch.where(mask.unsqueeze(-1), mask_token.to(flat.dtype), flat)
        x = flat.reshape(x.shape)
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))
    return vit.norm(vit.blocks(x))
