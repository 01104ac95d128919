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
# # 05 · MAE reconstructions of held-out images
#
# MAE (He et al., 2022) hides 75 % of an image's patches, encodes only the visible quarter with
# a ViT, and lets a light decoder predict the pixels of the hidden patches. This notebook trains
# (or loads) an MAE on Imagewoof (10 dog breeds) and shows, for held-out validation images, the
# original, what the encoder saw, and the reconstruction (visible patches pasted back, as the
# paper's figures).
#
# **Settings.** Tiny by default: timm's `test_vit` (6 blocks, width 64) with 4-px patches on
# 32-px images (an 8 x 8 grid), a 1-block decoder, 384 training images for 6 epochs: under a
# minute on a CPU. In that time the model learns little more than each image's colour: its
# hidden patches come out as flat patches of about the visible patches' mean colour (the checks
# below compare it with exactly that baseline); edges and shapes need a real run. The point here
# is the mechanics. The model here predicts raw (normalised-image) pixels, which are
# easy to draw; the paper's recipe predicts per-patch normalised pixels (`norm_pix_loss`, better
# features, the default), whose drawings need each hidden patch's own mean and spread. For real
# reconstructions train the recipe on a GPU, e.g.
#
# ```bash
# lightning-ssl fit --config configs/mae/imagenet.yaml \
#   --data.init_args.data_dir path/to/imagewoof2-160 --data.init_args.image_size 160 \
#   --model.init_args.backbone vit_small_patch16_224 --model.init_args.norm_pix_loss false \
#   --trainer.default_root_dir runs/mae-imagewoof --trainer.max_epochs 400
# ```
#
# then run this notebook with `LIGHTNING_SSL_MAE_CHECKPOINT` set to
# `runs/mae-imagewoof/checkpoints/last.ckpt`.

# %%
import logging
import os
import warnings

import lightning as L
import matplotlib.pyplot as plt
import torch
from _data import TINY, held_out_images, imagewoof_data, short_run_trainer, to_rgb

from lightning_ssl.eval.pretrained import load_pretrained
from lightning_ssl.methods import MAE
from lightning_ssl.nn.mae import patchify, unpatchify

warnings.filterwarnings("ignore")
logging.getLogger("lightning").setLevel(logging.ERROR)

CHECKPOINT = os.environ.get("LIGHTNING_SSL_MAE_CHECKPOINT")
EPOCHS, TRAIN, BATCH = (6, 384, 32) if TINY else (200, None, 128)
SHOWN = 4  # validation images drawn

# %% [markdown]
# ## The model
#
# Without a checkpoint, an MAE is trained here with the library's Python API (what
# `lightning-ssl fit` builds from a config; `_data.py` holds the Imagewoof loading this notebook
# shares with notebook 04): an `ImageFolderDataModule` with MAE's single view
# (`augmentation="mae"`: a random resized crop of scale 0.2-1 and a flip) and an `MAE` module
# whose `image_size` comes from the data.

# %%
if CHECKPOINT:
    model = load_pretrained(CHECKPOINT)  # weights_only: a checkpoint never runs code
    data = imagewoof_data(model.hparams.image_size)
else:
    L.seed_everything(0, verbose=False)
    data = imagewoof_data(32, augmentation="mae", batch_size=BATCH, train_subset=TRAIN)
    model = MAE(
        backbone="timm:test_vit",
        backbone_kwargs={"patch_size": 4},
        decoder_dim=64,
        decoder_depth=1,
        decoder_num_heads=2,
        norm_pix_loss=False,
        lr=3e-3,
        lr_scaling="none",
        warmup_epochs=1,
        num_classes=data.num_classes,
        image_size=data.image_size,
        num_global_crops=data.num_global_crops,
    )
image_size = data.image_size
held_out, _ = held_out_images(data, SHOWN)  # different breeds


def held_out_loss(model: MAE) -> float:
    """Reconstruction loss of the held-out images with fixed masks (seed 0)."""
    model.eval()
    with torch.no_grad():
        return model.reconstruct(held_out, torch.Generator().manual_seed(0))[0].item()


start_loss = held_out_loss(model)
if not CHECKPOINT:
    short_run_trainer(EPOCHS).fit(model, datamodule=data)
end_loss = held_out_loss(model)
print(f"held-out reconstruction loss: {start_loss:.3f} before training, {end_loss:.3f} after")

# %% [markdown]
# ## Original, masked, reconstructed
#
# `MAE.reconstruct` masks each image (75 % of the patches, a per-image shuffle drawn from the
# generator it is given), encodes the visible patches and decodes every patch. The hidden
# patches are drawn grey in the middle column; the right column shows the decoder's pixels for
# the hidden patches with the visible ones pasted back.

# %%
model.eval()
with torch.no_grad():
    _, pred, mask, _ = model.reconstruct(held_out, torch.Generator().manual_seed(0))
patch = model.patch_size
grid = (image_size // patch, image_size // patch)
if model.hparams.norm_pix_loss:  # a norm_pix model predicts each patch's normalised pixels
    target = patchify(held_out, patch)
    mu, sigma = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6).sqrt()
    pred = pred * sigma + mu
hidden = mask[..., None].float()  # (B, N, 1), 1 where hidden
pixels_per_patch = pred.shape[-1]
masked = unpatchify(patchify(held_out, patch) * (1 - hidden), patch, grid)
pasted = unpatchify(patchify(held_out, patch) * (1 - hidden) + pred * hidden, patch, grid)

fig, axes = plt.subplots(len(held_out), 3, figsize=(5, 1.8 * len(held_out)), layout="constrained")
for row in range(len(held_out)):
    hidden_pixels = unpatchify(hidden[row : row + 1].expand(-1, -1, pixels_per_patch), patch, grid)
    grey = hidden_pixels[0, 0, ..., None].numpy()  # (H, W, 1), 1 on hidden patches
    shown = to_rgb(masked[row], data) * (1 - grey) + 0.5 * grey
    columns = {
        "original": to_rgb(held_out[row], data),
        "visible 25 %": shown,
        "reconstruction": to_rgb(pasted[row], data),
    }
    for col, (title, picture) in enumerate(columns.items()):
        axes[row, col].imshow(picture)
        axes[row, col].set_title(title, fontsize=8)
        axes[row, col].axis("off")
fig.suptitle("MAE on held-out Imagewoof images")
plt.show()

# %% [markdown]
# ## Checks
#
# Exactly 75 % of each image's patches are hidden, the reconstruction keeps the visible pixels
# unchanged, and training lowered the held-out loss clearly, at least to the loss of painting
# every hidden patch with the mean colour of the image's visible patches (a trained model goes
# well below it). For a `norm_pix_loss` checkpoint that baseline is instead 47/48 (predicting
# each normalised patch's mean), not computed here.

# %%
n = grid[0] * grid[1]
target = patchify(held_out, patch)
visible_mean = (target * (1 - hidden)).sum(1, keepdim=True) / (1 - hidden).sum(1, keepdim=True)
colour = visible_mean.view(len(held_out), 1, -1, 3).mean(2, keepdim=True)  # (B, 1, 1, 3)
flat = colour.expand(-1, 1, patch * patch, 3).reshape(len(held_out), 1, -1)
colour_loss = ((flat - target) ** 2).mean(-1)[mask].mean().item()
print(f"model {end_loss:.3f}, visible-mean-colour baseline {colour_loss:.3f}")
assert (mask.sum(1) == n - int(n * 0.25)).all()
visible = (1 - hidden).bool().expand_as(pred)
torch.testing.assert_close(patchify(pasted, patch)[visible], patchify(held_out, patch)[visible])
assert end_loss < 0.8 * start_loss, (start_loss, end_loss)
if not model.hparams.norm_pix_loss:
    assert end_loss < 1.1 * colour_loss, (end_loss, colour_loss)
print("all checks passed")
