"""STL-10: memory-mapped binary files; pretraining adds the 100,000 unlabelled images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from lightning_ssl.data.datamodule import InMemoryDataModule
from lightning_ssl.data.datasets import TensorImageDataset
from lightning_ssl.data.readers import read_stl10, require_dir, stl10_folder
from lightning_ssl.data.transforms import STL10_MEAN, STL10_STD


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
        images, labels = self._loaded["unlabeled"]
        unlabeled = TensorImageDataset(images, labels, transform=transform)
        return ConcatDataset([labelled, unlabeled])
