"""Fashion-MNIST: the four IDX files, grey replicated to three channels."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from lightning_ssl.data.datamodule import InMemoryDataModule
from lightning_ssl.data.readers import read_fashion_mnist, require_dir
from lightning_ssl.data.transforms import FASHION_MNIST_MEAN, FASHION_MNIST_STD


class FashionMNISTDataModule(InMemoryDataModule):
    """Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 28x28 grey images, 10 classes.

    Reads the IDX files (``train-images-idx3-ubyte.gz`` ...; compressed or not) from
    ``data_dir`` or from torchvision's ``data_dir/FashionMNIST/raw/``, e.g. Debian's
    ``/usr/share/datasets/fashion-mnist``. Grey is replicated to 3 channels.

    Args:
        data_dir: Folder holding the four IDX files.
        download: Download them with torchvision into ``data_dir/FashionMNIST/raw``.
        **kwargs: The arguments of :class:`SSLDataModule`.

    Examples:
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
