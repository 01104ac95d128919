"""MoCo v3's ViT: the fixed 2-D sin-cos position embedding and the official initialization."""

import math

import pytest
import timm
import torch
from torch import nn

from lightning_ssl.methods import MoCoV3
from lightning_ssl.nn.vit import (
    mocov3_vit_init_,
    sincos_2d_position_embedding,
    use_sincos_position_embedding,
)

HEADS = dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32)


def official_pos_embed(h: int, w: int, embed_dim: int, temperature: float = 10000.0):
    """facebookresearch/moco-v3 ``vits.py`` ``build_2d_sincos_position_embedding``, verbatim
    but for ``indexing="ij"`` (the default it relied on, now explicit)."""
    grid_w = torch.arange(w, dtype=torch.float32)
    grid_h = torch.arange(h, dtype=torch.float32)
    grid_w, grid_h = torch.meshgrid(grid_w, grid_h, indexing="ij")
    pos_dim = embed_dim // 4
    omega = torch.arange(pos_dim, dtype=torch.float32) / pos_dim
    omega = 1.0 / (temperature**omega)
    out_w = torch.einsum("m,d->md", [grid_w.flatten(), omega])
    out_h = torch.einsum("m,d->md", [grid_h.flatten(), omega])
    pos_emb = torch.cat(
        [torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1
    )[None, :, :]
    pe_token = torch.zeros([1, 1, embed_dim], dtype=torch.float32)
    return torch.cat([pe_token, pos_emb], dim=1)


@pytest.mark.parametrize("grid, dim", [((14, 14), 384), ((2, 3), 8), ((4, 4), 64)])
def test_sincos_embedding_is_the_official_formula(grid, dim):
    ours = sincos_2d_position_embedding(grid, dim)
    torch.testing.assert_close(ours, official_pos_embed(*grid, dim), rtol=0, atol=0)
    assert torch.equal(ours[0, 0], torch.zeros(dim))  # the class token's is zero
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_position_embedding(grid, 6)


def test_timm_vit_gets_a_frozen_sincos_embedding_that_it_uses():
    vit = timm.create_model("test_vit", img_size=64, num_classes=0)
    use_sincos_position_embedding(vit)
    assert not vit.pos_embed.requires_grad
    torch.testing.assert_close(vit.pos_embed.data, official_pos_embed(4, 4, 64), rtol=0, atol=0)
    tokens = vit.patch_embed(torch.randn(1, 3, 64, 64))  # (1, 4, 4, 64): test_vit is dynamic
    expected = torch.cat([vit.cls_token, tokens.flatten(1, 2)], dim=1) + vit.pos_embed
    torch.testing.assert_close(vit._pos_embed(tokens), expected)
    with pytest.raises(ValueError, match="no learned pos_embed"):
        use_sincos_position_embedding(nn.Linear(2, 2))


def test_mocov3_vit_defaults_are_the_official_vit():
    model = MoCoV3(backbone="test_vit", image_size=32, freeze_patch_embed=True, **HEADS)
    for vit in (model.backbone.model, model.teacher[0].model):
        torch.testing.assert_close(vit.pos_embed.data, official_pos_embed(2, 2, 64))
        assert not vit.pos_embed.requires_grad
    vit = model.backbone.model
    proj = vit.patch_embed.proj
    bound = math.sqrt(6.0 / (3 * 16 * 16 + 64))  # official: 3 * prod(patch) + embed_dim
    assert not proj.weight.requires_grad and float(proj.weight.abs().max()) <= bound
    assert torch.equal(proj.bias, torch.zeros(64)) and float(vit.cls_token.abs().max()) < 1e-4
    qkv = vit.blocks[0].attn.qkv.weight  # (3D, D): three D x D matrices
    assert float(qkv.abs().max()) <= math.sqrt(6.0 / (64 + 64))
    assert float(qkv.abs().max()) > math.sqrt(6.0 / (3 * 64 + 64))  # not one (3D, D) matrix
    timm_default = MoCoV3(
        backbone="test_vit", image_size=32, sincos_pos_embed=False, vit_init="timm", **HEADS
    )
    assert timm_default.backbone.model.pos_embed.requires_grad


def test_official_init_is_in_place_and_keeps_shapes():
    vit = timm.create_model("test_vit", img_size=32, num_classes=0)
    shapes = {k: v.shape for k, v in vit.state_dict().items()}
    mocov3_vit_init_(vit)
    assert {k: v.shape for k, v in vit.state_dict().items()} == shapes
    assert all(torch.equal(b.bias, torch.zeros_like(b.bias)) for b in vit.modules()
               if isinstance(b, nn.Linear))  # fmt: skip
