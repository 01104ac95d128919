"""Map-style datasets: uint8 tensors held in memory, and lazily decoded image folders.

Both return ``(transform(image), label)``; without a transform the image is returned as is
(a ``uint8`` ``(3, H, W)`` tensor, or an RGB PIL image, or a ``uint8`` tensor with
``as_tensor=True``). :func:`pad_collate` batches images of different sizes for the batched
augmentation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, read_file

#: File endings read as images (those of ``torchvision.datasets.ImageFolder``), case-insensitive.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB.

    16-bit and 32-bit integer grey images (``I;16``, ``I``) are scaled to 8 bits instead of
    clipped (``I`` values above 255 are read as 16-bit); palette images with transparency go
    through RGBA; alpha is dropped as ``torchvision.datasets.ImageFolder`` does.

    Example:
        >>> pil_to_rgb(Image.new("I;16", (4, 4), 65535)).getpixel((0, 0))
        (255, 255, 255)
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode == "I":
        pixels = np.asarray(image).astype(np.int64)
        if image.mode != "I" or pixels.max(initial=0) > 255:
            pixels = np.clip(pixels, 0, 65535) >> 8
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file as RGB.

    Raises:
        RuntimeError: The file is missing, truncated or not an image; the message names it.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return pil_to_rgb(image)
    except Exception as err:
        raise RuntimeError(f"cannot read image file {path}: {type(err).__name__}: {err}") from err


def load_image_tensor(path: str | Path) -> Tensor:
    """Decode an image file to a ``uint8`` RGB ``(3, H, W)`` tensor.

    ``torchvision.io.decode_image`` (libjpeg-turbo/libpng, no PIL image in between) reads the
    usual formats; files it cannot read (CMYK JPEGs, TIFF, 16-bit modes ...) go through
    :func:`load_image`, which also names the file when it is corrupt.

    Raises:
        RuntimeError: The file is missing, truncated or not an image; the message names it.

    Example:
        >>> load_image_tensor("cat.jpg").shape  # doctest: +SKIP
        torch.Size([3, 375, 500])
    """
    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except Exception:
        return torch.from_numpy(np.array(load_image(path))).permute(2, 0, 1).contiguous()


def pad_collate(batch: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Collate ``uint8`` ``(3, H, W)`` images of different sizes by zero-padding.

    Images are placed top-left in a ``(B, 3, H_max, W_max)`` batch; ``sizes`` holds each
    image's valid ``(height, width)``, so that crops can be drawn inside it
    (:class:`~lightning_ssl.data.batched.BatchedMultiCrop`).

    Returns:
        ``(images, sizes, labels)`` with ``sizes`` and ``labels`` ``int64``.

    Example:
        >>> a, b = torch.ones(3, 2, 4, dtype=torch.uint8), torch.ones(3, 3, 2, dtype=torch.uint8)
        >>> images, sizes, labels = pad_collate([(a, 0), (b, 1)])
        >>> tuple(images.shape), sizes.tolist(), int(images[1].sum())
        ((2, 3, 3, 4), [[2, 4], [3, 2]], 18)
    """
    sizes = torch.tensor([tuple(image.shape[-2:]) for image, _ in batch], dtype=torch.int64)
    height, width = sizes.max(dim=0).values.tolist()
    images = torch.zeros((len(batch), 3, height, width), dtype=torch.uint8)
    for index, (image, _) in enumerate(batch):
        images[index, :, : image.shape[-2], : image.shape[-1]] = image
    labels = torch.tensor([int(label) for _, label in batch], dtype=torch.int64)
    return images, sizes, labels


def scan_image_folder(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """List ``root/<class>/**/<image>`` in ``torchvision.datasets.ImageFolder`` order.

    Classes are the sorted sub-folder names (hidden ones skipped); files are walked in sorted
    order, so labels and sample order match torchvision's ``ImageFolder``.

    Returns:
        The class names and the ``(path, label)`` samples.

    Raises:
        FileNotFoundError: ``root`` has no class folder, or a class folder holds no image.
    """
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise FileNotFoundError(
            f"no class folders in {root}: expected an ImageFolder tree {root}/<class>/<image>"
        )
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        start = len(samples)
        for folder, _, files in sorted(os.walk(root / name, followlinks=True)):
            samples += [
                (os.path.join(folder, f), label)
                for f in sorted(files)
                if f.lower().endswith(IMG_EXTENSIONS)
            ]
        if len(samples) == start:
            raise FileNotFoundError(
                f"class folder {root / name} is empty: it holds no image file "
                f"({', '.join(IMG_EXTENSIONS)}); remove it or add its images"
            )
    return classes, samples


class TensorImageDataset(Dataset):
    """Images held in memory as one ``uint8`` ``(N, 3, H, W)`` tensor, with their labels.

    Args:
        images: ``uint8`` tensor of shape ``(N, 3, H, W)``.
        labels: Integer labels of shape ``(N,)`` (``-1`` for unlabelled images).
        transform: Called on each ``uint8`` ``(3, H, W)`` image.

    Example:
        >>> data = TensorImageDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.arange(4))
        >>> image, label = data[1]
        >>> tuple(image.shape), label
        ((3, 8, 8), 1)
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be a uint8 (N, 3, H, W) tensor, got {images.dtype} "
                f"of shape {tuple(images.shape)}"
            )
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index].contiguous()
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class ImageFolderDataset(Dataset):
    """An ImageFolder tree decoded lazily (one file per item, in the loader workers).

    Args:
        root: Folder holding one sub-folder of images per class.
        transform: Called on each RGB PIL image (or ``uint8`` tensor with ``as_tensor``).
        samples: The ``(classes, samples)`` of :func:`scan_image_folder`, to skip the scan.
        as_tensor: Decode to ``uint8`` ``(3, H, W)`` tensors with :func:`load_image_tensor`
            instead of PIL images (the input of the batched augmentation).

    Example:
        >>> data = ImageFolderDataset("imagewoof2-160/train")  # doctest: +SKIP
        >>> len(data), len(data.classes)  # doctest: +SKIP
        (9025, 10)
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        samples: tuple[list[str], list[tuple[str, int]]] | None = None,
        as_tensor: bool = False,
    ):
        self.root = Path(root)
        self.classes, self.samples = samples or scan_image_folder(self.root)
        self.transform, self.as_tensor = transform, as_tensor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = load_image_tensor(path) if self.as_tensor else load_image(path)
        return (self.transform(image) if self.transform else image), label
