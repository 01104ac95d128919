"""Labelled subsets of a training split for the semi-supervised protocol (1% / 10% of labels).

SimCLR (Chen et al., 2020, Sec. 6 and appendix B.5) and BYOL (Grill et al., 2020, Sec. 4.2)
fine-tune on fixed ImageNet subsets: the files ``imagenet_subsets/1percent.txt`` (12,811 image
names) and ``10percent.txt`` (128,116) of google-research/simclr, which hold 12 or 13 (128 or
129) images of every class: the same count per class, not a share of each class's size. For
ImageNet, pass that file (:func:`subset_from_file`); for any other dataset
:func:`balanced_subset` draws a subset with the same convention from a seed: ``floor(fraction
* N)`` images, spread over the classes as evenly as possible.

The draw reads only the labels and a seeded generator of its own (never the global random
state), so every process of a multi-process run computes the same subset.

Examples:
    >>> labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    >>> picked = balanced_subset(labels, fraction=0.5, seed=0)
    >>> len(picked), torch.bincount(labels[picked]).tolist()
    (6, [2, 2, 2])
    >>> picked == balanced_subset(labels, fraction=0.5, seed=0)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset


def balanced_subset(labels: Tensor, fraction: float, seed: int) -> list[int]:
    """Sorted indices of ``floor(fraction * len(labels))`` items, as many of each class as can be.

    Every class present gets ``total // classes`` items, and ``total % classes`` classes drawn
    at random one more; the items of a class are drawn at random. A class with fewer items
    than its share gives all it has.

    Args:
        labels: ``(N,)`` class of every item.
        fraction: share of the items to keep, in ``(0, 1]``.
        seed: seed of the draw (the same seed gives the same subset).

    Raises:
        ValueError: ``fraction`` is outside ``(0, 1]`` or keeps fewer items than classes.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    classes = torch.unique(labels)
    total = int(fraction * len(labels))
    if total < len(classes):
        raise ValueError(
            f"label_fraction={fraction} keeps {total} of {len(labels)} training images, fewer "
            f"than the {len(classes)} classes: raise label_fraction (or use more images)"
        )
    generator = torch.Generator().manual_seed(seed)
    share = torch.full((len(classes),), total // len(classes))
    share[torch.randperm(len(classes), generator=generator)[: total % len(classes)]] += 1
    picked: list[Tensor] = []
    for cls, count in zip(classes.tolist(), share.tolist(), strict=True):
        members = torch.nonzero(labels == cls).flatten()
        order = torch.randperm(len(members), generator=generator)
        picked.append(members[order[:count]])
    return sorted(torch.cat(picked).tolist())


def read_subset_file(path: str | Path) -> list[str]:
    """The image file names listed in ``path``, one per line (SimCLR's ``1percent.txt``)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"subset_file {file} does not exist: give a text file of image file names, one per "
            "line (e.g. imagenet_subsets/1percent.txt of google-research/simclr)"
        )
    names = [line.strip() for line in file.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"subset_file {file} lists no image file name")
    return names


def dataset_file_names(dataset: Dataset) -> list[str]:
    """The file name (no folder) of every item of ``dataset``, through ``Subset``/``ConcatDataset``.

    Raises:
        TypeError: the dataset is not made of image files (e.g. CIFAR arrays in memory).
    """
    if isinstance(dataset, Subset):
        names = dataset_file_names(dataset.dataset)
        return [names[i] for i in dataset.indices]
    if isinstance(dataset, ConcatDataset):
        return [name for d in dataset.datasets for name in dataset_file_names(d)]
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise TypeError(
            f"subset_file needs a dataset of image files (an ImageFolder tree); "
            f"{type(dataset).__name__} has none: use label_fraction instead"
        )
    return [Path(path).name for path, _ in samples]


def subset_from_file(dataset: Dataset, names: Sequence[str]) -> list[int]:
    """Sorted indices of the items of ``dataset`` whose file name is listed in ``names``.

    Raises:
        ValueError: a listed name is not in the dataset (a subset file of another dataset, or
            a ``train_subset`` that left it out).
    """
    files = dataset_file_names(dataset)
    index = {name: i for i, name in enumerate(files)}
    missing = [name for name in names if name not in index]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(names)} images of subset_file are not in the training "
            f"split (first: {', '.join(missing[:3])}): is the file for this dataset, and is "
            "data train_subset unset?"
        )
    return sorted(index[name] for name in set(names))
