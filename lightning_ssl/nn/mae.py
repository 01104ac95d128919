"""MAE's pieces around a timm ViT (He et al. 2022, facebookresearch/mae ``models_mae.py``):
patches as pixels, the fixed 2-D sin-cos position embedding, an encoder pass over the visible
patches only, and the light decoder that fills in mask tokens and predicts pixels.

Examples:
    >>> import timm
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0)
    >>> tokens = encode_visible(vit, torch.zeros(2, 3, 32, 32), torch.tensor([[0], [3]]))
    >>> tokens.shape  # class token + 1 visible patch of the 2 x 2 grid
    torch.Size([2, 2, 192])
    >>> MAEDecoder(192, 16, num_heads=2, dim=32, depth=1)(tokens, torch.tensor([[0, 1, 2, 3]] * 2),
    ...     (2, 2)).shape
    torch.Size([2, 4, 768])
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from lightning_ssl.data.masking import gather_tokens


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, H/p * W/p, p * p * C)``, patches in row-major order, each
    flattened as the official ``patchify`` (``nchpwq -> nhwpqc``)."""
    b, c, height, width = images.shape
    p = patch_size
    if height % p or width % p:
        raise ValueError(f"patch size {p} does not divide the image size {height}x{width}")
    x = images.reshape(b, c, height // p, p, width // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (height // p) * (width // p), p * p * c)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int]) -> Tensor:
    """The inverse of :func:`patchify`: ``(B, h * w, p * p * C)`` -> ``(B, C, h p, w p)``."""
    (h, w), p = grid, patch_size
    b = patches.shape[0]
    x = patches.reshape(b, h, w, p, p, -1)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, -1, h * p, w * p)


def mae_sincos_position_embedding(grid: tuple[int, int], dim: int) -> Tensor:
    """``(1, 1 + h * w, dim)``: MAE's ``get_2d_sincos_pos_embed`` with a zero class token.

    Each patch at (row, col) gets ``[sin(col w), cos(col w), sin(row w), cos(row w)]`` with
    ``w_d = 10000^(-d / (dim / 4))`` (``util/pos_embed.py``; MoCo v3's puts the row first).
    """
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    h, w = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")

    def one_axis(pos: Tensor) -> Tensor:
        out = pos.flatten().double()[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    patches = torch.cat([one_axis(cols), one_axis(rows)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), patches]).float()[None]


def vit_patch_size(vit: nn.Module) -> int:
    """The patch side of a timm ViT, read from its ``patch_embed``; a clear error otherwise."""
    patch_embed = getattr(vit, "patch_embed", None)
    if patch_embed is None or not hasattr(vit, "_pos_embed") or not hasattr(vit, "blocks"):
        raise ValueError(
            f"{type(vit).__name__} is not a timm VisionTransformer (no patch_embed/_pos_embed/"
            "blocks): masked image modelling needs one, e.g. backbone: vit_base_patch16_224"
        )
    return int(patch_embed.patch_size[0])


def encode_visible(vit: Any, images: Tensor, ids_keep: Tensor) -> Tensor:
    """The ViT's tokens when it sees only the patches ``ids_keep`` (``(B, K)`` indices of the
    row-major grid): ``(B, prefix + K, D)`` after the final norm, class token first.

    Position embeddings are added before the patches are dropped (as MAE), by timm's own
    ``_pos_embed``, which interpolates them when the crop differs from ``img_size``.
    """
    x = vit._pos_embed(vit.patch_embed(images))  # (B, prefix + N, D); NHWC input flattened
    prefix = getattr(vit, "num_prefix_tokens", 1)
    x = torch.cat([x[:, :prefix], gather_tokens(x[:, prefix:], ids_keep)], dim=1)
    return vit.norm(vit.blocks(vit.norm_pre(x)))


class MAEDecoder(nn.Module):
    """MAE's decoder: embed the encoder's tokens, append mask tokens, unshuffle with
    ``ids_restore``, add the fixed sin-cos position embedding of the patch grid, transformer
    blocks, norm, and a linear map to ``p * p * 3`` pixels per patch (class token dropped).

    Args:
        encoder_dim: width of the encoder's tokens.
        patch_size: pixels per patch side of the encoder.
        dim: decoder width (paper: 512).
        depth: decoder blocks (paper: 8).
        num_heads: attention heads (paper: 16).
        mlp_ratio: MLP hidden width over ``dim`` (4).
        in_chans: image channels (3).
    """

    def __init__(
        self,
        encoder_dim: int,
        patch_size: int,
        dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        norm = functools.partial(nn.LayerNorm, eps=1e-6)  # as the official models
        # timm builds the norm with norm_layer(dim): a partial works (its stub wants a class)
        block = functools.partial(Block, qkv_bias=True, norm_layer=norm)  # type: ignore[arg-type]
        self.blocks = nn.Sequential(*[block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = norm(dim)
        self.pred = nn.Linear(dim, patch_size**2 * in_chans)

    def forward(self, tokens: Tensor, ids_restore: Tensor, grid: tuple[int, int]) -> Tensor:
        """``(B, 1 + K, D)`` encoder tokens -> ``(B, N, p * p * C)`` pixel predictions."""
        x = self.embed(tokens)
        b, n = ids_restore.shape
        mask_tokens = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
        patches = gather_tokens(torch.cat([x[:, 1:], mask_tokens], dim=1), ids_restore)
        x = torch.cat([x[:, :1], patches], dim=1)
        x = x + mae_sincos_position_embedding(grid, x.shape[-1]).to(x)
        return self.pred(self.norm(self.blocks(x)))[:, 1:]


@torch.no_grad()
def mae_init_(module: nn.Module) -> None:
    """The official ``initialize_weights``: Linear Xavier-uniform with zero bias, LayerNorm
    (1, 0), patch projections Xavier-uniform as a Linear over ``C p p`` inputs, class and mask
    tokens ``N(0, 0.02)``. In place."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d) and name.endswith("patch_embed.proj"):
            w = m.weight.view(m.weight.shape[0], -1)
            bound = math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
            nn.init.uniform_(m.weight, -bound, bound)
    for name, p in module.named_parameters():
        if name.endswith(("cls_token", "mask_token")):
            nn.init.normal_(p, std=0.02)


def use_mae_position_embedding(vit: Any) -> None:
    """Replace a timm ViT's learned position embedding by MAE's fixed sin-cos one (frozen)."""
    pos_embed = getattr(vit, "pos_embed", None)
    if not isinstance(pos_embed, nn.Parameter) or getattr(vit, "no_embed_class", False):
        raise ValueError(f"{type(vit).__name__} has no class-token pos_embed to replace")
    if getattr(vit, "num_prefix_tokens", 1) != 1:
        raise ValueError("MAE's sin-cos embedding assumes one class token and no register tokens")
    grid = tuple(int(s) for s in vit.patch_embed.grid_size)
    fixed = mae_sincos_position_embedding(grid, pos_embed.shape[-1])  # type: ignore[arg-type]
    vit.pos_embed = nn.Parameter(fixed.to(pos_embed), requires_grad=False)
