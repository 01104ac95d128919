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
# # 02 · Compare runs: a table and curves from local and W&B offline runs
#
# Every run writes what a comparison needs into its folder (`default_root_dir`):
#
# - `csv/version_N/metrics.csv` (CSVLogger) and `csv/version_N/config.yaml` (the full config);
# - `run.json`: method, data, backbone, batch, epochs, wall time, images/s, peak memory, device,
#   git commit and a hash of the config (`lightning_ssl/callbacks/run_info.py`);
# - `wandb/offline-run-*/` when the W&B logger is on, offline by default (`wandb sync` uploads it).
#
# `lightning_ssl.compare` reads either kind of run (`load_run`), prints a markdown table
# (`compare`) and draws the probe and loss curves (`plot`); the command line does the same:
# `lightning-ssl compare runs/a runs/b --out compare` (a grid's folder expands to its runs).
#
# Here two short SimCLR runs that differ only in learning rate are trained and compared.
# **Settings:** tiny by default (128 images, 3 epochs: seconds on a CPU; the accuracies are near
# chance). With `LIGHTNING_SSL_NOTEBOOK_TINY=0` each run is the full quickstart (10,000 images,
# 6 epochs). To compare runs of your own instead, set `LIGHTNING_SSL_COMPARE` to their folders
# (separated by `:`), and no run is trained.

# %%
import json
import logging
import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import wandb
from _data import REPO, TINY, dataset_dir, fresh_dir
from IPython.display import Image, Markdown, display

from lightning_ssl.cli import run_cli
from lightning_ssl.compare import compare, find_runs, load_run, plot

warnings.filterwarnings("ignore")
logging.getLogger("lightning").setLevel(logging.ERROR)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

if TINY:
    EPOCHS, TRAIN, VAL, BATCH, WORKERS = 3, 128, 128, 32, 0
else:
    EPOCHS, TRAIN, VAL, BATCH, WORKERS = 6, 10_000, 2_000, 128, 1
LEARNING_RATES = {"lr2e-3": 2e-3, "lr5e-4": 5e-4}
OWN_RUNS = [Path(p) for p in os.environ.get("LIGHTNING_SSL_COMPARE", "").split(":") if p]

# %% [markdown]
# ## Two runs
#
# Each run logs to a CSV logger and an offline W&B logger in its own folder. Lightning's
# `WandbLogger` reuses a W&B run left open in the same process, so `wandb.finish()` closes each
# one before the next run starts (a new process, such as the command line, needs no such call).


# %%
def train(name: str, lr: float) -> Path:
    """One SimCLR run of the quickstart config in ``runs/compare/<name>``."""
    root = fresh_dir(Path("runs/compare") / name)
    loggers = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(root), "name": "csv"},
        },
        {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"save_dir": str(root), "project": "lightning-ssl", "offline": True},
        },
    ]
    run_cli(
        [
            "fit",
            f"--config={REPO / 'configs/simclr/quickstart.yaml'}",
            f"--trainer.default_root_dir={root}",
            f"--trainer.logger={json.dumps(loggers)}",
            f"--trainer.max_epochs={EPOCHS}",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--model.init_args.lr={lr}",
            f"--data.init_args.data_dir={dataset_dir('cifar10-jpeg')}",
            f"--data.init_args.train_subset={TRAIN}",
            f"--data.init_args.val_subset={VAL}",
            f"--data.init_args.batch_size={BATCH}",
            f"--data.init_args.num_workers={WORKERS}",
        ]
    )
    wandb.finish()
    return root


if OWN_RUNS:
    roots = [run for path in OWN_RUNS for run in find_runs(path)]
else:
    roots = [train(name, lr) for name, lr in LEARNING_RATES.items()]
runs = [load_run(root) for root in roots]
print([f"{run.name} ({run.source}, {len(run.rows)} logged rows)" for run in runs])

# %% [markdown]
# ## The table
#
# One row per run: final and best accuracies of the online probe and the kNN monitor (in %),
# wall time, throughput, peak memory (RSS on CPU, allocated GPU memory on GPU), the config's hash
# (two rows with the same hash ran the same config) and the git commit (`+dirty`: uncommitted
# changes). `compare(runs, "csv")` or `"json"` gives the raw values instead.

# %%
table = compare(runs)
display(Markdown(table))

# %% [markdown]
# ## The curves
#
# `plot` writes `probe_top1.png` and `loss.png` (one line per run, x: epochs completed), shown
# here, and returns the matplotlib figures. The step-wise loss below comes from the same rows
# (`run.rows`): every logged step, not only the epoch means.

# %%
figures = plot(runs, "runs/compare/plots")
for filename in figures:
    display(Image(filename=f"runs/compare/plots/{filename}", width=480))

fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
for run in runs:
    steps = [row["step"] for row in run.rows if "train/loss" in row]
    ax.plot(steps, [row["train/loss"] for row in run.rows if "train/loss" in row], label=run.name)
ax.set(xlabel="optimizer step", ylabel="training loss (NT-Xent)", title="every logged step")
ax.legend(fontsize="small")
plt.show()

# %% [markdown]
# ## The same runs read from W&B
#
# The offline W&B run (`runs/compare/<name>/wandb/offline-run-*`) holds the same history: read
# through `wandb leet inspect` (wandb >= 0.31), it gives the same per-epoch values and the
# `run.json` metadata (logged into the W&B config). So runs synced from other machines compare
# alike. After `wandb sync`, the W&B UI shows the same table (group by `config_hash`).

# %%
wandb_runs = [load_run(next(root.glob("wandb/offline-run-*"))) for root in roots if not OWN_RUNS]
for csv_run, wandb_run in zip(runs, wandb_runs, strict=False):
    print(
        f"{csv_run.name}: probe top-1 per epoch, CSV {csv_run.per_epoch('val/probe_top1')} "
        f"| W&B {wandb_run.per_epoch('val/probe_top1')}"
    )
if wandb_runs:
    display(Markdown(compare(wandb_runs)))

# %% [markdown]
# ## Checks
#
# One row per run in the table, `EPOCHS` points per line in the probe plot, and the W&B runs
# holding exactly the values of the CSV logs.

# %%
rows = json.loads(compare(runs, "json"))
assert [row["run"] for row in rows] == [run.name for run in runs]
assert len(table.splitlines()) == 2 + len(runs)
probe_lines = figures["probe_top1.png"].axes[0].lines
assert [line.get_label() for line in probe_lines] == [run.name for run in runs]
if not OWN_RUNS:
    assert all(len(line.get_xdata()) == EPOCHS for line in probe_lines)
    assert all(row["epochs"] == EPOCHS for row in rows)
    for csv_run, wandb_run in zip(runs, wandb_runs, strict=True):
        assert wandb_run.source == "wandb" and csv_run.source == "csv"
        for metric in ("val/probe_top1", "val/knn_top1", "train/loss"):
            assert wandb_run.values(metric) == csv_run.values(metric), metric
        assert wandb_run.info["config_hash"] == csv_run.info["config_hash"]
assert sorted(p.name for p in Path("runs/compare/plots").iterdir()) == [
    "loss.png",
    "probe_top1.png",
]
print("all checks passed")
