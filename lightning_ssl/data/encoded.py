"""JPEG decoding on the training device: workers deliver the files' bytes, the device decodes.

With ``decode_on_device`` (:class:`~lightning_ssl.data.image_folder.ImageFolderDataModule`)
the loader workers only read each file: a baseline or progressive RGB or grey JPEG travels as
its encoded bytes (:class:`EncodedImage`, a tenth of the decoded size), any other file (PNG,
CMYK JPEG, TIFF ...) is decoded in the worker exactly as the CPU path decodes it. On the
training device :func:`decode_batch` decodes all the JPEGs of the batch with one call of
``torchvision.io.decode_jpeg(list, device=...)`` (nvjpeg on CUDA), shrinks images over
``max_image_side`` as the CPU path does and zero-pads the batch with its sizes, the input of
:class:`~lightning_ssl.data.batched.BatchedMultiCrop`.

On a CPU device ``decode_jpeg`` is libjpeg-turbo, the decoder of the CPU path: the images are
bitwise equal. On CUDA, nvjpeg's IDCT and chroma upsampling round differently from
libjpeg-turbo's: pixels differ by a few grey levels (mean absolute difference well under one
level), far below the changes of the colour augmentation that follows.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import resize

from lightning_ssl.data.datasets import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_IMAGE_SIDE,
    ImageFolderDataset,
    check_pixels,
    load_image_tensor,
    pad_collate,
    shrunk_size,
)

#: PIL modes of JPEGs that ``decode_jpeg(..., mode=RGB)`` decodes as the CPU path does.
_DEVICE_MODES = ("RGB", "L")


class EncodedImage:
    """The bytes of one JPEG file as a ``uint8`` 1-D tensor, to decode on the device, and the
    longest side to shrink it to (``None``: keep its size).

    A plain class on purpose: Lightning moves tensors, collections and dataclasses to the
    training device, and ``decode_jpeg`` wants its inputs in host memory.
    """

    __slots__ = ("data", "max_side")

    def __init__(self, data: Tensor, max_side: int | None = None) -> None:
        self.data, self.max_side = data, max_side


class EncodedBatch:
    """A batch of :class:`EncodedImage` bytes or decoded ``uint8`` ``(3, H, W)`` images.

    Lightning leaves it on the host (no ``to`` method, not a collection); :func:`decode_batch`
    turns it into a padded batch on the device.
    """

    __slots__ = ("items",)

    def __init__(self, items: list[EncodedImage | Tensor]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)


def _jpeg_header(path: str | Path) -> tuple[int, int, bool]:
    """``(width, height, device_decodable)`` from the header (nothing decoded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
            return width, height, image.format == "JPEG" and image.mode in _DEVICE_MODES


class EncodedImageFolderDataset(ImageFolderDataset):
    """:class:`ImageFolderDataset` whose JPEGs come as :class:`EncodedImage` bytes.

    Other files, and any file whose header PIL cannot read, are decoded here by
    :func:`~lightning_ssl.data.datasets.load_image_tensor`, as with ``as_tensor``. The pixel
    limit is checked from the header before anything is sent.

    Examples:
        >>> data = EncodedImageFolderDataset("imagewoof2-160/train")  # doctest: +SKIP
        >>> type(data[0][0]).__name__  # doctest: +SKIP
        'EncodedImage'
    """

    def __init__(
        self,
        root: str | Path,
        samples: tuple[list[str], list[tuple[str, int]]] | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_side: int | None = DEFAULT_MAX_IMAGE_SIDE,
    ) -> None:
        super().__init__(
            root, None, samples, True, max_image_pixels=max_image_pixels,
            max_image_side=max_image_side,
        )  # fmt: skip

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        try:
            width, height, on_device = _jpeg_header(path)
        except Exception:  # not an image PIL knows: the CPU path names the file
            on_device = False
        if not on_device:
            return load_image_tensor(path, self.max_image_pixels, self.max_image_side), label
        check_pixels(path, width, height, self.max_image_pixels)
        with open(path, "rb") as file:
            data = torch.frombuffer(bytearray(file.read()), dtype=torch.uint8)
        return EncodedImage(data, self.max_image_side), label


def collate_images(batch: list[tuple[Any, int]]) -> tuple[Any, ...]:
    """``(EncodedBatch, labels)`` when any item is an :class:`EncodedImage`, else
    :func:`~lightning_ssl.data.datasets.pad_collate`'s ``(images, sizes, labels)``.

    Examples:
        >>> image = torch.zeros(3, 2, 2, dtype=torch.uint8)
        >>> encoded, labels = collate_images([(EncodedImage(torch.zeros(4)), 1), (image, 2)])
        >>> len(encoded), labels.tolist()
        (2, [1, 2])
        >>> [tuple(t.shape) for t in collate_images([(image, 1)])]
        [(1, 3, 2, 2), (1, 2), (1,)]
    """
    if not any(isinstance(item, EncodedImage) for item, _ in batch):
        return pad_collate(batch)
    labels = torch.tensor([int(label) for _, label in batch], dtype=torch.int64)
    return EncodedBatch([item for item, _ in batch]), labels


def decode_batch(encoded: EncodedBatch, device: torch.device) -> tuple[Tensor, Tensor]:
    """Decode on ``device`` and zero-pad: ``uint8`` ``(B, 3, H, W)`` images and ``(B, 2)`` sizes.

    All :class:`EncodedImage` items go through one batched ``decode_jpeg`` call; images with
    a side over their ``max_side`` are shrunk with the CPU path's antialiased resize.
    """
    jpegs = [item for item in encoded.items if isinstance(item, EncodedImage)]
    decoded = iter(decode_jpeg([j.data for j in jpegs], mode=ImageReadMode.RGB, device=device))
    images: list[Tensor] = []
    for item in encoded.items:
        if not isinstance(item, EncodedImage):  # decoded in the worker
            images.append(item.to(device))
            continue
        image = next(decoded)
        height, width = shrunk_size(image.shape[-2], image.shape[-1], item.max_side)
        if (height, width) != tuple(image.shape[-2:]):
            image = resize(image, [height, width], antialias=True)
        images.append(image)
    return pad_images(images, device)


def pad_images(images: Sequence[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """:func:`~lightning_ssl.data.datasets.pad_collate` of images already on ``device``."""
    sizes = torch.tensor([tuple(image.shape[-2:]) for image in images], dtype=torch.int64)
    height, width = sizes.max(dim=0).values.tolist()
    out = torch.zeros((len(images), 3, height, width), dtype=torch.uint8, device=device)
    for index, image in enumerate(images):
        out[index, :, : image.shape[-2], : image.shape[-1]] = image
    return out, sizes.to(device)
