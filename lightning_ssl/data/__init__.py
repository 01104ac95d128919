"""Data: multi-crop view presets, evaluation transforms and LightningDataModules.

Example:
    >>> from lightning_ssl.data import CIFAR10DataModule
    >>> dm = CIFAR10DataModule("data/cifar10-jpeg", augmentation="byol", batch_size=512)
    >>> dm.num_global_crops, dm.views[1].solarize_prob
    (2, 0.2)

``batched_augmentation=True`` makes the training views on the training device instead
(:class:`~lightning_ssl.data.batched.BatchedMultiCrop`, the same view groups).
"""

from lightning_ssl.data.batched import BatchedMultiCrop
from lightning_ssl.data.datamodules import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    SSLDataModule,
    STL10DataModule,
)
from lightning_ssl.data.transforms import MultiCropTransform, ViewGroup, eval_transform, preset

__all__ = [
    "BatchedMultiCrop",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MultiCropTransform",
    "SSLDataModule",
    "STL10DataModule",
    "ViewGroup",
    "eval_transform",
    "preset",
]
