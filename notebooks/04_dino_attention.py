# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · DINO attention maps of a Vision Transformer
#
# DINO (Caron et al., 2021) found that the `[CLS]` token of a self-supervised ViT attends to the
# main object of an image: the last block's attention from `[CLS]` to the image patches, one map
# per head, segments objects without ever seeing a mask or a label. This notebook trains (or
# loads) a DINO ViT on Imagewoof (10 dog breeds), reads that attention with a forward hook and
# draws it over the images.
#
# **Settings.** Tiny by default: timm's 0.3 M-parameter `test_vit` (6 blocks, 2 heads, width 64)
# with 8-px patches on 64-px crops (an 8 x 8 patch grid), 128 images, 2 epochs: seconds on a CPU.
# Its maps are close to uniform or follow colour and edges; the point is the mechanics. Real maps
# need a real run on a GPU, for example DINO's ViT recipe on Imagewoof at its native 160 px
# (a 10 x 10 grid with 16-px patches; the recipe's 10 local crops of 64 px), for hundreds of
# epochs:
#
# ```bash
# lightning-ssl fit --config configs/dino/imagenet.yaml \
#   --data.init_args.data_dir path/to/imagewoof2-160 --data.init_args.image_size 160 \
#   --data.init_args.local_size 64 --model.init_args.backbone vit_small_patch16_224 \
#   --trainer.default_root_dir runs/dino-imagewoof --trainer.max_epochs 300
# ```
#
# then run this notebook with `LIGHTNING_SSL_DINO_CHECKPOINT` set to
# `runs/dino-imagewoof/checkpoints/last.ckpt` (any DINO checkpoint with a timm ViT backbone
# works; images are shown at its crop size).

# %%
import logging
import os
import warnings

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from _data import (
    TINY,
    held_out_images,
    imagewoof_breeds,
    imagewoof_data,
    short_run_trainer,
    to_rgb,
)

from lightning_ssl.eval.pretrained import load_pretrained
from lightning_ssl.methods import DINO

warnings.filterwarnings("ignore")
logging.getLogger("lightning").setLevel(logging.ERROR)

CHECKPOINT = os.environ.get("LIGHTNING_SSL_DINO_CHECKPOINT")
EPOCHS, TRAIN, BATCH = (2, 128, 32) if TINY else (100, None, 64)
SHOWN = 4  # validation images drawn

# %% [markdown]
# ## The model
#
# Without a checkpoint, a DINO student/teacher pair is trained here with the library's Python API
# (what the `lightning-ssl` command builds from a config; `_data.py` holds the Imagewoof loading
# this notebook shares with notebook 05): an `ImageFolderDataModule` with DINO's
# multi-crop views (2 global crops, here 2 local crops of 32 px) and a `DINO` module whose
# `num_classes`, `image_size` and crop counts come from the data. The head is shrunk
# (`out_dim` 1,024 instead of 65,536) to suit the tiny ViT. DINO evaluates the **teacher**
# (the EMA of the student), so its attention is what is drawn.

# %%
if CHECKPOINT:
    model = load_pretrained(CHECKPOINT)  # weights_only: a checkpoint never runs code
    data = imagewoof_data(model.hparams.image_size)
else:
    L.seed_everything(0, verbose=False)
    data = imagewoof_data(
        64,
        augmentation="dino",
        num_local_crops=2,
        local_size=32,
        batch_size=BATCH,
        train_subset=TRAIN,
    )
    model = DINO(
        backbone="timm:test_vit",
        backbone_kwargs={"patch_size": 8},
        out_dim=1024,
        hidden_dim=256,
        bottleneck_dim=64,
        warmup_epochs=0,
        teacher_temp_warmup_epochs=0,
        lr_scaling="none",
        num_classes=data.num_classes,
        image_size=data.image_size,
        num_global_crops=data.num_global_crops,
        num_local_crops=data.num_local_crops,
    )
    short_run_trainer(EPOCHS).fit(model, datamodule=data)
model.eval()
image_size = data.image_size
vit = model.teacher.backbone.model  # the timm VisionTransformer inside the teacher's Backbone
patch = vit.patch_embed.patch_size[0]
grid = image_size // patch
print(
    f"{model.hparams.backbone}: {len(vit.blocks)} blocks, {vit.blocks[-1].attn.num_heads} heads, "
    f"{patch}-px patches, {grid} x {grid} grid, {vit.num_prefix_tokens} prefix token(s)"
)

# %% [markdown]
# ## Reading the attention
#
# timm's `Attention` computes `softmax(q kᵀ / √d)` inside a fused kernel
# (`scaled_dot_product_attention`), so the probabilities are never materialised. A forward hook
# on the last block's `attn` module receives its input `x` and recomputes them from the module's
# own `qkv` projection (and its `q_norm`/`k_norm`, identity in a standard ViT). Row 0 is the
# `[CLS]` token's attention; its columns after the prefix tokens (`[CLS]`, and register tokens if
# any) are the patches, in raster order.
#
# A second route serves as a check: with `fused_attn = False` timm computes the softmax itself
# and passes it through `attn_drop`, whose input a hook can capture directly. Both must agree.


# %%
def attention_hook(store: dict):
    """A forward hook that stores the attention probabilities ``(B, heads, N, N)``."""

    def hook(module, inputs, output) -> None:
        x = inputs[0]
        b, n, _ = x.shape
        qkv = module.qkv(x).reshape(b, n, 3, module.num_heads, module.head_dim)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = module.q_norm(q), module.k_norm(k)
        store["attention"] = ((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)

    return hook


images, labels = held_out_images(data, SHOWN)  # different breeds
last = vit.blocks[-1].attn

store: dict = {}
handle = last.register_forward_hook(attention_hook(store))
with torch.no_grad():
    model.extract_features(images)
handle.remove()
attention = store["attention"]

# The check: timm's own softmax, captured at the input of attn_drop.
unfused: dict = {}
last.fused_attn = False
handle = last.attn_drop.register_forward_hook(lambda m, i, o: unfused.update(attention=i[0]))
with torch.no_grad():
    model.extract_features(images)
handle.remove()
last.fused_attn = True
torch.testing.assert_close(attention, unfused["attention"], rtol=1e-4, atol=1e-6)

cls_row = attention[:, :, 0, :]  # (B, heads, N): [CLS] attends to every token, sums to 1
to_patches = cls_row[:, :, vit.num_prefix_tokens :]
maps = to_patches / to_patches.sum(-1, keepdim=True)  # a distribution over the patches
maps = maps.reshape(len(images), -1, grid, grid)
print(f"attention {tuple(attention.shape)} -> maps {tuple(maps.shape)} (images, heads, grid)")

# %% [markdown]
# ## The maps
#
# Each row: an Imagewoof validation image, the `[CLS]` attention of each head and their mean,
# upsampled from the patch grid to pixels (nearest: one block per patch), and the image masked
# to the patches holding 60 % of the mean attention (DINO's Figure 3 thresholding). A trained
# DINO's heads light up the dog (different heads, different parts); the tiny model's do not.

# %%
breeds = imagewoof_breeds(data)
heads = maps.shape[1]


def upsample(grid_map: torch.Tensor) -> np.ndarray:
    """A patch-grid map at pixel resolution: one ``patch x patch`` block per patch."""
    return grid_map.repeat_interleave(patch, 0).repeat_interleave(patch, 1).numpy()


def top_mass_mask(attention_map: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """Boolean map of the fewest patches whose attention adds up to ``mass``."""
    flat = attention_map.flatten()
    values, order = flat.sort(descending=True)
    keep = values.cumsum(0) - values < mass  # a patch is kept until the mass is reached
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order[keep]] = True
    return mask.view_as(attention_map)


fig, axes = plt.subplots(
    len(images), heads + 3, figsize=(1.6 * (heads + 3), 1.7 * len(images)), layout="constrained"
)
masks = []
for row, (image, label) in enumerate(zip(images, labels, strict=True)):
    pixels = to_rgb(image, data)
    axes[row, 0].imshow(pixels)
    axes[row, 0].set_title(breeds[label], fontsize=7)
    for h in range(heads):
        axes[row, h + 1].imshow(upsample(maps[row, h]), cmap="inferno")
        axes[row, h + 1].set_title(f"head {h}", fontsize=7)
    axes[row, heads + 1].imshow(upsample(maps[row].mean(0)), cmap="inferno")
    axes[row, heads + 1].set_title("mean of heads", fontsize=7)
    mask = top_mass_mask(maps[row].mean(0))
    masks.append(mask)
    axes[row, heads + 2].imshow(pixels * upsample(mask.float())[..., None])
    axes[row, heads + 2].set_title("60 % of attention", fontsize=7)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("last-block [CLS] attention of the DINO teacher")
plt.show()

# %% [markdown]
# ## Checks
#
# The hooked attention is a probability distribution (each row sums to 1), matches timm's own
# softmax, and each map has the patch grid's shape and sums to 1 over the patches.

# %%
tokens = vit.num_prefix_tokens + grid * grid
assert attention.shape == (len(images), heads, tokens, tokens)
torch.testing.assert_close(cls_row.sum(-1), torch.ones(len(images), heads))
assert maps.shape == (len(images), heads, grid, grid) and (maps >= 0).all()
torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(len(images), heads))
assert all(mask.shape == (grid, grid) and 0 < mask.sum() <= grid * grid for mask in masks)
print("all checks passed")
