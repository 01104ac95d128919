"""LightningDataModules for self-supervised pretraining and its online/offline evaluation.

Every datamodule yields

* ``train_dataloader()``: ``(views, labels)`` with ``views`` a list of ``(B, C, H, W)`` tensors,
  global crops first (shuffled, last partial batch dropped); with ``batched_augmentation=True``
  the loader yields ``uint8`` images and the views are made on the training device by
  :meth:`SSLDataModule.on_after_batch_transfer`, so the training step sees the same batches;
* ``val_dataloader()`` / ``test_dataloader()``: ``(images, labels)`` of the evaluation split
  under the deterministic evaluation transform;
* ``train_eval_dataloader()``: the training split under the evaluation transform, in order
  (the feature bank of the kNN monitor and the data of offline linear evaluation).

The properties the CLI links into the model (``num_classes``, ``image_size``,
``num_global_crops``, ``num_local_crops``, ``views``, ``mean``, ``std``) are known right after
``__init__`` without reading any data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    DistributedSampler,
    Sampler,
    Subset,
    TensorDataset,
)

from lightning_ssl.data.batched import BatchedMultiCrop
from lightning_ssl.data.datasets import (
    ImageFolderDataset,
    TensorImageDataset,
    pad_collate,
    scan_image_folder,
)
from lightning_ssl.data.readers import (
    read_cifar,
    read_fashion_mnist,
    read_image_folder,
    read_stl10,
    require_dir,
    stl10_folder,
)
from lightning_ssl.data.transforms import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    CIFAR_MEAN,
    CIFAR_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    STL10_MEAN,
    STL10_STD,
    MultiCropTransform,
    ViewGroup,
    eval_transform,
    preset,
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
        augmentation: Preset of :func:`~lightning_ssl.data.transforms.preset`: ``simclr``,
            ``moco``, ``byol``, ``dino``, ``swav`` or ``none``.
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
    """

    default_image_size: ClassVar[int] = 224
    default_mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    default_std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    eval_resize: ClassVar[bool] = True
    fixed_num_classes: ClassVar[int | None] = None

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
    ) -> None:
        super().__init__()
        if images_on_device and not batched_augmentation:
            raise ValueError(
                "images_on_device=True needs batched_augmentation=True: the images held on the "
                "device are augmented there, the loader only yields their indices"
            )
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("num_local_crops", num_local_crops, 0),
            ("eval_batch_size", eval_batch_size, 1),
            ("train_subset", train_subset, 1),
            ("val_subset", val_subset, 1),
        ):
            if value is not None and value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        self._views = self._resolve_views(
            augmentation, image_size, num_local_crops, local_size, views
        )
        self.save_hyperparameters()
        # Resolved values, as Lightning merges these hparams with the model's (linked) ones;
        # views as plain dicts keep hparams.yaml readable and checkpoints free of custom classes.
        image_size = self._views[0].size
        resolved = {
            "image_size": image_size,
            "num_local_crops": self.num_local_crops,
            "views": None if views is None else [asdict(v) for v in self._views],
        }
        self.hparams.update(resolved)
        self._hparams_initial.update(resolved)
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.eval_batch_size = eval_batch_size or batch_size
        self._image_size = image_size
        self._datasets: dict[str, Dataset] = {}
        self._loaded: dict[str, Any] = {}  # arrays / folder scans shared by the splits
        self.batched_augmentation, self.images_on_device = batched_augmentation, images_on_device
        # The CPU path transforms each training image in the loader; the batched path leaves
        # the uint8 images to BatchedMultiCrop after the transfer to the training device.
        self.train_transform: Callable | None = MultiCropTransform(self._views, self.mean, self.std)
        self.batched_transform: BatchedMultiCrop | None = None
        if batched_augmentation:
            self.train_transform = None
            self.batched_transform = BatchedMultiCrop(self._views, self.mean, self.std)
        self._device_images: Tensor | None = None  # images_on_device: the training images
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
            limit = self.hparams.val_subset if split == "val" else self.hparams.train_subset
            self._datasets[split] = self._subset(dataset, limit)
        return self._datasets[split]

    def _subset(self, dataset: Dataset, limit: int | None) -> Dataset:
        size = len(dataset)  # type: ignore[arg-type]
        if limit is None or limit >= size:
            return dataset
        generator = torch.Generator().manual_seed(self.hparams.seed)
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
        return DataLoader(
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
        dataset = self.dataset("train")
        if self.images_on_device:
            dataset = TensorDataset(*self._device_indices_and_labels(dataset))
        size = len(dataset)  # type: ignore[arg-type]
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        if self.batch_size * world > size:
            processes = f" x {world} processes" if world > 1 else ""
            raise ValueError(
                f"batch_size={self.batch_size}{processes} is larger than the {size} training "
                "images: with drop_last=True no batch would be produced; lower batch_size "
                "or raise train_subset"
            )
        # The order is a function of (seed, epoch) only (Lightning calls set_epoch, and leaves a
        # DistributedSampler in place under DDP), and the loader's position is in checkpoints:
        # a run resumed mid-epoch sees exactly the batches it had not seen.
        sampler = ResumableSampler(
            dataset,
            num_replicas=world,
            rank=rank,
            shuffle=True,
            seed=self.hparams.seed,
            drop_last=True,
            position=self._training_position,
        )
        if self.images_on_device:  # indices and labels: cheaper to batch in this process
            return self._loader(dataset, self.batch_size, True, sampler, num_workers=0)
        collate = self.train_collate_fn if self.batched_augmentation else None
        return self._loader(dataset, self.batch_size, True, sampler, collate_fn=collate)

    def _training_position(self) -> tuple[int, int, int] | None:
        """``(epoch, start, stop)`` of the next training batch, from the trainer's count of
        processed batches (restored from checkpoints), in this process's samples."""
        trainer = self.trainer
        if trainer is None:
            return None
        loader_batches = len(self.dataset("train")) // (self.batch_size * trainer.world_size)
        limit = trainer.limit_train_batches
        per_epoch = (
            min(loader_batches, limit)
            if isinstance(limit, int)
            else int(loader_batches * (limit or 1.0))
        )
        processed = trainer.fit_loop.epoch_loop.batch_progress.total.processed
        epoch, offset = divmod(processed, max(1, per_epoch))
        return epoch, offset * self.batch_size, per_epoch * self.batch_size

    #: Collation of the training batches under ``batched_augmentation`` (default: stacking).
    train_collate_fn: ClassVar[Callable | None] = None

    # -- batched augmentation ----------------------------------------------------------------
    def _device_indices_and_labels(self, dataset: Dataset) -> tuple[Tensor, Tensor]:
        """Positions ``0..N-1`` into :meth:`device_images` and the training labels."""
        labels = torch.cat([part.labels[index] for part, index in _tensor_parts(dataset)])
        return torch.arange(len(labels)), labels

    def device_images(self, device: torch.device) -> Tensor:
        """The ``uint8`` training images (in training-set order) on ``device``, copied once.

        The copy is built chunk by chunk, so memory-mapped data (STL-10) is never held twice in
        host memory.
        """
        if self._device_images is None or self._device_images.device != device:
            parts = _tensor_parts(self.dataset("train"))
            count = sum(len(index) for _, index in parts)
            shape = parts[0][0].images.shape[1:]
            images = torch.empty((count, *shape), dtype=torch.uint8, device=device)
            start = 0
            for part, index in parts:
                for chunk in index.split(4096):
                    images[start : start + len(chunk)] = part.images[chunk].to(device)
                    start += len(chunk)
            self._device_images = images
        return self._device_images

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches under ``batched_augmentation``: the views, made on the device.

        Lightning calls this DataModule hook (instead of the LightningModule's) once the batch
        is on the training device. Validation, test and kNN batches pass untouched.
        """
        if self.batched_transform is None or self.trainer is None or not self.trainer.training:
            return batch
        return self.augment_batch(batch)

    def augment_batch(self, batch: Any) -> tuple[list[Tensor], Tensor]:
        """``(views, labels)`` from a training batch of the ``batched_augmentation`` loader.

        Example:
            >>> dm = CIFAR10DataModule("data/cifar10-jpeg", batched_augmentation=True)
            >>> images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
            >>> views, labels = dm.augment_batch((images, torch.arange(4)))
            >>> [tuple(v.shape) for v in views]
            [(4, 3, 32, 32), (4, 3, 32, 32)]
        """
        if self.batched_transform is None:
            raise RuntimeError("augment_batch needs batched_augmentation=True")
        sizes = None
        if self.images_on_device:
            indices, labels = batch
            images = self.device_images(indices.device)[indices]
        elif len(batch) == 3:
            images, sizes, labels = batch
        else:
            images, labels = batch
        transform = self.batched_transform.to(images.device)
        return transform(images, sizes, self._augment_generator(images.device)), labels

    def _augment_generator(self, device: torch.device) -> torch.Generator | None:
        """A generator seeded by (seed, rank, batch number) during training, else ``None``.

        Every process draws different parameters (the global RNG is seeded alike on all
        ranks), and a resumed run, whose loop restores the batch count, draws the same ones.
        """
        trainer = self.trainer
        if trainer is None:
            return None
        progress = trainer.fit_loop.epoch_loop.batch_progress.total
        key = (self.hparams.seed, trainer.global_rank, progress.ready)
        seed = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little")
        return torch.Generator(device).manual_seed(seed >> 1)

    def val_dataloader(self) -> DataLoader:
        """Batches ``(images, labels)`` of the evaluation split, in order."""
        return self._loader(self.dataset("val"), self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        """The same batches as :meth:`val_dataloader`."""
        return self.val_dataloader()

    def train_eval_dataloader(self) -> DataLoader:
        """The training split with the evaluation transform, in order, every image kept."""
        return self._loader(self.dataset("train_eval"), self.eval_batch_size, train=False)


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` whose position is read from the training progress.

    ``position()`` returns ``(epoch, start, stop)``: the epoch whose permutation to use and the
    slice of this process's samples still to draw (or ``None`` to behave as a plain sampler).
    With the trainer's count of processed batches as the source, the batch at global index
    ``g`` is always the same one, so a run resumed from any checkpoint (mid-epoch included)
    trains on exactly the batches the uninterrupted run would have. Lightning alone restarts a
    plain loader at the beginning of its epoch (some images twice, others never), and with
    worker processes builds the iterator before calling ``set_epoch``.

    Example:
        >>> sampler = ResumableSampler(range(8), num_replicas=1, rank=0, shuffle=False,
        ...                            position=lambda: (0, 6, 8))
        >>> list(sampler)
        [6, 7]
    """

    def __init__(
        self,
        *args: Any,
        position: Callable[[], tuple[int, int, int] | None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def __iter__(self) -> Iterator[int]:
        where = self.position()
        if where is None:
            return super().__iter__()
        epoch, start, stop = where
        self.set_epoch(epoch)
        return iter(list(super().__iter__())[start:stop])


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
        return TensorImageDataset(*self._loaded[key], transform=transform)


class CIFAR10DataModule(InMemoryDataModule):
    """CIFAR-10 (Krizhevsky, 2009): 50,000 training and 10,000 test 32x32 images, 10 classes.

    ``data_dir`` holds either torchvision's ``cifar-10-batches-py/`` or an ImageFolder tree with
    ``train/`` and ``test/`` sub-folders (detected automatically). A JPEG tree is decoded once
    and cached as tensors outside ``data_dir`` (see
    :func:`~lightning_ssl.data.readers.read_image_folder`).

    Args:
        data_dir: Folder with ``cifar-10-batches-py/`` or ``train/`` + ``test/`` image folders.
        download: Download torchvision's pickled copy into ``data_dir`` if missing.
        cache_dir: Where decoded JPEG trees are cached (default ``$LIGHTNING_SSL_CACHE`` or
            ``~/.cache/lightning_ssl``).
        **kwargs: The arguments of :class:`SSLDataModule`.

    Example:
        >>> dm = CIFAR10DataModule("data/cifar10-jpeg", batch_size=256, augmentation="simclr")
        >>> dm.num_classes, dm.image_size, dm.num_global_crops
        (10, 32, 2)
    """

    default_image_size: ClassVar[int] = 32
    default_mean: ClassVar[tuple[float, float, float]] = CIFAR_MEAN
    default_std: ClassVar[tuple[float, float, float]] = CIFAR_STD
    fixed_num_classes: ClassVar[int | None] = 10
    pickle_folder: ClassVar[str] = "cifar-10-batches-py"

    def __init__(
        self, data_dir: str, download: bool = False, cache_dir: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(data_dir, **kwargs)
        self.download, self.cache_dir = download, cache_dir

    def _is_pickled(self) -> bool:
        if self.download or (self.data_dir / self.pickle_folder).is_dir():
            return True
        how = (
            f"expected torchvision's {self.pickle_folder}/ in it (pass download=True) or an "
            "ImageFolder tree with train/ and test/ sub-folders"
        )
        require_dir(self.data_dir, "CIFAR data_dir", how)
        require_dir(self.data_dir / "train", "CIFAR training folder", how)
        return False

    def prepare_data(self) -> None:
        """Download (``download=True``) or decode the JPEG tree into the cache, on rank 0."""
        for train in (True, False):
            self.load_split(train)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        if self._is_pickled():
            return read_cifar(self.data_dir, train, self.num_classes, self.download)
        name = "train" if train else "test"
        if not train and not (self.data_dir / "test").is_dir() and (self.data_dir / "val").is_dir():
            name = "val"
        root = require_dir(self.data_dir / name, "CIFAR image folder", "expected train/ and test/")
        images, labels, classes = read_image_folder(root, self.cache_dir)
        if len(classes) != self.num_classes:
            raise ValueError(
                f"{root} has {len(classes)} class folders, expected {self.num_classes}"
            )
        return images, labels


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100: 50,000 training and 10,000 test 32x32 images in 100 classes.

    ``data_dir`` holds torchvision's ``cifar-100-python/`` or ``train/`` + ``test/`` image
    folders; the arguments are those of :class:`CIFAR10DataModule`.
    """

    default_mean: ClassVar[tuple[float, float, float]] = CIFAR100_MEAN
    default_std: ClassVar[tuple[float, float, float]] = CIFAR100_STD
    fixed_num_classes: ClassVar[int | None] = 100
    pickle_folder: ClassVar[str] = "cifar-100-python"


class FashionMNISTDataModule(InMemoryDataModule):
    """Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 28x28 grey images, 10 classes.

    Reads the IDX files (``train-images-idx3-ubyte.gz`` ...; compressed or not) from
    ``data_dir`` or from torchvision's ``data_dir/FashionMNIST/raw/``, e.g. Debian's
    ``/usr/share/datasets/fashion-mnist``. Grey is replicated to 3 channels.

    Args:
        data_dir: Folder holding the four IDX files.
        download: Download them with torchvision into ``data_dir/FashionMNIST/raw``.
        **kwargs: The arguments of :class:`SSLDataModule`.

    Example:
        >>> dm = FashionMNISTDataModule("/usr/share/datasets/fashion-mnist", batch_size=128)
        >>> dm.image_size, dm.mean
        (28, (0.286, 0.286, 0.286))
    """

    default_image_size: ClassVar[int] = 28
    default_mean: ClassVar[tuple[float, float, float]] = FASHION_MNIST_MEAN
    default_std: ClassVar[tuple[float, float, float]] = FASHION_MNIST_STD
    fixed_num_classes: ClassVar[int | None] = 10

    def __init__(self, data_dir: str, download: bool = False, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.download = download

    def prepare_data(self) -> None:
        """Download the IDX files with torchvision when ``download=True``."""
        if self.download:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(self.data_dir), download=True)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        how = "expected the four Fashion-MNIST IDX files in it (or pass download=True)"
        return read_fashion_mnist(require_dir(self.data_dir, "Fashion-MNIST data_dir", how), train)


class STL10DataModule(InMemoryDataModule):
    """STL-10 (Coates et al., 2011): 5,000 labelled + 100,000 unlabelled 96x96 training images.

    Pretraining uses ``train+unlabeled`` (unlabelled images have label ``-1``, which the online
    probe callback ignores); evaluation uses ``test`` (8,000) and ``train_eval`` the 5,000
    labelled training images. The binary files are memory-mapped, not read into RAM.

    Args:
        data_dir: Folder holding ``stl10_binary/`` (torchvision's layout) or its ``*.bin`` files.
        download: Download the dataset with torchvision (2.6 GB) if missing.
        unlabeled: Add the 100,000 unlabelled images to the pretraining split.
        **kwargs: The arguments of :class:`SSLDataModule`.
    """

    default_image_size: ClassVar[int] = 96
    default_mean: ClassVar[tuple[float, float, float]] = STL10_MEAN
    default_std: ClassVar[tuple[float, float, float]] = STL10_STD
    fixed_num_classes: ClassVar[int | None] = 10

    def __init__(
        self, data_dir: str, download: bool = False, unlabeled: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(data_dir, **kwargs)
        self.download, self.unlabeled = download, unlabeled

    def prepare_data(self) -> None:
        """Download with torchvision when ``download=True``, else check the files exist."""
        if self.download:
            from torchvision.datasets import STL10

            STL10(str(self.data_dir), split="test", download=True)
        how = "pass download=True to fetch STL-10 with torchvision"
        stl10_folder(require_dir(self.data_dir, "STL-10 data_dir", how))

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        return read_stl10(self.data_dir, "train" if train else "test")

    def build_dataset(self, split: str, transform: Callable | None) -> Dataset:
        labelled = super().build_dataset(split, transform)
        if split != "train" or not self.unlabeled:
            return labelled
        if "unlabeled" not in self._loaded:
            self._loaded["unlabeled"] = read_stl10(self.data_dir, "unlabeled")
        unlabeled = TensorImageDataset(*self._loaded["unlabeled"], transform=transform)
        return ConcatDataset([labelled, unlabeled])


class ImageFolderDataModule(SSLDataModule):
    """Any ImageFolder tree with training and validation folders (ImageNet, Imagewoof ...).

    Images are decoded lazily with PIL in the loader workers (any mode converted to RGB);
    evaluation resizes the short side to ``image_size / 0.875`` and centre-crops. The class count
    comes from the listing of ``train_dir`` (cheap; no image is read) unless given.

    Args:
        data_dir: Folder holding ``train_dir`` and ``val_dir``.
        train_dir: Training ImageFolder tree, relative to ``data_dir``.
        val_dir: Validation ImageFolder tree, relative to ``data_dir``.
        num_classes: Number of classes (default: the class folders of ``train_dir``).
        **kwargs: The arguments of :class:`SSLDataModule`.

    Example:
        >>> dm = ImageFolderDataModule("imagewoof2-160", augmentation="dino", num_local_crops=8)
        >>> dm.num_classes, [v.size for v in dm.views]  # doctest: +SKIP
        (10, [224, 224, 96])
    """

    def __init__(
        self,
        data_dir: str,
        train_dir: str = "train",
        val_dir: str = "val",
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("images_on_device"):
            raise ValueError(
                "images_on_device=True needs an in-memory dataset (CIFAR, STL-10, "
                "Fashion-MNIST); an ImageFolder is decoded per image in the loader workers"
            )
        super().__init__(data_dir, **kwargs)
        self.train_dir, self.val_dir, self._num_classes = train_dir, val_dir, num_classes
        # The count read from the folders, as Lightning merges these hparams with the model's.
        self.hparams["num_classes"] = self._hparams_initial["num_classes"] = self.num_classes

    def _folder(self, name: str, what: str) -> Path:
        how = "expected an ImageFolder tree <data_dir>/<split>/<class>/<image>"
        require_dir(self.data_dir, "ImageFolder data_dir", how)
        return require_dir(self.data_dir / name, what, how)

    @property
    def num_classes(self) -> int:
        """``num_classes`` if given, else the number of class folders of ``train_dir``."""
        if self._num_classes is None:
            root = self._folder(self.train_dir, "training folder")
            self._num_classes = sum(
                1 for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
        return self._num_classes

    #: Images of different sizes: zero-padded to the batch's largest, with their sizes.
    train_collate_fn: ClassVar[Callable | None] = staticmethod(pad_collate)

    def build_dataset(self, split: str, transform: Callable | None) -> Dataset:
        name = self.val_dir if split == "val" else self.train_dir
        if name not in self._loaded:
            root = self._folder(name, "validation folder" if split == "val" else "training folder")
            self._loaded[name] = scan_image_folder(root)
        # Batched augmentation: uint8 tensors decoded by torchvision.io in the loader workers.
        as_tensor = split == "train" and self.batched_augmentation
        return ImageFolderDataset(
            self.data_dir / name, transform, samples=self._loaded[name], as_tensor=as_tensor
        )


def _tensor_parts(dataset: Dataset) -> list[tuple[TensorImageDataset, Tensor]]:
    """The in-memory datasets behind ``dataset`` and the indices of its items in each.

    Items come part by part (a subset mixing STL-10's labelled and unlabelled images is
    grouped by part; the sampler shuffles anyway, and indices and labels are listed alike).
    Handles :class:`TensorImageDataset`, :class:`~torch.utils.data.Subset` (``train_subset``)
    and :class:`~torch.utils.data.ConcatDataset` (STL-10's train + unlabeled).
    """
    if isinstance(dataset, TensorImageDataset):
        return [(dataset, torch.arange(len(dataset)))]
    if isinstance(dataset, ConcatDataset):
        return [part for inner in dataset.datasets for part in _tensor_parts(inner)]
    if isinstance(dataset, Subset):
        inner = _tensor_parts(dataset.dataset)
        wanted = torch.as_tensor(dataset.indices, dtype=torch.int64)
        # Subset indices address the concatenation of the inner parts.
        offsets = torch.tensor([0] + [len(index) for _, index in inner]).cumsum(0)
        part_of = torch.searchsorted(offsets[1:], wanted, right=True)
        parts = []
        for number, (part, index) in enumerate(inner):
            mask = part_of == number
            if mask.any():
                parts.append((part, index[wanted[mask] - offsets[number]]))
        return parts
    raise TypeError(
        f"images_on_device needs in-memory (TensorImageDataset) training data, got "
        f"{type(dataset).__name__}"
    )
