"""The DataModule base: views, datasets, loaders and hooks shared by every dataset.

Every datamodule yields

* ``train_dataloader()``: ``(views, labels)`` with ``views`` a list of ``(B, C, H, W)`` tensors,
  global crops first (shuffled, last partial batch dropped); with ``batched_augmentation=True``
  the loader yields ``uint8`` images and the views are made on the training device by
  :meth:`SSLDataModule.on_after_batch_transfer`, so the training step sees the same batches;
  ``(views, labels, indices)`` with ``sample_indices`` (see the argument);
* ``val_dataloader()`` / ``test_dataloader()``: ``(images, labels)`` of the evaluation split
  under the deterministic evaluation transform;
* ``train_eval_dataloader()``: the training split under the evaluation transform, in order
  (the feature bank of the kNN monitor and the data of offline linear evaluation).

The properties the CLI links into the model (``num_classes``, ``image_size``,
``num_global_crops``, ``num_local_crops``, ``views``, ``mean``, ``std``) are known right after
``__init__`` without reading any data.

Adding a dataset is one small file next to ``cifar.py``: subclass :class:`InMemoryDataModule`
(splits that fit in memory as ``uint8`` tensors: implement ``load_split``) or
:class:`SSLDataModule` (files decoded per image in the loader workers: implement
``build_dataset``, as ``image_folder.py`` does), set the class attributes (``default_image_size``,
``default_mean``, ``default_std``, ``fixed_num_classes``), put a reader of the files in
``readers.py`` if it needs one, and export the class from ``lightning_ssl/data/__init__.py``.
The training order and its resumption (``sampling.py``) and the device-side batches
(``device.py``) come with the base.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from lightning_ssl.data.batched import BatchedMultiCrop
from lightning_ssl.data.datasets import TensorImageDataset
from lightning_ssl.data.device import (
    check_data_arguments,
    collate_with_indices,
    copy_images_to,
    seeded_generator,
    split_sample_indices,
    training_items,
    unpack_training_batch,
)
from lightning_ssl.data.presets import preset
from lightning_ssl.data.sampling import StartOnFirstBatchLoader, training_data
from lightning_ssl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiCropTransform,
    ViewGroup,
    eval_transform,
)

SPLITS = ("train", "train_eval", "val")
_STAGE_SPLITS = {"fit": SPLITS, "validate": ("val",), "test": ("val",), "predict": ("val",)}


class SSLDataModule(LightningDataModule):
    """Base class: multi-crop training views, evaluation loaders, subsets and the CLI links.

    Subclasses set the class attributes (``default_image_size``, ``default_mean``,
    ``default_std``, ``eval_resize``, ``fixed_num_classes``) and implement :meth:`build_dataset`.

    Args:
        data_dir: Folder holding the dataset (see each subclass for its layout).
        batch_size: Training batch size per process.
        num_workers: DataLoader worker processes (0 loads in the main process).
        augmentation: Preset of :func:`~lightning_ssl.data.presets.preset`: ``simclr``,
            ``moco``, ``byol``, ``dino``, ``swav``, ``mae`` (one view) or ``none``.
        image_size: Side of the global crops and evaluation images (default: the dataset's
            native size, 224 for ImageFolder trees).
        num_local_crops: Number of local (multi-crop) views appended after the global ones.
        local_size: Side of the local crops (default ``max(8, round(image_size * 96 / 224))``).
        views: Explicit view groups; overrides ``augmentation``, ``num_local_crops`` and
            ``local_size`` entirely.
        eval_batch_size: Batch size of the evaluation loaders (default ``batch_size``).
        train_subset: Use only this many training images (the first of a permutation seeded
            by ``seed``; it applies to ``train_eval_dataloader`` too). For quick CPU runs.
        val_subset: Use only this many evaluation images (seeded like ``train_subset``).
        pin_memory: Pin loaded batches in page-locked memory (faster host-to-GPU copies).
        seed: Seed of the subset permutations and of the training order (with the epoch).
        batched_augmentation: Make the training views on the training batch's device after
            the transfer (:class:`~lightning_ssl.data.batched.BatchedMultiCrop`: crops and
            colour ops for the whole batch at once, per-sample random parameters, the same view
            groups) instead of per image in the loader workers. The loader then only delivers
            ``uint8`` images. Recommended on GPU.
        images_on_device: In-memory datasets only (CIFAR, STL-10, Fashion-MNIST), with
            ``batched_augmentation``: keep a copy of the ``uint8`` training images on the
            training device (moved on first use) and let the loader yield only indices and
            labels, so an epoch needs no copying of images and no worker processes.
        sample_indices: Training batches are ``(views, labels, indices)``, each image's index
            in ``dataset("train")``; on whenever the model sets ``needs_sample_indices``.
    """

    default_image_size: ClassVar[int] = 224
    default_mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    default_std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    eval_resize: ClassVar[bool] = True
    fixed_num_classes: ClassVar[int | None] = None
    _hparams_initial: AttributeDict  # save_hyperparameters sets it

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 256,
        num_workers: int = 4,
        augmentation: str = "simclr",
        image_size: int | None = None,
        num_local_crops: int = 0,
        local_size: int | None = None,
        views: list[ViewGroup] | None = None,
        eval_batch_size: int | None = None,
        train_subset: int | None = None,
        val_subset: int | None = None,
        pin_memory: bool = False,
        seed: int = 0,
        batched_augmentation: bool = False,
        images_on_device: bool = False,
        sample_indices: bool = False,
    ) -> None:
        super().__init__()
        check_data_arguments(
            batched_augmentation,
            images_on_device,
            batch_size=(batch_size, 1),
            num_workers=(num_workers, 0),
            num_local_crops=(num_local_crops, 0),
            eval_batch_size=(eval_batch_size, 1),
            train_subset=(train_subset, 1),
            val_subset=(val_subset, 1),
        )
        self._views = self._resolve_views(
            augmentation, image_size, num_local_crops, local_size, views
        )
        self.save_hyperparameters()
        self._record_resolved_hparams(explicit_views=views is not None)
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.eval_batch_size = eval_batch_size or batch_size
        self._image_size = self._views[0].size
        self._datasets: dict[str, Dataset] = {}
        self._loaded: dict[str, Any] = {}  # arrays / folder scans shared by the splits
        self.batched_augmentation, self.images_on_device = batched_augmentation, images_on_device
        self._device_images: Tensor | None = None  # images_on_device: the training images
        self._make_transforms()

    def _record_resolved_hparams(self, explicit_views: bool) -> None:
        # Resolved values, as Lightning merges these hparams with the model's (linked) ones;
        # views as plain dicts keep hparams.yaml readable and checkpoints free of custom classes.
        resolved = {
            "image_size": self._views[0].size,
            "num_local_crops": self.num_local_crops,
            "views": [asdict(v) for v in self._views] if explicit_views else None,
        }
        self.hparams.update(resolved)
        self._hparams_initial.update(resolved)

    def _make_transforms(self) -> None:
        # The CPU path transforms each training image in the loader; the batched path leaves
        # the uint8 images to BatchedMultiCrop after the transfer to the training device.
        self.train_transform: Callable | None = MultiCropTransform(self._views, self.mean, self.std)
        self.batched_transform: BatchedMultiCrop | None = None
        if self.batched_augmentation:
            self.train_transform = None
            self.batched_transform = BatchedMultiCrop(self._views, self.mean, self.std)
        self.val_transform = eval_transform(self.image_size, self.mean, self.std, self.eval_resize)

    def _resolve_views(
        self,
        augmentation: str,
        image_size: int | None,
        num_local: int,
        local_size: int | None,
        views: Sequence[ViewGroup] | None,
    ) -> list[ViewGroup]:
        if views is None:
            size = image_size or self.default_image_size
            return preset(augmentation, size, local_size, num_local)
        if num_local or local_size is not None:
            raise ValueError(
                "views are given explicitly, so num_local_crops/local_size would be ignored: "
                "add a local group to views instead (e.g. {num: 6, size: 96, local: true})"
            )
        views = [ViewGroup(**v) if isinstance(v, dict) else v for v in views]
        views = [v for v in views if v.num > 0]
        sizes = {g.size for g in views if not g.local}
        if len(sizes) != 1:
            raise ValueError(f"views need global groups (local=False) of one size, got {sizes}")
        if image_size is not None and image_size not in sizes:
            raise ValueError(f"image_size={image_size} differs from the global view size {sizes}")
        MultiCropTransform(views, self.default_mean, self.default_std)  # validates the order
        return views

    # -- what the CLI links into the model: known without reading the data -------------------
    @property
    def num_classes(self) -> int:
        """Number of classes of the labelled splits."""
        assert self.fixed_num_classes is not None, "subclasses set fixed_num_classes"
        return self.fixed_num_classes

    @property
    def image_size(self) -> int:
        """Side of the global crops (and of the evaluation images)."""
        return self._image_size

    @property
    def views(self) -> list[ViewGroup]:
        """The resolved view groups, global groups first."""
        return list(self._views)

    @property
    def num_global_crops(self) -> int:
        """Number of global views per image (the first views of a batch)."""
        return sum(g.num for g in self._views if not g.local)

    @property
    def num_local_crops(self) -> int:
        """Number of local views per image (after the global ones)."""
        return sum(g.num for g in self._views if g.local)

    @property
    def mean(self) -> tuple[float, float, float]:
        """Per-channel normalisation mean."""
        return self.default_mean

    @property
    def std(self) -> tuple[float, float, float]:
        """Per-channel normalisation standard deviation."""
        return self.default_std

    # -- datasets ----------------------------------------------------------------------------
    def build_dataset(self, split: str, transform: Callable | None) -> Dataset:
        """The dataset of ``split``: ``train`` (pretraining), ``train_eval`` or ``val``.

        ``transform`` is ``None`` for the training split under ``batched_augmentation``: items
        are then ``uint8`` ``(3, H, W)`` tensors.
        """
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs (idempotent; loaders build missing ones)."""
        for split in _STAGE_SPLITS.get(stage or "fit", SPLITS):
            self.dataset(split)

    def dataset(self, split: str) -> Dataset:
        """The (cached, possibly subset) dataset of ``split``: train, train_eval or val."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if split not in self._datasets:
            transform = self.train_transform if split == "train" else self.val_transform
            dataset = self.build_dataset(split, transform)
            limit = self.hparams["val_subset"] if split == "val" else self.hparams["train_subset"]
            self._datasets[split] = self._subset(dataset, limit)
        return self._datasets[split]

    def _subset(self, dataset: Dataset, limit: int | None) -> Dataset:
        size = len(dataset)  # type: ignore[arg-type]
        if limit is None or limit >= size:
            return dataset
        generator = torch.Generator().manual_seed(self.hparams["seed"])
        return Subset(dataset, torch.randperm(size, generator=generator)[:limit].tolist())

    # -- loaders -----------------------------------------------------------------------------
    def _loader(
        self,
        dataset: Dataset,
        batch_size: int,
        train: bool,
        sampler: Sampler | None = None,
        collate_fn: Callable | None = None,
        num_workers: int | None = None,
    ) -> DataLoader:
        workers = self.num_workers if num_workers is None else num_workers
        # Training: the iterator starts after a checkpoint is restored (see .sampling).
        loader_class = StartOnFirstBatchLoader if train else DataLoader
        return loader_class(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
            collate_fn=collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        """Batches ``(views, labels)``: ``len(views)`` tensors ``(B, C, H, W)``, globals first.

        With ``batched_augmentation`` the loader yields ``(images, labels)`` of ``uint8``
        images (``(images, sizes, labels)`` for an ImageFolder, zero-padded, see
        :func:`~lightning_ssl.data.datasets.pad_collate`), or ``(indices, labels)`` with
        ``images_on_device``; :meth:`on_after_batch_transfer` turns them into the views.
        """
        indexed = self.delivers_sample_indices()
        dataset = training_items(self.dataset("train"), self.images_on_device, indexed)
        per_image_views = self.train_transform is not None  # seeded by (seed, epoch, index)
        dataset, sampler = training_data(
            dataset, self.batch_size, self.hparams["seed"], self.trainer, per_image_views
        )
        if self.images_on_device:  # indices and labels: cheaper to batch in this process
            return self._loader(dataset, self.batch_size, True, sampler, num_workers=0)
        collate = self.train_collate_fn if self.batched_augmentation else None
        collate = collate_with_indices(collate) if indexed else collate
        return self._loader(dataset, self.batch_size, True, sampler, collate_fn=collate)

    def delivers_sample_indices(self) -> bool:
        """Whether training batches end with sample indices (argument or the model's wish)."""
        model = getattr(self.trainer, "lightning_module", None)
        return bool(self.hparams["sample_indices"] or getattr(model, "needs_sample_indices", False))

    #: Collation of the training batches under ``batched_augmentation`` (default: stacking).
    train_collate_fn: ClassVar[Callable | None] = None

    # -- batched augmentation ----------------------------------------------------------------
    def device_images(self, device: torch.device) -> Tensor:
        """The ``uint8`` training images (in training-set order) on ``device``, copied once."""
        if self._device_images is None or self._device_images.device != device:
            self._device_images = copy_images_to(self.dataset("train"), device)
        return self._device_images

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches under ``batched_augmentation``: the views, made on the device.

        Lightning calls this DataModule hook (instead of the LightningModule's) once the batch
        is on the training device. Validation, test and kNN batches pass untouched.
        """
        if self.batched_transform is None or self.trainer is None or not self.trainer.training:
            return batch
        return self.augment_batch(batch)

    def augment_batch(self, batch: Any) -> tuple[Any, ...]:
        """``(views, labels)`` from a training batch of the ``batched_augmentation`` loader
        (``(views, labels, indices)`` with :meth:`delivers_sample_indices`).

        Examples:
            >>> from lightning_ssl.data import CIFAR10DataModule
            >>> dm = CIFAR10DataModule("data/cifar10-jpeg", batched_augmentation=True)
            >>> images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
            >>> views, labels = dm.augment_batch((images, torch.arange(4)))
            >>> [tuple(v.shape) for v in views]
            [(4, 3, 32, 32), (4, 3, 32, 32)]
        """
        if self.batched_transform is None:
            raise RuntimeError("augment_batch needs batched_augmentation=True")
        batch, indices = split_sample_indices(batch, self.delivers_sample_indices())
        device_images = self.device_images if self.images_on_device else None
        images, sizes, labels = unpack_training_batch(batch, device_images)
        transform = self.batched_transform.to(images.device)
        return transform(images, sizes, self._augment_generator(images.device)), labels, *indices

    def _augment_generator(self, device: torch.device) -> torch.Generator | None:
        """A generator seeded by (seed, rank, batch number) during training, else ``None``."""
        trainer = self.trainer
        if trainer is None:
            return None
        progress = trainer.fit_loop.epoch_loop.batch_progress.total
        return seeded_generator((self.hparams["seed"], trainer.global_rank, progress.ready), device)

    def val_dataloader(self) -> DataLoader:
        """Batches ``(images, labels)`` of the evaluation split, in order."""
        return self._loader(self.dataset("val"), self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        """The same batches as :meth:`val_dataloader`."""
        return self.val_dataloader()

    def train_eval_dataloader(self) -> DataLoader:
        """The training split with the evaluation transform, in order, every image kept."""
        return self._loader(self.dataset("train_eval"), self.eval_batch_size, train=False)


class InMemoryDataModule(SSLDataModule):
    """A datamodule whose splits are ``uint8`` tensors in memory: implement :meth:`load_split`."""

    eval_resize: ClassVar[bool] = False

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """``uint8`` images ``(N, 3, H, W)`` and labels ``(N,)`` of the train or eval split."""
        raise NotImplementedError

    def build_dataset(self, split: str, transform: Callable | None) -> Dataset:
        train = split != "val"
        key = "train" if train else "val"
        if key not in self._loaded:
            self._loaded[key] = self.load_split(train)
        images, labels = self._loaded[key]
        return TensorImageDataset(images, labels, transform=transform)
