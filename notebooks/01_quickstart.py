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
# # 01 · Quickstart: train SimCLR, watch the probe, retrieve neighbours
#
# This notebook runs the README's quickstart (`configs/simclr/quickstart.yaml`: SimCLR with
# timm's 0.4 M-parameter `test_resnet` on CIFAR-10) from Python, then looks at what it learned:
#
# 1. the **online linear probe** and the **kNN monitor** accuracy after every epoch, read back
#    from the run's `metrics.csv`;
# 2. **kNN retrieval**: for a few test images, the training images whose features are the most
#    similar (cosine), shown as an image grid.
#
# **Settings.** By default the notebook runs at *tiny* settings (seconds on a CPU: 256 training
# images, 3 epochs), which is what CI executes. Set `LIGHTNING_SSL_NOTEBOOK_TINY=0` before
# starting Jupyter for the real quickstart: 10,000 images, 6 epochs, batch 128 (about 5 minutes on
# a 2-core CPU), where the probe reaches about 37 % and kNN about 40 % top-1
# (chance: 10 %). At tiny settings the numbers are close to chance: the point is the mechanics.
#
# Data: CIFAR-10 as a JPEG tree in `$LIGHTNING_SSL_DATA/cifar10-jpeg` (default
# `<repo>/.cache/data`; extracted from `../shared/data` on first use, see `_data.py`).

# %%
import json
import logging
import warnings

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from _data import REPO, TINY, dataset_dir, fresh_dir
from IPython.display import Markdown, display

from lightning_ssl.cli import run_cli
from lightning_ssl.compare import load_run
from lightning_ssl.nn.knn import knn_predict

warnings.filterwarnings("ignore")
logging.getLogger("lightning").setLevel(logging.ERROR)

if TINY:
    EPOCHS, TRAIN, VAL, BATCH, WORKERS = 3, 256, 200, 64, 0
else:  # the quickstart config's own values
    EPOCHS, TRAIN, VAL, BATCH, WORKERS = 6, 10_000, 2_000, 128, 1
CIFAR10 = dataset_dir("cifar10-jpeg")
CLASSES = sorted(p.name for p in (CIFAR10 / "train").iterdir() if p.is_dir())
RUN = fresh_dir("runs/quickstart")
print(f"tiny={TINY}: {EPOCHS} epochs on {TRAIN} images; run folder {RUN}")

# %% [markdown]
# ## Train
#
# `run_cli` is the `lightning-ssl` command run in-process: the same arguments, and it returns the
# `LightningCLI` object (`cli.trainer`, `cli.model`, `cli.datamodule`). The config's callbacks
# train a linear probe on the detached features of every training batch (`OnlineLinearProbe`) and
# classify the test images by a kNN vote over the training features each epoch (`KNNMonitor`,
# k = 200). This notebook keeps only the CSV logger (notebook 02 compares W&B runs too).

# %%
csv_logger = {
    "class_path": "lightning.pytorch.loggers.CSVLogger",
    "init_args": {"save_dir": str(RUN), "name": "csv"},
}
cli = run_cli(
    [
        "fit",
        f"--config={REPO / 'configs/simclr/quickstart.yaml'}",
        f"--trainer.default_root_dir={RUN}",
        f"--trainer.logger={json.dumps([csv_logger])}",
        f"--trainer.max_epochs={EPOCHS}",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--data.init_args.data_dir={CIFAR10}",
        f"--data.init_args.train_subset={TRAIN}",
        f"--data.init_args.val_subset={VAL}",
        f"--data.init_args.batch_size={BATCH}",
        f"--data.init_args.num_workers={WORKERS}",
    ]
)
model, datamodule = cli.model.eval(), cli.datamodule
print({k: round(float(v), 4) for k, v in cli.trainer.callback_metrics.items()})

# %% [markdown]
# ## The probe curve
#
# `lightning_ssl.compare.load_run` reads the run folder (`metrics.csv`, `run.json`): one value of
# each validation metric per epoch. The probe is a linear classifier trained *while* the encoder
# learns, so its accuracy follows the quality of the features; the kNN accuracy needs no training
# at all. Both should rise above the 10 % of chance as SimCLR trains.

# %%
run = load_run(RUN)
probe = run.per_epoch("val/probe_top1")
knn = run.per_epoch("val/knn_top1")
epochs = [e + 1 for e in probe]

fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
ax.plot(epochs, [100 * v for v in probe.values()], marker="o", label="online linear probe")
ax.plot(epochs, [100 * v for v in knn.values()], marker="s", label="kNN (k = 200)")
ax.axhline(10, color="grey", linestyle=":", label="chance")
ax.set(xlabel="epoch", ylabel="test top-1 (%)", xticks=epochs, title="SimCLR quickstart")
ax.legend(fontsize="small")
plt.show()
display(
    Markdown(
        f"Final: probe **{100 * run.final('val/probe_top1'):.1f} %**, "
        f"kNN **{100 * run.final('val/knn_top1'):.1f} %** top-1 "
        f"after {run.info['epochs_completed']} epochs "
        f"({run.info['train_time_s']:.1f} s of training)."
    )
)

# %% [markdown]
# ## kNN retrieval
#
# The encoder's features of the test images (queries) and of the training images (the bank),
# L2-normalised, are compared by cosine similarity. `knn_predict` turns the 200 nearest
# neighbours into a weighted class vote; it is the computation of the kNN monitor, so recomputing
# it here gives the logged `val/knn_top1` back.
#
# The grid shows, for a few test images (left column), their five nearest training images with
# their similarity; a green title means the neighbour has the query's class. With a trained
# encoder neighbours share colour, layout and often class; at tiny settings mostly colour.


# %%
@torch.no_grad()
def features(loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L2-normalised features, labels and the (normalised) images of a loader."""
    feats, labels, images = [], [], []
    for x, y in loader:
        feats.append(F.normalize(model.extract_features(x), dim=1))
        labels.append(y)
        images.append(x)
    return torch.cat(feats), torch.cat(labels), torch.cat(images)


bank, bank_labels, bank_images = features(datamodule.train_eval_dataloader())
query, query_labels, query_images = features(datamodule.val_dataloader())
scores = knn_predict(query, bank, bank_labels, datamodule.num_classes, k=200, temperature=0.1)
knn_top1 = (scores.argmax(1) == query_labels).float().mean().item()
print(f"kNN top-1 recomputed: {100 * knn_top1:.2f} %  (logged: {100 * knn[EPOCHS - 1]:.2f} %)")

mean = torch.tensor(datamodule.mean).view(3, 1, 1)
std = torch.tensor(datamodule.std).view(3, 1, 1)


def show(ax, image: torch.Tensor, title: str, color: str = "black") -> None:
    """Draw one normalised ``(3, H, W)`` image with its title."""
    ax.imshow((image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=7, color=color)
    ax.axis("off")


QUERIES, NEIGHBOURS = 6, 5
similarity, nearest = (query[:QUERIES] @ bank.T).topk(NEIGHBOURS, dim=1)
fig, axes = plt.subplots(
    QUERIES, NEIGHBOURS + 1, figsize=(1.2 * (NEIGHBOURS + 1), 1.3 * QUERIES), layout="constrained"
)
for row in range(QUERIES):
    show(axes[row, 0], query_images[row], f"query: {CLASSES[query_labels[row]]}")
    for col in range(NEIGHBOURS):
        index = nearest[row, col]
        same = bank_labels[index] == query_labels[row]
        title = f"{CLASSES[bank_labels[index]]} {similarity[row, col]:.2f}"
        show(axes[row, col + 1], bank_images[index], title, "green" if same else "red")
fig.suptitle("test images (left) and their nearest training images (cosine similarity)")
plt.show()

# %% [markdown]
# ## Checks
#
# The quantities above are what they claim to be: one probe point per epoch, accuracies are
# fractions, the recomputed kNN accuracy is the logged one (up to one image, from float ties),
# neighbours come sorted by similarity, and the last checkpoint exists for later notebooks (03
# embeds with it when `LIGHTNING_SSL_CHECKPOINT` names
# `notebooks/runs/quickstart/checkpoints/last.ckpt`).

# %%
assert len(probe) == len(knn) == EPOCHS, (probe, knn)
assert all(0.0 <= v <= 1.0 for v in [*probe.values(), *knn.values()])
assert abs(knn_top1 - knn[EPOCHS - 1]) <= 1.0 / len(query_labels) + 1e-6, (knn_top1, knn)
assert bank.shape == (TRAIN, model.backbone.dim) and query.shape == (VAL, model.backbone.dim)
assert torch.all(similarity[:, :-1] >= similarity[:, 1:]) and similarity.abs().max() <= 1 + 1e-5
assert (RUN / "checkpoints" / "last.ckpt").is_file()
print("all checks passed")
