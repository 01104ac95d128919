"""Readers that load a whole split as a ``uint8`` ``(N, 3, H, W)`` tensor plus ``(N,)`` labels.

* :func:`read_image_folder` decodes an ImageFolder tree of same-sized images (CIFAR as JPEG)
  once and caches the tensors as a ``.pt`` file outside the data folder.
* :func:`read_cifar` reads torchvision's pickled CIFAR-10/100.
* :func:`read_idx` / :func:`read_fashion_mnist` read the IDX files of (Fashion-)MNIST.
* :func:`read_stl10` reads STL-10's binary files (memory-mapped).

Missing data raises ``FileNotFoundError`` naming the path, what was expected and how to get it.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lightning_ssl.data.datasets import (
    DEFAULT_MAX_IMAGE_PIXELS,
    display_path,
    load_image_tensor,
    scan_image_folder,
)

log = logging.getLogger(__name__)
_CACHE_VERSION = 1


def require_dir(path: Path, what: str, how: str) -> Path:
    """Return ``path`` if it is a folder, else raise a ``FileNotFoundError`` saying how to fix it.

    A ``<path>.zip`` lying next to the missing folder turns the hint into "unzip it".
    """
    if path.is_dir():
        return path
    archive = path.parent / f"{path.name}.zip"
    if archive.is_file():
        how = f"{archive} is not extracted yet: unzip it (cd {path.parent} && unzip {archive.name})"
    raise FileNotFoundError(f"{what} {path} not found; {how}")


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$LIGHTNING_SSL_CACHE``, else ``~/.cache/lightning_ssl``."""
    env = os.environ.get("LIGHTNING_SSL_CACHE")
    return Path(cache_dir or env or Path.home() / ".cache" / "lightning_ssl").expanduser()


def _fingerprint(root: Path, samples: list[tuple[str, int]]) -> str:
    """Hash of the resolved path, the file list with labels, total size and latest mtime."""
    digest = hashlib.sha1(f"v{_CACHE_VERSION}|{root.resolve()}|{len(samples)}".encode())
    size = mtime = 0
    prefix = str(root) + os.sep  # slicing instead of os.path.relpath: 60,000 calls add up
    for path, label in samples:
        stat = os.stat(path)
        size, mtime = size + stat.st_size, max(mtime, stat.st_mtime_ns)
        relative = path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, root)
        digest.update(os.fsencode(relative) + f":{label}\n".encode())  # any file name bytes
    digest.update(f"{size}|{mtime}".encode())
    return digest.hexdigest()[:16]


def _decode(path: str, max_pixels: int | None) -> Tensor:
    """Decode one file to a uint8 RGB (3, H, W) tensor, its size checked before decoding."""
    return load_image_tensor(path, max_pixels, None)


def _decode_all(samples: list[tuple[str, int]], max_pixels: int | None) -> tuple[Tensor, Tensor]:
    first = _decode(samples[0][0], max_pixels)
    images = torch.empty((len(samples), *first.shape), dtype=torch.uint8)
    for index, (path, _) in enumerate(samples):
        image = first if index == 0 else _decode(path, max_pixels)
        if image.shape != first.shape:
            raise ValueError(
                f"{display_path(path)} has shape {tuple(image.shape)} but "
                f"{display_path(samples[0][0])} has {tuple(first.shape)}: an in-memory split "
                "needs images of one size"
            )
        images[index] = image
    return images, torch.tensor([label for _, label in samples], dtype=torch.int64)


def read_image_folder(
    root: Path,
    cache_dir: str | Path | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[Tensor, Tensor, list[str]]:
    """Decode an ImageFolder tree of same-sized images into memory, cached across runs.

    The first call decodes every file (about 7 s for CIFAR-10's 60,000 JPEGs on one core) and
    saves ``imagefolder-<name>-<key>.pt`` in :func:`cache_root`; the key hashes the resolved
    path, file list, total size and latest mtime, so edited data is decoded again. Later calls
    memory-map the cache file (well under a second). Nothing is written into ``root``.

    Args:
        root: ImageFolder tree (``root/<class>/<image>``).
        cache_dir: Cache folder (default :func:`cache_root`).
        max_image_pixels: Refuse an image with more pixels, naming the file (``None``: no
            limit; default PIL's decompression-bomb threshold).

    Returns:
        ``uint8`` images ``(N, 3, H, W)``, ``int64`` labels ``(N,)`` and the class names.
    """
    classes, samples = scan_image_folder(root)
    cache_file = cache_root(cache_dir) / f"imagefolder-{root.name}-{_fingerprint(root, samples)}.pt"
    if cache_file.is_file():
        try:
            data = torch.load(cache_file, mmap=True, weights_only=True)
            return data["images"], data["labels"], data["classes"]
        except Exception as err:  # a broken cache file is rebuilt
            log.warning("ignoring unreadable cache file %s (%s)", cache_file, err)
    start = time.perf_counter()
    images, labels = _decode_all(samples, max_image_pixels)
    log.info("decoded %d images of %s in %.1f s", len(samples), root, time.perf_counter() - start)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"images": images, "labels": labels, "classes": classes}, partial)
        os.replace(partial, cache_file)
    except OSError as err:
        log.warning("could not write the decode cache %s (%s)", cache_file, err)
    return images, labels, classes


def read_cifar(
    root: Path, train: bool, num_classes: int, download: bool = False
) -> tuple[Tensor, Tensor]:
    """Read torchvision's pickled CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 split."""
    from torchvision.datasets import CIFAR10, CIFAR100

    dataset_class = CIFAR10 if num_classes == 10 else CIFAR100
    dataset = dataset_class(str(root), train=train, download=download)
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(dataset.targets, dtype=torch.int64)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or not) of unsigned bytes, as (Fashion-)MNIST ships them."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read()
    zeros, dtype, ndim = data[0:2], data[2], data[3]
    if zeros != b"\x00\x00" or dtype != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {array.size} values, its header says {shape}")
    return array.reshape(shape)


def _find_idx(root: Path, name: str) -> Path:
    candidates = [
        folder / file
        for folder in (root, root / "FashionMNIST" / "raw")
        for file in (name, f"{name}.gz")
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"Fashion-MNIST file {name}(.gz) not found in {root} or {root}/FashionMNIST/raw; "
        "expected the IDX files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (Debian's "
        "dataset-fashion-mnist package, or pass download=True to fetch them with torchvision)"
    )


def read_fashion_mnist(root: Path, train: bool) -> tuple[Tensor, Tensor]:
    """Read a Fashion-MNIST split, grey replicated to ``(N, 3, 28, 28)`` uint8."""
    prefix = "train" if train else "t10k"
    grey = read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte"))
    if len(grey) != len(labels):
        raise ValueError(f"{len(grey)} Fashion-MNIST {prefix} images but {len(labels)} labels")
    images = torch.from_numpy(grey.copy())[:, None].expand(-1, 3, -1, -1).contiguous()
    return images, torch.from_numpy(labels.astype(np.int64))


STL10_SIDE = 96


def stl10_folder(root: Path) -> Path:
    """The folder holding STL-10's ``*.bin`` files: ``root/stl10_binary`` or ``root`` itself."""
    for folder in (root / "stl10_binary", root):
        if (folder / "test_X.bin").is_file():
            return folder
    hint = "pass download=True to fetch it with torchvision (2.6 GB)"
    if (root / "stl10_binary.tar.gz").is_file():
        hint = f"extract {root / 'stl10_binary.tar.gz'} first (tar xzf stl10_binary.tar.gz)"
    raise FileNotFoundError(
        f"STL-10 binary files not found in {root}: expected {root}/stl10_binary/"
        f"{{train,test}}_{{X,y}}.bin and unlabeled_X.bin; {hint}"
    )


def read_stl10(root: Path, split: str) -> tuple[Tensor, Tensor]:
    """Read an STL-10 split (``train``, ``test`` or ``unlabeled``, labels -1), memory-mapped.

    The ``*_X.bin`` files hold ``uint8`` images stored column-major (``(3, W, H)`` each), the
    ``*_y.bin`` files labels 1..10, as documented in ``torchvision.datasets.STL10``.
    """
    folder = stl10_folder(root)
    image_file = folder / f"{split}_X.bin"
    if not image_file.is_file():
        raise FileNotFoundError(f"STL-10 file {image_file} not found")
    raw = np.memmap(image_file, dtype=np.uint8, mode="c")  # copy-on-write: no RAM until read
    if raw.size % (3 * STL10_SIDE * STL10_SIDE):
        raise ValueError(f"{image_file} size {raw.size} is not a multiple of 3x96x96 bytes")
    images = torch.from_numpy(raw).view(-1, 3, STL10_SIDE, STL10_SIDE).transpose(2, 3)
    if split == "unlabeled":
        return images, torch.full((len(images),), -1, dtype=torch.int64)
    labels = np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images in {image_file} but {len(labels)} labels")
    return images, torch.from_numpy(labels)
