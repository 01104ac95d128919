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
# # 03 · Embeddings: a t-SNE map coloured by class, and nearest neighbours
#
# A self-supervised encoder never sees a label, yet images of the same class should land close
# together in its feature space. This notebook embeds CIFAR-10 test images with an encoder,
# projects the features to 2-D with t-SNE (scikit-learn) and colours the points by their class,
# then shows each query's nearest neighbours among the other test images.
#
# **Which encoder.** With `LIGHTNING_SSL_CHECKPOINT` set to a CIFAR-10 checkpoint of any method
# (e.g. `runs/quickstart/checkpoints/last.ckpt` written by notebook 01, or a run of a
# `configs/*/cifar10.yaml`), that encoder is used. Otherwise a short SimCLR run of the
# quickstart config is trained here. The *untrained* encoder (random weights) is embedded as
# well, as a baseline: the fraction of each image's nearest neighbours that share its class
# should be higher after training.
#
# **Settings.** Tiny by default (256 training images, 3 epochs, 400 test images embedded: seconds
# on a CPU; the classes barely separate). With `LIGHTNING_SSL_NOTEBOOK_TINY=0`: the full
# quickstart and 2,000 test images; with a ResNet-18 trained for hundreds of epochs
# (`configs/simclr/cifar10.yaml` on a GPU) the classes form visible islands.

# %%
import logging
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from _data import REPO, TINY, dataset_dir, fresh_dir
from sklearn.manifold import TSNE

from lightning_ssl import methods
from lightning_ssl.cli import run_cli
from lightning_ssl.data import CIFAR10DataModule
from lightning_ssl.eval.pretrained import load_pretrained

warnings.filterwarnings("ignore")
logging.getLogger("lightning").setLevel(logging.ERROR)

if TINY:
    EPOCHS, TRAIN, EMBED, BATCH, TSNE_STEPS = 3, 256, 400, 64, 500
else:
    EPOCHS, TRAIN, EMBED, BATCH, TSNE_STEPS = 6, 10_000, 2_000, 128, 1_000
CIFAR10 = dataset_dir("cifar10-jpeg")
CLASSES = sorted(p.name for p in (CIFAR10 / "train").iterdir() if p.is_dir())
CHECKPOINT = os.environ.get("LIGHTNING_SSL_CHECKPOINT")

# %% [markdown]
# ## The encoder
#
# A checkpoint records which method wrote it, so `load_pretrained` rebuilds the right class (read
# safely: a checkpoint never runs code).
# `model.extract_features` is what the probe and kNN monitor evaluate: the backbone's pooled
# features (the teacher's for DINO).


# %%
def load(path: str) -> methods.SSLMethod:
    """The method saved in the checkpoint ``path``, on the CPU, in evaluation mode."""
    return load_pretrained(path)


if CHECKPOINT:
    model = load(CHECKPOINT)
else:
    run = fresh_dir("runs/embeddings")
    cli = run_cli(
        [
            "fit",
            f"--config={REPO / 'configs/simclr/quickstart.yaml'}",
            f"--trainer.default_root_dir={run}",
            "--trainer.logger=false",
            f"--trainer.max_epochs={EPOCHS}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--data.init_args.data_dir={CIFAR10}",
            f"--data.init_args.train_subset={TRAIN}",
            f"--data.init_args.val_subset={EMBED}",
            f"--data.init_args.batch_size={BATCH}",
            "--data.init_args.num_workers=0",
        ]
    )
    model = cli.model.eval()
# The same architecture with fresh random weights (hyper-parameters without the CLI's keys).
settings = {k: v for k, v in model.hparams.items() if not k.startswith("_")}
untrained = type(model)(**{**settings, "compile_backbone": False}).eval()
print(f"{type(model).__name__} with {model.hparams.backbone}: {model.backbone.dim}-d features")

# %% [markdown]
# ## Features of the test images
#
# `EMBED` test images (a fixed random subset), normalised as in evaluation. Features are
# L2-normalised: cosine similarity is what the kNN monitor and most SSL losses use.

# %%
data = CIFAR10DataModule(str(CIFAR10), val_subset=EMBED, eval_batch_size=200, num_workers=0)


@torch.no_grad()
def embed(encoder: methods.SSLMethod) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L2-normalised features, labels and images of the embedded test images."""
    feats, labels, images = [], [], []
    for x, y in data.val_dataloader():
        feats.append(F.normalize(encoder.extract_features(x), dim=1))
        labels.append(y)
        images.append(x)
    return torch.cat(feats), torch.cat(labels), torch.cat(images)


features, labels, images = embed(model)
random_features, _, _ = embed(untrained)


def neighbour_agreement(feats: torch.Tensor, k: int = 10) -> float:
    """Mean fraction of each image's ``k`` nearest other images that share its class."""
    similarity = (feats @ feats.T).fill_diagonal_(-2.0)
    nearest = similarity.topk(k, dim=1).indices
    return (labels[nearest] == labels[:, None]).float().mean().item()


agreement = {
    "trained": neighbour_agreement(features),
    "untrained": neighbour_agreement(random_features),
}
print(f"{len(labels)} images; 10-NN class agreement: {agreement} (chance: about 0.10)")

# %% [markdown]
# ## t-SNE
#
# t-SNE keeps each point's nearest neighbours near it in 2-D (it does not preserve global
# distances: the gaps between islands mean little). Perplexity 30 and 1,000 iterations are
# scikit-learn's defaults (tiny settings stop at 500); cosine distance matches how the features
# are compared.

# %%
tsne = {
    name: TSNE(
        perplexity=30, max_iter=TSNE_STEPS, metric="cosine", init="pca", random_state=0
    ).fit_transform(feats.numpy())
    for name, feats in {"untrained": random_features, "trained": features}.items()
}
fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
colours = plt.get_cmap("tab10")
for ax, (name, points) in zip(axes, tsne.items(), strict=True):
    for c, class_name in enumerate(CLASSES):
        mask = (labels == c).numpy()
        ax.scatter(*points[mask].T, s=6, color=colours(c), label=class_name)
    ax.set_title(f"{name} encoder: 10-NN class agreement {agreement[name]:.2f}")
    ax.set_xticks([])
    ax.set_yticks([])
axes[1].legend(markerscale=2.5, fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5))
fig.suptitle(f"t-SNE of {len(labels)} CIFAR-10 test images, coloured by class (unseen in training)")
plt.show()

# %% [markdown]
# ## Nearest neighbours
#
# Each row: a test image (left) and its six nearest other test images by cosine similarity of
# the trained encoder's features, titled with their class (green: the query's class).

# %%
mean = torch.tensor(data.mean).view(3, 1, 1)
std = torch.tensor(data.std).view(3, 1, 1)
QUERIES, NEIGHBOURS = 6, 6
similarity = (features @ features.T).fill_diagonal_(-2.0)
top_similarity, nearest = similarity[:QUERIES].topk(NEIGHBOURS, dim=1)
fig, axes = plt.subplots(
    QUERIES, NEIGHBOURS + 1, figsize=(1.2 * (NEIGHBOURS + 1), 1.3 * QUERIES), layout="constrained"
)
for row in range(QUERIES):
    for col, index in enumerate([row, *nearest[row].tolist()]):
        ax = axes[row, col]
        ax.imshow((images[index] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy())
        same = labels[index] == labels[row]
        title = CLASSES[labels[index]] if col == 0 else f"{top_similarity[row, col - 1]:.2f}"
        ax.set_title(title, fontsize=7, color="black" if col == 0 else ("green" if same else "red"))
        ax.axis("off")
fig.suptitle("test images (left) and their nearest test images")
plt.show()

# %% [markdown]
# ## Checks
#
# One 2-D t-SNE point per embedded image, unit-norm features, neighbours that exclude the query
# itself and come sorted by similarity.

# %%
assert features.shape == (EMBED, model.backbone.dim) and labels.shape == (EMBED,)
assert all(points.shape == (EMBED, 2) and np.isfinite(points).all() for points in tsne.values())
torch.testing.assert_close(features.norm(dim=1), torch.ones(EMBED))
assert not (nearest == torch.arange(QUERIES)[:, None]).any()
assert torch.all(top_similarity[:, :-1] >= top_similarity[:, 1:])
assert all(0.0 <= value <= 1.0 for value in agreement.values())
print("all checks passed")
