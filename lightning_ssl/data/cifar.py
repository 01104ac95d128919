"""CIFAR-10 and CIFAR-100: torchvision's pickled batches or an ImageFolder tree of JPEGs."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from lightning_ssl.data.datamodule import InMemoryDataModule
from lightning_ssl.data.datasets import DEFAULT_MAX_IMAGE_PIXELS
from lightning_ssl.data.readers import read_cifar, read_image_folder, require_dir
from lightning_ssl.data.transforms import CIFAR100_MEAN, CIFAR100_STD, CIFAR_MEAN, CIFAR_STD


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
        max_image_pixels: Refuse (naming the file) a JPEG with more pixels, read from its
            header before decoding; ``None``: no limit.
        **kwargs: The arguments of :class:`SSLDataModule`.

    Examples:
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
        self,
        data_dir: str,
        download: bool = False,
        cache_dir: str | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir, **kwargs)
        self.download, self.cache_dir = download, cache_dir
        self.max_image_pixels = max_image_pixels

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
        images, labels, classes = read_image_folder(root, self.cache_dir, self.max_image_pixels)
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
