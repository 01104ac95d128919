"""MoCo v3's ViT changes to a timm VisionTransformer: fixed 2-D sin-cos position embedding and
the official weight initialization (facebookresearch/moco-v3 ``vits.py``).

Examples:
    >>> import timm
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0)
    >>> use_sincos_position_embedding(vit)
    >>> vit.pos_embed.shape, vit.pos_embed.requires_grad
    (torch.Size([1, 5, 192]), False)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn


def sincos_2d_position_embedding(
    grid_size: tuple[int, int], embed_dim: int, temperature: float = 10000.0
) -> Tensor:
    """MoCo v3's fixed position embedding, ``(1, 1 + h * w, embed_dim)``, the class token's zero.

    As ``VisionTransformerMoCo.build_2d_sincos_position_embedding``: with ``omega_d =
    temperature^(-d / (D/4))`` for ``d < D/4`` and the patch grid enumerated as the official
    ``torch.meshgrid(arange(w), arange(h))`` (``ij`` indexing), each patch gets
    ``[sin(x omega), cos(x omega), sin(y omega), cos(y omega)]`` with ``x`` its index along the
    first meshgrid axis and ``y`` along the second.

    Args:
        grid_size: ``(h, w)`` patches, timm's ``patch_embed.grid_size``.
        embed_dim: token width, divisible by 4.
        temperature: the frequency base (official: 10000).
    """
    if embed_dim % 4:
        raise ValueError(
            f"the 2-D sin-cos embedding needs embed_dim divisible by 4, got {embed_dim}"
        )
    h, w = grid_size
    grid_w, grid_h = torch.meshgrid(
        torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="ij"
    )
    pos_dim = embed_dim // 4
    omega = 1.0 / temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim)
    out_w = grid_w.flatten()[:, None] * omega[None, :]
    out_h = grid_h.flatten()[:, None] * omega[None, :]
    patches = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    return torch.cat([torch.zeros(1, embed_dim), patches])[None]


def use_sincos_position_embedding(vit: nn.Module, temperature: float = 10000.0) -> None:
    """Replace a timm ViT's learned position embedding by the fixed, frozen sin-cos one.

    Needs exactly one prefix token (the class token) that has a position embedding, as the
    official code asserts (``num_tokens == 1``).
    """
    pos_embed = getattr(vit, "pos_embed", None)
    if not isinstance(pos_embed, nn.Parameter) or not hasattr(vit, "patch_embed"):
        raise ValueError(f"{type(vit).__name__} has no learned pos_embed to replace")
    if getattr(vit, "num_prefix_tokens", 1) != 1 or getattr(vit, "no_embed_class", False):
        raise ValueError("the sin-cos embedding assumes one class token with a position embedding")
    patch_embed: Any = vit.patch_embed  # timm's PatchEmbed
    height, width = (int(s) for s in patch_embed.grid_size)
    fixed = sincos_2d_position_embedding((height, width), pos_embed.shape[-1], temperature)
    vit.pos_embed = nn.Parameter(fixed.to(pos_embed), requires_grad=False)


@torch.no_grad()
def mocov3_vit_init_(vit: nn.Module) -> None:
    """The official ``VisionTransformerMoCo`` initialization, in place.

    Linear layers Xavier-uniform (``qkv`` as three separate ``D x D`` matrices), biases zero,
    class token ``N(0, 1e-6)``, patch projection Xavier-uniform over ``3 p^2`` inputs with zero
    bias: the random projection ``freeze_patch_embed`` keeps (MoCo v3, Sec. 4.2).
    """
    for name, module in vit.named_modules():
        if isinstance(module, nn.Linear):
            if "qkv" in name:
                bound = math.sqrt(6.0 / float(module.weight.shape[0] // 3 + module.weight.shape[1]))
                nn.init.uniform_(module.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    if isinstance(cls_token := getattr(vit, "cls_token", None), Tensor):
        nn.init.normal_(cls_token, std=1e-6)
    proj = getattr(getattr(vit, "patch_embed", None), "proj", None)
    if isinstance(proj, nn.Conv2d):
        fan = 3 * math.prod(proj.kernel_size) + proj.out_channels
        bound = math.sqrt(6.0 / fan)
        nn.init.uniform_(proj.weight, -bound, bound)
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)
