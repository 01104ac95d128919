"""Hostile and odd image trees: a pixel limit on every decode path, padded batches bounded by
``max_image_side``, symbolic-link loops and duplicates named, file names that are not UTF-8."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from lightning_ssl.data.datasets import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageFolderDataset,
    ImageTooLargeError,
    load_image,
    load_image_tensor,
    pad_collate,
    scan_image_folder,
)
from lightning_ssl.data.readers import read_image_folder


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` with no pixel data: decoding it would
    allocate ``3 * width * height`` bytes (the shape of a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def image_tree(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> Path:
    """``root/<class>/<i>.png`` of the given ``(width, height)``s."""
    for name, class_sizes in sizes.items():
        (root / name).mkdir(parents=True)
        for index, size in enumerate(class_sizes):
            Image.new("RGB", size, (index * 40, 100, 200)).save(root / name / f"{index}.png")
    return root


@pytest.mark.parametrize("loader", [load_image, load_image_tensor])
def test_a_bomb_header_is_refused_before_decoding_naming_file_and_setting(loader, tmp_path):
    # 20000 x 20000 = 400 Mpixel (1.2 GB decoded): the torchvision path decoded such a file
    # without any limit, and PIL only past twice its threshold.
    bomb = png_header_only(tmp_path / "bomb.png", 20_000, 20_000)
    with pytest.raises(ImageTooLargeError, match="max_image_pixels") as error:
        loader(bomb)
    assert str(bomb) in str(error.value) and "400,000,000 pixels" in str(error.value)
    assert f"{DEFAULT_MAX_IMAGE_PIXELS:,}" in str(error.value)


def test_the_pixel_limit_is_configurable_on_every_path(tmp_path, monkeypatch):
    root = image_tree(tmp_path / "train", {"a": [(40, 30)], "b": [(40, 30)]})
    for as_tensor in (False, True):
        with pytest.raises(ImageTooLargeError, match=r"a/0\.png is 40x30 = 1,200 pixels"):
            ImageFolderDataset(root, as_tensor=as_tensor, max_image_pixels=1000)[0]
        image, _ = ImageFolderDataset(root, as_tensor=as_tensor, max_image_pixels=1200)[0]
        assert tuple(image.shape[-2:] if as_tensor else image.size[::-1]) == (30, 40)
    monkeypatch.setenv("LIGHTNING_SSL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ImageTooLargeError, match="over the limit of 1,000"):
        read_image_folder(root, max_image_pixels=1000)  # the in-memory (CIFAR JPEG) reader
    assert read_image_folder(root)[0].shape == (2, 3, 30, 40)


def test_one_huge_image_keeps_the_padded_batch_under_the_side_bound(tmp_path):
    # The batched augmentation pads a batch to its largest image: one 8000^2 image made a
    # batch of 16 take 7.3 GB. Here one 3000 x 2400 image among 40 x 30 ones.
    side, batch = 512, 8
    root = image_tree(tmp_path / "train", {"a": [(3000, 2400)] + [(40, 30)] * (batch - 1)})
    dataset = ImageFolderDataset(root, as_tensor=True, max_image_side=side)
    images, sizes, _ = pad_collate([dataset[i] for i in range(batch)])
    assert tuple(images.shape) == (batch, 3, 410, 512)  # 2400 * 512 / 3000 = 409.6
    assert images.numel() <= batch * 3 * side**2  # the documented bound, in bytes (uint8)
    assert sizes[0].tolist() == [410, 512] and sizes[1].tolist() == [30, 40]
    # The PIL path shrinks alike (its transforms see the same image size).
    assert ImageFolderDataset(root, max_image_side=side)[0][0].size == (512, 410)
    with pytest.raises(ValueError, match="max_image_side must be >= 1"):
        ImageFolderDataset(root, max_image_side=0)


def test_a_symlink_loop_is_an_error_naming_the_link(tmp_path):
    # os.walk(followlinks=True) followed the loop ~40 times: that class counted 41x.
    root = image_tree(tmp_path / "train", {"a": [(8, 8)] * 3, "b": [(8, 8)]})
    (root / "a" / "sub").mkdir()
    os.symlink(root / "a", root / "a" / "sub" / "again")
    with pytest.raises(ValueError, match="symbolic link loop") as error:
        scan_image_folder(root)
    assert str(root / "a" / "sub" / "again") in str(error.value)


def test_a_second_link_to_a_listed_folder_is_skipped_with_a_warning(tmp_path):
    root = image_tree(tmp_path / "train", {"a": [(8, 8)] * 3, "b": [(8, 8)] * 2})
    os.symlink(root / "a", root / "b" / "copy_of_a")
    with pytest.warns(UserWarning, match=r"skipping .*b/copy_of_a: it links to .*train/a"):
        _, samples = scan_image_folder(root)
    assert [label for _, label in samples] == [0, 0, 0, 1, 1]


def test_a_file_name_that_is_not_utf8_loads_and_errors_name_it(tmp_path, monkeypatch):
    # A CIFAR tree with such a name raised UnicodeEncodeError, naming no file.
    root = image_tree(tmp_path / "train", {"a": [(8, 8)], "b": [(8, 8)]})
    odd = os.path.join(os.fsencode(root / "a"), b"caf\xe9.png")  # Latin-1, not UTF-8
    with open(odd, "wb") as file:
        Image.new("RGB", (8, 8), (1, 2, 3)).save(file, format="PNG")
    monkeypatch.setenv("LIGHTNING_SSL_CACHE", str(tmp_path / "cache"))
    images, labels, _ = read_image_folder(root)
    assert images.shape == (3, 3, 8, 8) and labels.tolist() == [0, 0, 1]
    for as_tensor in (False, True):
        assert ImageFolderDataset(root, as_tensor=as_tensor)[1][1] == 0

    with open(odd, "wb") as file:
        file.write(b"not an image")
    for loader in (load_image, load_image_tensor):
        with pytest.raises(RuntimeError, match=r"cannot read image file .*a/caf\\xe9\.png"):
            loader(os.fsdecode(odd))


def test_datamodules_take_the_limits_from_the_cli_arguments(tmp_path):
    """The settings the errors name are DataModule (CLI) arguments that reach every reader."""
    from lightning_ssl.data import CIFAR10DataModule, ImageFolderDataModule

    root = tmp_path / "data"
    classes = {"a": [(40, 30), (30, 40)], "b": [(40, 30), (64, 48)]}
    for split in ("train", "val"):
        image_tree(root / split, classes)
    folder = ImageFolderDataModule(
        str(root), batch_size=2, num_workers=0, max_image_pixels=None, max_image_side=32
    )
    folder.setup("fit")
    dataset = folder.dataset("train")
    dataset = getattr(dataset, "dataset", dataset)  # under a position-seeding wrapper, if any
    assert dataset.max_image_side == 32 and dataset.max_image_pixels is None
    strict = ImageFolderDataModule(str(root), batch_size=2, num_workers=0, max_image_pixels=1000)
    strict.setup("fit")
    with pytest.raises(ImageTooLargeError, match="max_image_pixels"):
        strict.dataset("train")[3]  # 64 x 48 = 3072 pixels

    cifar = tmp_path / "cifar"
    for split in ("train", "test"):
        image_tree(cifar / split, {str(c): [(32, 32)] for c in range(10)})
    small = CIFAR10DataModule(str(cifar), cache_dir=str(tmp_path / "cache"), max_image_pixels=100)
    with pytest.raises(ImageTooLargeError, match="max_image_pixels"):
        small.prepare_data()
