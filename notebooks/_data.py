"""What the notebooks share: the repository root, their datasets and their settings switch,
and the Imagewoof loading of the ViT notebooks (04, 05).

Datasets are read from ``$LIGHTNING_SSL_DATA/<name>`` (CI sets it) or ``<repo>/.cache/data/<name>``;
a missing folder is extracted once from the zips of ``../shared/data/<name>``, as the tests do
(``tests/conftest.py``).

Example:
    >>> from _data import REPO, TINY, dataset_dir
    >>> cifar10 = dataset_dir("cifar10-jpeg")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from lightning_ssl.data import ImageFolderDataModule

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTNING_SSL_SHARED_DATA", REPO.parent / "shared" / "data"))
DATA = Path(os.environ.get("LIGHTNING_SSL_DATA", REPO / ".cache" / "data"))

#: Seconds-long settings (CI, a laptop) unless ``LIGHTNING_SSL_NOTEBOOK_TINY=0`` (a GPU).
TINY = os.environ.get("LIGHTNING_SSL_NOTEBOOK_TINY", "1") == "1"


def dataset_dir(name: str) -> Path:
    """``DATA/name``, extracted from ``SHARED/name/*.zip`` (with its loose files) if missing.

    Example:
        >>> dataset_dir("imagewoof2-160") / "train"  # doctest: +SKIP
        PosixPath('/work/main/.cache/data/imagewoof2-160/train')
    """
    target = DATA / name
    marker = target / ".extracted"
    if marker.exists() or (target.is_dir() and any(target.iterdir())):
        return target
    source = SHARED / name
    if not source.is_dir():
        raise FileNotFoundError(
            f"no dataset {name}: neither {target} nor {source} exists "
            "(set LIGHTNING_SSL_DATA to a folder holding it)"
        )
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.suffix == ".zip":
            with zipfile.ZipFile(item) as archive:
                archive.extractall(target)
        elif item.is_file():
            shutil.copy(item, target / item.name)
    marker.touch()
    return target


def fresh_dir(path: str | os.PathLike) -> Path:
    """An empty folder at ``path`` (a run of the same name executed before is removed): each
    execution of a notebook starts its runs afresh instead of appending CSV versions."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def imagewoof_data(image_size: int, **training: Any) -> ImageFolderDataModule:
    """Imagewoof (10 dog breeds) at ``image_size``, loaded in the notebook's process.

    ``training``: the DataModule's training arguments (augmentation, crops, batch size, subset);
    none are needed to read the validation images of a loaded checkpoint.

    Example:
        >>> data = imagewoof_data(64, augmentation="dino", train_subset=128)  # doctest: +SKIP
    """
    root = dataset_dir("imagewoof2-160")
    return ImageFolderDataModule(str(root), image_size=image_size, num_workers=0, **training)


def imagewoof_breeds(data: ImageFolderDataModule) -> list[str]:
    """The breed of each label (``classes.tsv`` maps the WordNet folder names to breeds)."""
    root = Path(data.data_dir)
    names = dict(line.split("\t") for line in (root / "classes.tsv").read_text().splitlines())
    folders = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())  # label order
    return [names[folder] for folder in folders]


def held_out_images(data: ImageFolderDataModule, count: int) -> tuple[torch.Tensor, list[int]]:
    """``count`` validation images (normalised, ``(count, 3, H, W)``) and their labels, spread
    evenly over the class-sorted validation set: different breeds."""
    val = data.dataset("val")
    picks = np.linspace(0, len(val) - 1, count).astype(int).tolist()
    return torch.stack([val[i][0] for i in picks]), [val[i][1] for i in picks]


def short_run_trainer(epochs: int) -> L.Trainer:
    """A CPU Trainer for a notebook's short run: no validation, logger or checkpoints."""
    return L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def to_rgb(image: torch.Tensor, data: ImageFolderDataModule) -> np.ndarray:
    """A normalised ``(3, H, W)`` image as ``(H, W, 3)`` pixels in [0, 1], for ``imshow``."""
    mean = torch.tensor(data.mean).view(3, 1, 1)
    std = torch.tensor(data.std).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
