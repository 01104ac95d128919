"""Any ImageFolder tree (ImageNet, Imagewoof ...), decoded lazily in the loader workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from torch.utils.data import Dataset

from lightning_ssl.data.datamodule import SSLDataModule
from lightning_ssl.data.datasets import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_IMAGE_SIDE,
    ImageFolderDataset,
    scan_image_folder,
)
from lightning_ssl.data.encoded import EncodedImageFolderDataset, collate_images
from lightning_ssl.data.readers import require_dir


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
        max_image_pixels: Refuse (naming the file) an image with more pixels, read from its
            header before decoding (PIL's ``MAX_IMAGE_PIXELS`` by default); ``None``: no limit.
        max_image_side: Shrink larger images at load so their longer side is this (bounds the
            padded batches of ``batched_augmentation``); ``None``: keep every size.
        decode_on_device: With ``batched_augmentation``, the loader workers send the training
            JPEGs' bytes and the training device decodes each batch at once
            (``torchvision.io.decode_jpeg``, nvjpeg on CUDA; other formats are decoded in the
            workers): see :mod:`lightning_ssl.data.encoded`.
        **kwargs: The arguments of :class:`SSLDataModule`.

    Examples:
        >>> root = "imagewoof2-160"
        >>> dm = ImageFolderDataModule(  # doctest: +SKIP
        ...     root, augmentation="dino", num_local_crops=8
        ... )
        >>> dm.num_classes, [v.size for v in dm.views]  # doctest: +SKIP
        (10, [224, 224, 96])
    """

    def __init__(
        self,
        data_dir: str,
        train_dir: str = "train",
        val_dir: str = "val",
        num_classes: int | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_side: int | None = DEFAULT_MAX_IMAGE_SIDE,
        decode_on_device: bool = False,
        **kwargs: Any,
    ) -> None:
        if decode_on_device and not kwargs.get("batched_augmentation"):
            raise ValueError(
                "decode_on_device=True needs batched_augmentation=True: the images decoded on "
                "the device are augmented there (set both, or neither)"
            )
        if kwargs.get("images_on_device"):
            raise ValueError(
                "images_on_device=True needs an in-memory dataset (CIFAR, STL-10, "
                "Fashion-MNIST); an ImageFolder is decoded per image in the loader workers"
            )
        super().__init__(data_dir, **kwargs)
        self.train_dir, self.val_dir, self._num_classes = train_dir, val_dir, num_classes
        self.max_image_pixels, self.max_image_side = max_image_pixels, max_image_side
        self.decode_on_device = decode_on_device
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

    #: Images of different sizes: zero-padded to the batch's largest, with their sizes (or
    #: JPEG bytes to decode on the device, with ``decode_on_device``).
    train_collate_fn: ClassVar[Callable | None] = staticmethod(collate_images)

    def build_dataset(self, split: str, transform: Callable | None) -> Dataset:
        name = self.val_dir if split == "val" else self.train_dir
        if name not in self._loaded:
            root = self._folder(name, "validation folder" if split == "val" else "training folder")
            self._loaded[name] = scan_image_folder(root)
        # Batched augmentation: uint8 tensors decoded by torchvision.io in the loader workers.
        as_tensor = split == "train" and self.batched_augmentation
        if as_tensor and self.decode_on_device:
            return EncodedImageFolderDataset(
                self.data_dir / name, self._loaded[name], self.max_image_pixels,
                self.max_image_side,
            )  # fmt: skip
        return ImageFolderDataset(
            self.data_dir / name,
            transform,
            samples=self._loaded[name],
            as_tensor=as_tensor,
            max_image_pixels=self.max_image_pixels,
            max_image_side=self.max_image_side,
        )
