"""Map-style datasets: uint8 tensors held in memory, and lazily decoded image folders.

Both return ``(transform(image), label)``; without a transform the image is returned as is
(a ``uint8`` ``(3, H, W)`` tensor, or an RGB PIL image, or a ``uint8`` tensor with
``as_tensor=True``). :func:`pad_collate` batches images of different sizes for the batched
augmentation.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import resize

#: File endings read as images (those of ``torchvision.datasets.ImageFolder``), case-insensitive.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB.

    16-bit and 32-bit integer grey images (``I;16``, ``I``) are scaled to 8 bits instead of
    clipped (``I`` values above 255 are read as 16-bit); palette images with transparency go
    through RGBA; alpha is dropped as ``torchvision.datasets.ImageFolder`` does.

    Examples:
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


#: Default pixel limit of one image: PIL's decompression-bomb threshold (``Image.MAX_IMAGE_PIXELS``,
#: 89,478,485 pixels, about 9,459 squared), applied on every decode path (PIL and torchvision).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485

#: Default longest side of a decoded image: larger images are shrunk at load (aspect kept), so
#: that a padded batch of the batched augmentation holds at most ``B * 3 * 2048**2`` bytes.
DEFAULT_MAX_IMAGE_SIDE = 2048


class ImageTooLargeError(ValueError):
    """An image file has more pixels than ``max_image_pixels`` allows."""


def display_path(path: str | Path) -> str:
    """``path`` printable anywhere: bytes that are not UTF-8 (a file name from another system)
    shown as ``\\xff`` escapes instead of failing to encode.

    Examples:
        >>> display_path(os.fsdecode(b"cat_\\xff.png"))
        'cat_\\\\xff.png'
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_pixels(path: str | Path, width: int, height: int, max_pixels: int | None) -> None:
    """Raise :class:`ImageTooLargeError` naming the file and the setting when ``width * height``
    is over ``max_pixels`` (``None``: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"image file {display_path(path)} is {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,} (max_image_pixels, PIL's decompression-bomb "
            "default): a decompression bomb or a mistake. Remove the file, or raise "
            "max_image_pixels if you trust it"
        )


def shrunk_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """``(height, width)`` scaled so that the longest side is at most ``max_side``.

    Examples:
        >>> shrunk_size(8000, 6000, 2048)
        (2048, 1536)
    """
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def header_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header (nothing decoded), or ``None`` when PIL does
    not know the format."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except Image.DecompressionBombError as err:  # over 2x PIL's own limit: read the size
        numbers = [int(n) for n in re.findall(r"\d+", str(err))]
        return (numbers[0], 1) if numbers else (2**31, 1)
    except Exception:
        return None


def load_image(
    path: str | Path,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    max_side: int | None = DEFAULT_MAX_IMAGE_SIDE,
) -> Image.Image:
    """Open and fully decode an image file as RGB, checking its size before decoding.

    Args:
        path: The image file.
        max_pixels: Refuse images with more pixels (``None``: no limit).
        max_side: Shrink images whose longest side is larger (``None``: keep the size).

    Raises:
        ImageTooLargeError: More than ``max_pixels`` pixels; the message names the file.
        RuntimeError: The file is missing, truncated or not an image; the message names it.
    """
    try:
        with warnings.catch_warnings():
            # max_pixels is the limit here; PIL's own (a warning, an error at twice) steps aside.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
                check_pixels(path, width, height, max_pixels)
                opened.load()
                image = pil_to_rgb(opened)
    except ImageTooLargeError:
        raise
    except Image.DecompressionBombError:
        check_pixels(path, *(header_size(path) or (2**31, 1)), max_pixels)
        raise
    except Exception as err:
        raise RuntimeError(
            f"cannot read image file {display_path(path)}: {type(err).__name__}: {err}"
        ) from err
    height, width = shrunk_size(image.height, image.width, max_side)
    if (height, width) != (image.height, image.width):
        image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    return image


def load_image_tensor(
    path: str | Path,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    max_side: int | None = DEFAULT_MAX_IMAGE_SIDE,
) -> Tensor:
    """Decode an image file to a ``uint8`` RGB ``(3, H, W)`` tensor, checking its size first.

    ``torchvision.io.decode_image`` (libjpeg-turbo/libpng, no PIL image in between) reads the
    usual formats; files it cannot read (CMYK JPEGs, TIFF, 16-bit modes ...) go through
    :func:`load_image`, which also names the file when it is corrupt. The pixel count is read
    from the header before anything is decoded; images with a side over ``max_side`` are shrunk
    (antialiased bilinear), which bounds the padded batches of the batched augmentation.

    Raises:
        ImageTooLargeError: More than ``max_pixels`` pixels; the message names the file.
        RuntimeError: The file is missing, truncated or not an image; the message names it.

    Examples:
        >>> load_image_tensor("cat.jpg").shape  # doctest: +SKIP
        torch.Size([3, 375, 500])
    """
    size = header_size(path)
    if size is not None:
        check_pixels(path, *size, max_pixels)
    try:
        with open(path, "rb") as file:  # not torchvision's read_file: it needs UTF-8 names
            data = torch.frombuffer(bytearray(file.read()), dtype=torch.uint8)
        image = decode_image(data, mode=ImageReadMode.RGB)
    except Exception:
        image = torch.from_numpy(np.array(load_image(path, max_pixels, None))).permute(2, 0, 1)
    check_pixels(path, image.shape[-1], image.shape[-2], max_pixels)
    height, width = shrunk_size(image.shape[-2], image.shape[-1], max_side)
    if (height, width) != tuple(image.shape[-2:]):
        image = resize(image, [height, width], antialias=True)
    return image.contiguous()


def pad_collate(batch: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Collate ``uint8`` ``(3, H, W)`` images of different sizes by zero-padding.

    Images are placed top-left in a ``(B, 3, H_max, W_max)`` batch; ``sizes`` holds each
    image's valid ``(height, width)``, so that crops can be drawn inside it
    (:class:`~lightning_ssl.data.batched.BatchedMultiCrop`).

    Returns:
        ``(images, sizes, labels)`` with ``sizes`` and ``labels`` ``int64``.

    Examples:
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
    order, so labels and sample order match torchvision's ``ImageFolder``. Symbolic links to
    folders are followed, each real folder once: a link back to a folder above it (a loop,
    which ``os.walk`` would follow until the path is too long) is an error, a second link to a
    folder already listed is skipped with a warning. Both name the link.

    Returns:
        The class names and the ``(path, label)`` samples.

    Raises:
        FileNotFoundError: ``root`` has no class folder, or a class folder holds no image.
        ValueError: A symbolic link loops back to a folder above it.
    """
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise FileNotFoundError(
            f"no class folders in {display_path(root)}: expected an ImageFolder tree "
            f"{display_path(root)}/<class>/<image>"
        )
    samples: list[tuple[str, int]] = []
    seen: dict[str, str] = {}  # real path of every folder listed -> the path it was listed as
    for label, name in enumerate(classes):
        start = len(samples)
        for folder, files in sorted(_walk_once(os.path.join(root, name), seen)):
            samples += [
                (os.path.join(folder, f), label)
                for f in sorted(files)
                if f.lower().endswith(IMG_EXTENSIONS)
            ]
        if len(samples) == start:
            raise FileNotFoundError(
                f"class folder {display_path(root / name)} is empty: it holds no image file "
                f"({', '.join(IMG_EXTENSIONS)}); remove it or add its images"
            )
    return classes, samples


def _walk_once(top: str, seen: dict[str, str]) -> list[tuple[str, list[str]]]:
    """``(folder, files)`` under ``top``, following links, each real folder once (see
    :func:`scan_image_folder`); ``seen`` carries the real folders across class folders."""
    found = []
    for folder, dirs, files in os.walk(top, followlinks=True, onerror=_raise):
        dirs.sort()  # the first of two links to one folder is the one listed: sorted order
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            parent = os.path.realpath(os.path.dirname(folder))
            if parent == real or parent.startswith(real + os.sep):
                raise ValueError(
                    f"symbolic link loop in the image folder: {display_path(folder)} points "
                    f"back to {display_path(seen[real])}, a folder above it; remove the link"
                )
            warnings.warn(
                f"skipping {display_path(folder)}: it links to {display_path(seen[real])}, "
                "which is already listed (its images would count twice)",
                stacklevel=3,
            )
            continue
        seen[real] = folder
        found.append((folder, files))
    return found


def _raise(error: OSError) -> None:
    raise error  # os.walk hides unreadable folders by default: name them instead


class TensorImageDataset(Dataset):
    """Images held in memory as one ``uint8`` ``(N, 3, H, W)`` tensor, with their labels.

    Args:
        images: ``uint8`` tensor of shape ``(N, 3, H, W)``.
        labels: Integer labels of shape ``(N,)`` (``-1`` for unlabelled images).
        transform: Called on each ``uint8`` ``(3, H, W)`` image.

    Examples:
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
        max_image_pixels: Refuse an image with more pixels, naming the file (``None``: no
            limit; default PIL's decompression-bomb threshold).
        max_image_side: Shrink images whose longest side is larger at load (``None``: never),
            which bounds a padded batch to ``B * 3 * max_image_side**2`` bytes.

    Examples:
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
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_side: int | None = DEFAULT_MAX_IMAGE_SIDE,
    ):
        limits = {"max_image_pixels": max_image_pixels, "max_image_side": max_image_side}
        for name, value in limits.items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        self.root = Path(root)
        self.classes, self.samples = samples or scan_image_folder(self.root)
        self.transform, self.as_tensor = transform, as_tensor
        self.max_image_pixels, self.max_image_side = max_image_pixels, max_image_side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        load = load_image_tensor if self.as_tensor else load_image
        image = load(path, self.max_image_pixels, self.max_image_side)
        return (self.transform(image) if self.transform else image), label
