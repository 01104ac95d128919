"""I-JEPA's pieces around a timm ViT (Assran et al. 2023, facebookresearch/ijepa
``src/models/vision_transformer.py``): the encoder's patch tokens (no class token read), the
fixed sin-cos position embedding without a class token, the official initialization, and the
narrow predictor that fills mask tokens at the target positions.

Examples:
    >>> import timm
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8,
    ...     num_classes=0, class_token=False, global_pool="avg", fc_norm=False)
    >>> use_ijepa_position_embedding(vit)
    >>> patch_tokens(vit, torch.zeros(2, 3, 32, 32)).shape  # the 4 x 4 grid, no class token
    torch.Size([2, 16, 192])
    >>> predictor = IJEPAPredictor(192, dim=32, depth=1, num_heads=2)
    >>> context, targets = torch.tensor([[0, 1, 2]] * 2), torch.tensor([[[5, 6], [9, 10]]] * 2)
    >>> predictor(torch.zeros(2, 3, 192), context, targets, (4, 4)).shape  # (B, M, T, D)
    torch.Size([2, 2, 2, 192])
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from lightning_ssl.data.masking import gather_tokens
from lightning_ssl.nn.mae import encode_visible, mae_sincos_position_embedding


def sincos_patch_embedding(grid: tuple[int, int], dim: int) -> Tensor:
    """``(1, h * w, dim)``: I-JEPA's ``get_2d_sincos_pos_embed`` without a class token.

    The official function puts the column's sin-cos first, then the row's, each with
    ``w_d = 10000^(-d / (dim / 4))``: MAE's embedding (:func:`mae_sincos_position_embedding`)
    without its class-token row.
    """
    return mae_sincos_position_embedding(grid, dim)[:, 1:]


def _prefix(vit: Any) -> int:
    return int(getattr(vit, "num_prefix_tokens", 0))


def use_ijepa_position_embedding(vit: Any) -> None:
    """Replace a timm ViT's learned position embedding by the fixed sin-cos one (frozen), zero
    for prefix tokens that have one (the official ViT has none)."""
    pos_embed = getattr(vit, "pos_embed", None)
    if not isinstance(pos_embed, nn.Parameter):
        raise ValueError(f"{type(vit).__name__} has no learned pos_embed to replace")
    grid = tuple(int(s) for s in vit.patch_embed.grid_size)
    fixed = sincos_patch_embedding(grid, pos_embed.shape[-1])  # type: ignore[arg-type]
    extra = pos_embed.shape[1] - fixed.shape[1]  # class token rows (no_embed_class=False)
    fixed = torch.cat([fixed.new_zeros(1, extra, fixed.shape[-1]), fixed], dim=1)
    vit.pos_embed = nn.Parameter(fixed.to(pos_embed), requires_grad=False)


def patch_tokens(vit: Any, images: Tensor) -> Tensor:
    """``(B, N, D)``: the ViT's patch tokens of the whole image after its final norm (prefix
    tokens dropped); the target encoder's output ``s_y``."""
    return vit.forward_features(images)[:, _prefix(vit) :]


def context_tokens(vit: Any, images: Tensor, ids: Tensor) -> Tensor:
    """``(B, K, D)``: the ViT's patch tokens when it sees only the patches ``ids`` ``(B, K)``
    (position embeddings added before the others are dropped, as the official encoder)."""
    return encode_visible(vit, images, ids)[:, _prefix(vit) :]


@torch.no_grad()
def ijepa_init_(module: nn.Module, std: float = 0.02) -> None:
    """The official initialization as it ends up, in place: Linear and Conv2d weights
    truncated-normal (``std``, cut at +-2 absolute, as the official ``trunc_normal_``), zero
    biases, LayerNorm (1, 0), mask tokens truncated-normal.

    The official models also divide each block's attention-output and second MLP weights by
    ``sqrt(2 l)`` (``fix_init_weight``), but ``helper.init_model`` then re-draws every Linear
    weight, undoing it; we do what the code does and leave them unscaled.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(m.weight, std=std, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for name, p in module.named_parameters():
        if name.endswith("mask_token"):
            nn.init.trunc_normal_(p, std=std, a=-2.0, b=2.0)


class IJEPAPredictor(nn.Module):
    """I-JEPA's predictor (``VisionTransformerPredictor``): a narrow ViT that reads the context
    tokens (embedded to ``dim``, plus the fixed sin-cos embedding of their positions) and, for
    each target block separately, one mask token per target patch (a shared learned token plus
    that patch's position embedding); it returns its outputs at the mask tokens, projected back
    to the encoder's width. Each block's mask tokens see the context and each other, never the
    other blocks'.

    Args:
        encoder_dim: width of the encoder's tokens.
        dim: predictor width (official: 384 for ViT-H/14).
        depth: predictor blocks (official: 12).
        num_heads: attention heads (official: the encoder's).
        mlp_ratio: MLP hidden width over ``dim`` (4).
        init_std: the official initialization's standard deviation (0.02).
    """

    def __init__(
        self,
        encoder_dim: int,
        dim: int = 384,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        norm = functools.partial(nn.LayerNorm, eps=1e-6)  # as the official vit_predictor
        block = functools.partial(Block, qkv_bias=True, norm_layer=norm)  # type: ignore[arg-type]
        self.blocks = nn.Sequential(*[block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = norm(dim)
        self.proj = nn.Linear(dim, encoder_dim)
        ijepa_init_(self, init_std)

    def forward(
        self, tokens: Tensor, context_ids: Tensor, target_ids: Tensor, grid: tuple[int, int]
    ) -> Tensor:
        """Predict the target blocks' tokens.

        Args:
            tokens: ``(B, K, D_enc)`` the context encoder's tokens at ``context_ids``.
            context_ids: ``(B, K)`` their patch indices (row-major grid).
            target_ids: ``(B, M, T)`` patch indices of ``M`` target blocks of ``T`` patches.
            grid: the patch grid ``(rows, cols)``.

        Returns:
            ``(B, M, T, D_enc)`` predictions, in ``target_ids``' order.
        """
        b, m, t = target_ids.shape
        pos = sincos_patch_embedding(grid, self.mask_token.shape[-1]).to(tokens)
        pos = pos.expand(b, -1, -1)
        x = self.embed(tokens) + gather_tokens(pos, context_ids)
        queries = self.mask_token + gather_tokens(pos, target_ids.flatten(1))  # (B, M T, d)
        # one sequence per (sample, block): the context, then that block's mask tokens
        x = x.repeat_interleave(m, dim=0)
        x = torch.cat([x, queries.reshape(b * m, t, -1)], dim=1)
        out = self.proj(self.norm(self.blocks(x))[:, -t:])
        return out.reshape(b, m, t, -1)
