"""Data: multi-crop view presets, evaluation transforms and LightningDataModules.

Examples:
    >>> from lightning_ssl.data import CIFAR10DataModule
    >>> dm = CIFAR10DataModule("data/cifar10-jpeg", augmentation="byol", batch_size=512)
    >>> dm.num_global_crops, dm.views[1].solarize_prob
    (2, 0.2)

``batched_augmentation=True`` makes the training views on the training device instead
(:class:`~lightning_ssl.data.batched.BatchedMultiCrop`, the same view groups).
"""

from lightning_ssl.data.batched import BatchedMultiCrop
from lightning_ssl.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_ssl.data.datamodule import SSLDataModule
from lightning_ssl.data.fashion_mnist import FashionMNISTDataModule
from lightning_ssl.data.image_folder import ImageFolderDataModule
from lightning_ssl.data.image_text import ImageTextDataModule
from lightning_ssl.data.presets import preset
from lightning_ssl.data.stl10 import STL10DataModule
from lightning_ssl.data.transforms import MultiCropTransform, ViewGroup, eval_transform

__all__ = [
    "BatchedMultiCrop",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "ImageTextDataModule",
    "MultiCropTransform",
    "SSLDataModule",
    "STL10DataModule",
    "ViewGroup",
    "eval_transform",
    "preset",
]
