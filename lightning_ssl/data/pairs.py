"""Image-caption pairs: webdataset-style tar shards, a CSV/TSV table, or captions made from the
class names of an ImageFolder tree; and the dataset that decodes and tokenizes them.

* **Shards** (``<folder>/*.tar``, as webdataset/img2dataset write them): members sharing a key
  (``00042.jpg`` + ``00042.txt``) form a pair; other members (``.json`` ...) are ignored. Read
  with the standard library: the scan records each image's byte range, a worker reads it with
  one ``seek``.
* **Table** (``.csv`` or ``.tsv``): rows ``path, caption`` (an optional header ``path,caption``
  or open_clip's ``filepath,title``); relative paths are relative to the table's folder.
* **Class names**: every image of ``<class>/<image>`` gets a caption from a template, chosen
  by the image's index so that captions vary across images and are the same every epoch.

Examples:
    >>> pairs = read_caption_table("captions.tsv")  # doctest: +SKIP
    >>> pairs[0].caption  # doctest: +SKIP
    'a dog running on the beach'
"""

from __future__ import annotations

import csv
import io
import tarfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from lightning_ssl.data.datasets import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_IMAGE_SIDE,
    IMG_EXTENSIONS,
    ImageTooLargeError,
    check_pixels,
    display_path,
    load_image,
    pil_to_rgb,
    scan_image_folder,
    shrunk_size,
)
from lightning_ssl.data.tokenizer import tokenize

#: Captions longer than this many bytes are cut (the tokenizer keeps ~77 tokens anyway).
MAX_CAPTION_BYTES = 16_384
_TABLE_HEADERS = (("path", "caption"), ("filepath", "title"))


@dataclass(frozen=True)
class Pair:
    """One image and its caption: a file, or ``size`` bytes at ``offset`` inside a shard."""

    path: str
    caption: str
    label: int = -1  # class index where the source has one, else -1 (the probe ignores it)
    offset: int = -1
    size: int = -1


def _split_key(name: str) -> tuple[str, str]:
    stem, _, extension = name.rpartition(".")
    return stem, f".{extension.lower()}"


def _scan_shard(shard: Path) -> list[Pair]:
    images: dict[str, tarfile.TarInfo] = {}
    captions: dict[str, str] = {}
    try:
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, extension = _split_key(member.name)
                if extension == ".txt":
                    raw = tar.extractfile(member).read(MAX_CAPTION_BYTES)  # type: ignore[union-attr]
                    captions[key] = raw.decode("utf-8", errors="replace").strip()
                elif extension in IMG_EXTENSIONS:
                    images[key] = member
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(
            f"cannot read shard {display_path(shard)}: {type(err).__name__}: {err}; "
            "expected an uncompressed tar of <key>.jpg + <key>.txt members"
        ) from err
    return [
        Pair(str(shard), captions[key], offset=info.offset_data, size=info.size)
        for key, info in images.items()
        if key in captions
    ]


def scan_shards(folder: Path) -> list[Pair]:
    """Every ``<key>.<image>`` + ``<key>.txt`` pair of the ``*.tar`` shards in ``folder``."""
    shards = sorted(folder.glob("*.tar"))
    pairs = [pair for shard in shards for pair in _scan_shard(shard)]
    if not pairs:
        raise FileNotFoundError(
            f"no image-caption pair in the {len(shards)} *.tar shards of {display_path(folder)}: "
            "each pair is an image member (<key>.jpg) and a caption member (<key>.txt)"
        )
    return pairs


def read_caption_table(table: str | Path) -> list[Pair]:
    """The ``path, caption`` rows of a ``.csv`` (comma) or ``.tsv`` (tab) file."""
    table = Path(table)
    delimiter = "\t" if table.suffix.lower() == ".tsv" else ","
    with open(table, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file, delimiter=delimiter))
    header = bool(rows) and tuple(c.strip().lower() for c in rows[0]) in _TABLE_HEADERS
    pairs = []
    for line, row in enumerate(rows[header:], start=1 + header):
        if len(row) != 2 or not row[0].strip():
            raise ValueError(
                f"{display_path(table)} row {line}: expected 2 columns 'path{delimiter}caption', "
                f"got {len(row)} ({row!r:.80}); quote captions that contain the delimiter"
            )
        pairs.append(Pair(str(table.parent / row[0].strip()), row[1][:MAX_CAPTION_BYTES]))
    if not pairs:
        raise ValueError(f"{display_path(table)} holds no 'path, caption' row")
    return pairs


def read_class_names(path: str | Path) -> dict[str, str]:
    """``folder -> name`` from a TSV of ``folder<TAB>name`` lines (Imagewoof's classes.tsv)."""
    names = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            folder, tab, name = line.partition("\t")
            if not tab or not name.strip():
                raise ValueError(f"{display_path(path)}: expected 'folder<TAB>name', got {line!r}")
            names[folder.strip()] = name.strip()
    return names


def class_display_names(folders: Sequence[str], names: dict[str, str] | None) -> list[str]:
    """The readable name of each class folder (``names`` if given, else ``_`` as spaces)."""
    return [(names or {}).get(f, f.replace("_", " ")) for f in folders]


def templated_pairs(
    root: Path, templates: Sequence[str], names: dict[str, str] | None = None
) -> list[Pair]:
    """A caption per image of the ImageFolder tree ``root``: ``templates[i % T]`` of its class."""
    folders, samples = scan_image_folder(root)
    labels = class_display_names(folders, names)
    return [
        Pair(path, templates[i % len(templates)].format(labels[label]), label)
        for i, (path, label) in enumerate(samples)
    ]


def decode_bytes(data: bytes, name: str, max_pixels: int | None, max_side: int | None) -> Any:
    """An RGB PIL image from encoded bytes, its size checked before decoding (see
    :func:`~lightning_ssl.data.datasets.load_image`); errors name ``name``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                check_pixels(name, width, height, max_pixels)
                image.load()
                image = pil_to_rgb(image)
    except ImageTooLargeError:
        raise
    except Exception as err:
        raise RuntimeError(f"cannot read image {name}: {type(err).__name__}: {err}") from err
    height, width = shrunk_size(image.height, image.width, max_side)
    if (height, width) != (image.height, image.width):
        image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    return image


class ImageTextDataset(Dataset):
    """Items ``(image, label, tokens)`` (``(image, label)`` with ``tokens=False``).

    Args:
        pairs: from :func:`scan_shards`, :func:`read_caption_table` or :func:`templated_pairs`.
        transform: called on each RGB PIL image.
        context_length: token ids per caption (zero-padded or truncated).
        tokens: whether items carry the caption's tokens (False: evaluation of the images).
        max_image_pixels: refuse larger images, naming them; ``None``: no limit.
        max_image_side: shrink larger images at load; ``None``: never.
    """

    def __init__(
        self,
        pairs: list[Pair],
        transform: Callable | None = None,
        context_length: int = 77,
        tokens: bool = True,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_side: int | None = DEFAULT_MAX_IMAGE_SIDE,
    ) -> None:
        self.pairs, self.transform, self.context_length = pairs, transform, context_length
        self.tokens, self.max_pixels, self.max_side = tokens, max_image_pixels, max_image_side
        self._shards: dict[str, Any] = {}  # open shard files of this (worker) process

    def __len__(self) -> int:
        return len(self.pairs)

    def __getstate__(self) -> dict[str, Any]:  # open files stay in their process
        return {**self.__dict__, "_shards": {}}

    def _image(self, pair: Pair) -> Any:
        if pair.offset < 0:
            return load_image(pair.path, self.max_pixels, self.max_side)
        if pair.path not in self._shards:
            self._shards[pair.path] = open(pair.path, "rb")  # noqa: SIM115 (kept open)
        shard = self._shards[pair.path]
        shard.seek(pair.offset)
        name = f"{display_path(pair.path)}@{pair.offset}"
        return decode_bytes(shard.read(pair.size), name, self.max_pixels, self.max_side)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        pair = self.pairs[index]
        image = self._image(pair)
        image = self.transform(image) if self.transform else image
        if not self.tokens:
            return image, pair.label
        return image, pair.label, tokenize([pair.caption], self.context_length)[0]
