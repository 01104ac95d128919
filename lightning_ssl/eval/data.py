"""Labelled data for offline evaluation, composed from an :class:`SSLDataModule`'s splits.

Linear evaluation trains on single labelled images: the papers' linear protocol augments them
with a random resized crop and a horizontal flip only (SimCLR appendix B.6, MoCo, BYOL C.1),
or not at all. :class:`LinearEvalDataModule` builds that loader from the wrapped DataModule's
``train_eval`` split (same images, same subset) with another transform, and passes the
validation and test loaders through unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence, Sized
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from timm.data import create_transform
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Subset
from torchvision.transforms import v2

from lightning_ssl import distributed
from lightning_ssl.data import SSLDataModule
from lightning_ssl.data.transforms import _as_uint8_image
from lightning_ssl.eval.subsets import balanced_subset, read_subset_file, subset_from_file


def linear_train_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.08, 1.0),
) -> v2.Compose:
    """Random resized crop to ``size`` and a horizontal flip, then normalisation.

    Examples:
        >>> t = linear_train_transform(32, (0.5,) * 3, (0.25,) * 3)
        >>> tuple(t(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape)
        (3, 32, 32)
    """
    return v2.Compose(
        [
            v2.Lambda(_as_uint8_image),
            v2.RandomResizedCrop(size, scale=scale, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def finetune_train_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    auto_augment: str | None = "rand-m9-mstd0.5-inc1",
    random_erase: float = 0.25,
    scale: tuple[float, float] = (0.08, 1.0),
    interpolation: str = "bicubic",
) -> v2.Compose:
    """Fine-tuning's training transform: timm's ``create_transform`` as MAE calls it
    (``util/datasets.py``: random resized crop, flip, RandAugment, normalisation, random
    erasing in ``pixel`` mode), on a PIL image made from our tensor or PIL input.

    Examples:
        >>> t = finetune_train_transform(32, (0.5,) * 3, (0.25,) * 3)
        >>> tuple(t(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape)
        (3, 32, 32)
    """
    timm_transform = create_transform(
        input_size=size,
        is_training=True,
        scale=(scale[0], scale[1]),
        color_jitter=None,  # type: ignore[arg-type]  # MAE passes None: no colour jitter
        auto_augment=auto_augment or None,
        interpolation=interpolation,
        re_prob=random_erase,
        re_mode="pixel",
        re_count=1,
        mean=tuple(mean),
        std=tuple(std),
    )
    for step in timm_transform.transforms:
        for op in getattr(step, "ops", []):  # RandAugment's operations
            if op.name.startswith("Posterize"):
                op.aug_fn = _posterize
    return v2.Compose([v2.Lambda(_as_uint8_image), v2.ToPILImage(), timm_transform])


def _posterize(image: Image.Image, bits: int, **_: Any) -> Image.Image:
    """timm's posterize, also for ``bits = 0`` (all bits cleared: a black image), which timm's
    ``PosterizeIncreasing`` asks for at magnitude 10 (``rand-m9-mstd0.5`` reaches it) and
    Pillow >= 11 refuses (``bits must be between or equal to 1 and 8``)."""
    if bits >= 8:
        return image
    if bits <= 0:
        return Image.new(image.mode, image.size)
    return ImageOps.posterize(image, bits)


def with_transform(dataset: Dataset, transform: Callable) -> Dataset:
    """A copy of ``dataset`` (through ``Subset`` and ``ConcatDataset``) with another transform.

    The images are shared, not copied: only the leaf datasets' ``transform`` differs.
    """
    if isinstance(dataset, Subset):
        return Subset(with_transform(dataset.dataset, transform), dataset.indices)
    if isinstance(dataset, ConcatDataset):
        return ConcatDataset([with_transform(d, transform) for d in dataset.datasets])
    if not hasattr(dataset, "transform"):
        raise TypeError(f"{type(dataset).__name__} has no transform attribute to replace")
    leaf = copy.copy(dataset)
    leaf.transform = transform
    return leaf


class _Indices(Dataset):
    """``(index, label)`` pairs: batches of a feature cache, with no image loaded."""

    def __init__(self, labels: Tensor) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, int(self.labels[index])


def dataset_labels(dataset: Dataset) -> Tensor:
    """Labels of every item of ``dataset``, read without decoding images where possible."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if isinstance(dataset, ConcatDataset):
        return torch.cat([dataset_labels(d) for d in dataset.datasets])
    if isinstance(labels := getattr(dataset, "labels", None), Tensor):
        return labels.long()
    if hasattr(dataset, "samples"):
        return torch.tensor([label for _, label in dataset.samples])
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]


class LinearEvalDataModule(L.LightningDataModule):
    """The loaders of linear evaluation over the splits of an :class:`SSLDataModule`.

    ``train_dataloader`` yields ``(images, labels)`` of the training split (the last partial
    batch dropped), shuffled by a ``DistributedSampler`` seeded like the pretraining order, under
    :func:`linear_train_transform` (``augment=True``) or the evaluation transform; with
    ``indices_only=True`` it yields ``(indices, labels)`` instead, for a model that looks the
    features up in a cache. Validation and test loaders are the wrapped DataModule's.

    Args:
        data: the pretraining DataModule (its ``batch_size`` is the training batch per process).
        augment: random resized crop and flip (the papers' linear protocol) or none.
        crop_scale: area range of the random resized crop.
        indices_only: yield dataset indices instead of images (feature caching).
        train_transform: the training images' transform instead of the linear protocol's
            (fine-tuning's RandAugment pipeline); ``augment`` is then ignored.
        label_fraction: train on this share of the labelled images only, the same number of
            each class, drawn with the data's ``seed`` (the semi-supervised protocol, see
            :func:`~lightning_ssl.eval.subsets.balanced_subset`).
        subset_file: train on the images whose file names this text file lists (SimCLR's
            ImageNet ``1percent.txt`` / ``10percent.txt``); ImageFolder data only.

    Examples:
        >>> dm = CIFAR10DataModule("data/cifar10", batch_size=256)  # doctest: +SKIP
        >>> trainer.fit(LinearEvaluation("last.ckpt"), LinearEvalDataModule(dm))  # doctest: +SKIP
    """

    def __init__(
        self,
        data: SSLDataModule,
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        indices_only: bool = False,
        train_transform: Callable | None = None,
        label_fraction: float | None = None,
        subset_file: str | None = None,
    ) -> None:
        super().__init__()
        if label_fraction is not None and subset_file is not None:
            raise ValueError("give label_fraction or subset_file, not both")
        if indices_only and (label_fraction is not None or subset_file is not None):
            raise ValueError("the feature cache holds the whole training split: no label subset")
        self.data, self.augment = data, augment
        self.crop_scale = (crop_scale[0], crop_scale[1])  # a list when read from YAML
        self.indices_only, self.train_transform = indices_only, train_transform
        self.label_fraction, self.subset_file = label_fraction, subset_file
        self.batch_size = data.batch_size
        self._labelled: Dataset | None = None

    def __getattr__(self, name: str) -> Any:
        # num_classes, image_size, mean, std, train_eval_dataloader ... of the wrapped data.
        if name == "data":
            raise AttributeError(name)
        return getattr(self.data, name)

    def prepare_data(self) -> None:
        self.data.prepare_data()

    def setup(self, stage: str) -> None:
        self.data.trainer = self.trainer
        self.data.setup(stage)

    def train_dataset(self) -> Dataset:
        """The labelled training split under the linear-evaluation transform (or indices)."""
        dataset = self.labelled_dataset()
        if self.indices_only:
            return _Indices(dataset_labels(dataset))
        if self.train_transform is not None:
            return with_transform(dataset, self.train_transform)
        if not self.augment:
            return dataset
        transform = linear_train_transform(
            self.data.image_size, self.data.mean, self.data.std, self.crop_scale
        )
        return with_transform(dataset, transform)

    def labelled_dataset(self) -> Dataset:
        """The labelled training images under the evaluation transform: the ``train_eval``
        split, or its subset of ``label_fraction`` / ``subset_file`` (computed once)."""
        if self._labelled is None:
            dataset = self.data.dataset("train_eval")
            if self.subset_file is not None:
                indices = subset_from_file(dataset, read_subset_file(self.subset_file))
                dataset = Subset(dataset, indices)
            elif self.label_fraction is not None:
                labels = dataset_labels(dataset)
                seed = self.data.hparams["seed"]
                dataset = Subset(dataset, balanced_subset(labels, self.label_fraction, seed))
            self._labelled = dataset
        return self._labelled

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset()
        trainer = self.trainer
        sampler: DistributedSampler[int] = DistributedSampler(
            dataset,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
            shuffle=True,
            seed=self.data.hparams["seed"],
        )
        workers = 0 if self.indices_only else self.data.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,  # a last batch of one image would break a BatchNorm head
            num_workers=workers,
            pin_memory=self.data.pin_memory,
            persistent_workers=workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self.data.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.data.test_dataloader()


@torch.no_grad()
def encode_dataset(
    encoder: nn.Module,
    loader: DataLoader,
    device: torch.device,
    normalize: bool = False,
    context: Callable[[], Any] | None = None,
) -> tuple[Tensor, Tensor]:
    """Features and labels of every item of ``loader.dataset``, in dataset order, on all ranks.

    Each process encodes every ``world_size``-th item; the shards are gathered so every rank
    returns the whole ``(N, D)`` float32 features and ``(N,)`` labels.

    Args:
        encoder: maps ``(B, 3, H, W)`` images to ``(B, D)`` features (called in eval mode).
        loader: its dataset, batch size, workers and collate function are used (not its order).
        device: where images are encoded and the result lives.
        normalize: L2-normalize the features (the kNN bank).
        context: a context-manager factory around each forward (the precision plugin's).

    Examples:
        >>> loader = dm.train_eval_dataloader()  # doctest: +SKIP
        >>> feats, labels = encode_dataset(backbone, loader, torch.device("cpu"))  # doctest: +SKIP
    """
    dataset = loader.dataset
    assert isinstance(dataset, Sized), "encoding a dataset needs its length"
    size, world, rank = len(dataset), distributed.world_size(), distributed.rank()
    shard_loader = DataLoader(
        Subset(dataset, list(range(rank, size, world))),
        batch_size=loader.batch_size,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
    )
    feats, labels = _encode_batches(encoder, shard_loader, device, normalize, context)
    dim = feats[0].shape[1] if feats else _feature_dim(encoder, dataset, device)
    local = torch.cat(feats) if feats else torch.zeros(0, dim, device=device)
    local_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
    return _gather_in_dataset_order(local, local_labels, size, world, device)


def _encode_batches(
    encoder: nn.Module,
    loader: DataLoader,
    device: torch.device,
    normalize: bool,
    context: Callable[[], Any] | None,
) -> tuple[list[Tensor], list[Tensor]]:
    """Float32 (optionally L2-normalized) features and labels of each batch of ``loader``."""
    feats, labels = [], []
    for images, targets in loader:
        if context is None:
            out = encoder(images.to(device, non_blocking=True))
        else:
            with context():
                out = encoder(images.to(device, non_blocking=True))
        out = out.float()
        feats.append(F.normalize(out, dim=1) if normalize else out)
        labels.append(targets.to(device))
    return feats, labels


def _gather_in_dataset_order(
    local: Tensor, local_labels: Tensor, size: int, world: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Every rank's shard (items ``rank, rank + world, ...``) gathered back into item order."""
    dim = local.shape[1]
    per_rank = -(-size // world)
    pad = per_rank - local.shape[0]  # shards differ by at most one item
    local = torch.cat([local, local.new_zeros(pad, dim)])
    local_labels = torch.cat([local_labels, local_labels.new_full((pad,), -1)])
    gathered = distributed.gather_no_grad(local)
    gathered_labels = distributed.gather_no_grad(local_labels)
    # Row r * per_rank + j of the gather holds item r + j * world: put items back in order.
    order = torch.arange(per_rank * world, device=device).view(world, per_rank)
    item = (order % per_rank) * world + order // per_rank
    keep = (item < size).flatten()
    features = torch.empty(size, dim, device=device)
    targets = torch.empty(size, dtype=gathered_labels.dtype, device=device)
    features[item.flatten()[keep]] = gathered[keep]
    targets[item.flatten()[keep]] = gathered_labels[keep]
    return features, targets


def _feature_dim(encoder: nn.Module, dataset: Dataset, device: torch.device) -> int:
    """Feature size for a rank with no item (more processes than items)."""
    image = dataset[0][0]
    return int(encoder(image[None].to(device)).shape[1])
