"""Image-text pairs for CLIP: training pairs with their caption tokens, labelled evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from lightning_ssl.data.datamodule import SSLDataModule
from lightning_ssl.data.datasets import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_IMAGE_SIDE,
    ImageFolderDataset,
    scan_image_folder,
)
from lightning_ssl.data.pairs import (
    ImageTextDataset,
    Pair,
    class_display_names,
    read_caption_table,
    read_class_names,
    scan_shards,
    templated_pairs,
)
from lightning_ssl.data.readers import require_dir
from lightning_ssl.data.tokenizer import CAPTION_TEMPLATES
from lightning_ssl.data.transforms import ViewGroup


def clip_view(size: int) -> ViewGroup:
    """open_clip's training transform: a random resized crop of scale (0.9, 1), nothing else
    (``open_clip/transform.py`` ``image_transform``, ``is_train=True``)."""
    return ViewGroup(
        num=1, size=size, scale=(0.9, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0
    )


class ImageTextDataModule(SSLDataModule):
    """Image-caption pairs for CLIP; a labelled ImageFolder tree for zero-shot and the probe.

    Training batches are ``(views, labels, tokens)``: one view per image by default (open_clip's
    crop), ``labels`` the class where the pairs come from class names (else -1, which the
    online probe ignores) and ``tokens`` the ``(B, context_length)`` caption token ids.
    Validation batches are ``(images, labels)`` of ``val_dir``; :attr:`class_names` are its
    classes' readable names, for zero-shot prompts.

    Args:
        data_dir: Folder holding ``train`` and ``val_dir``.
        train: The training pairs, relative to ``data_dir``: a folder of webdataset-style
            ``*.tar`` shards, a ``.csv``/``.tsv`` of ``path, caption``, or an ImageFolder tree
            whose images get captions from ``caption_templates`` and their class names.
        val_dir: Labelled ImageFolder tree (zero-shot classification, online probe).
        class_names: ``folder<TAB>name`` TSV (e.g. Imagewoof's ``classes.tsv``), relative to
            ``data_dir`` or absolute; default: the folder names, ``_`` read as a space.
        num_classes: Classes of ``val_dir`` (default: its class folders, listed at start).
        caption_templates: Templates of the captions made from class names.
        context_length: Tokens per caption (CLIP: 77).
        max_image_pixels: Refuse larger images, naming the file; ``None``: no limit.
        max_image_side: Shrink larger images at load; ``None``: keep every size.
        augmentation: ``"clip"`` (:func:`clip_view`, open_clip's crop) or a preset name of
            :class:`SSLDataModule`; ``views`` replaces it.
        **kwargs: The arguments of :class:`SSLDataModule`.

    Examples:
        >>> dm = ImageTextDataModule("cifar10-jpeg", val_dir="test")  # doctest: +SKIP
        >>> dm.class_names[:2], dm.num_global_crops  # doctest: +SKIP
        (['airplane', 'automobile'], 1)
    """

    def __init__(
        self,
        data_dir: str,
        train: str = "train",
        val_dir: str = "val",
        class_names: str | None = None,
        num_classes: int | None = None,
        caption_templates: Sequence[str] = CAPTION_TEMPLATES,
        context_length: int = 77,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_side: int | None = DEFAULT_MAX_IMAGE_SIDE,
        augmentation: str = "clip",
        **kwargs: Any,
    ) -> None:
        for flag in ("batched_augmentation", "images_on_device"):
            if kwargs.get(flag):
                raise ValueError(
                    f"{flag}=True is not supported for image-text pairs yet: the loader "
                    "workers make the view (set data.{flag}: false)"
                )
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3, got {context_length}")
        if not caption_templates or any(t.count("{}") != 1 for t in caption_templates):
            raise ValueError("caption_templates: each template needs exactly one '{}'")
        super().__init__(data_dir, augmentation=augmentation, **kwargs)
        self.train_source, self.val_dir = train, val_dir
        self.caption_templates, self.context_length = list(caption_templates), context_length
        self.max_image_pixels, self.max_image_side = max_image_pixels, max_image_side
        self._num_classes = num_classes
        self._names_file = class_names
        self.hparams["num_classes"] = self._hparams_initial["num_classes"] = self.num_classes

    def _resolve_views(
        self,
        augmentation: str,
        image_size: int | None,
        num_local: int,
        local_size: int | None,
        views: Sequence[ViewGroup] | None,
    ) -> list[ViewGroup]:
        if views is None and augmentation == "clip":
            return [clip_view(image_size or self.default_image_size)]
        return super()._resolve_views(augmentation, image_size, num_local, local_size, views)

    def _resolve(self, name: str) -> Path:
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.data_dir / path

    @property
    def _names(self) -> dict[str, str] | None:
        """``folder -> name`` of ``class_names``, read on first use."""
        if self._names_file is not None and "names" not in self._loaded:
            path = self._resolve(self._names_file)
            if not path.is_file():
                raise FileNotFoundError(
                    f"class_names file {path} not found: a TSV of 'folder<TAB>name' lines, "
                    "or class_names: null to use the folder names"
                )
            self._loaded["names"] = read_class_names(path)
        return self._loaded.get("names")

    def _val_folders(self) -> list[str]:
        root = require_dir(
            self._resolve(self.val_dir), "validation folder", "expected <class>/<image> inside"
        )
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    @property
    def num_classes(self) -> int:
        """``num_classes`` if given, else the class folders of ``val_dir`` (no image read)."""
        if self._num_classes is None:
            self._num_classes = len(self._val_folders())
        return self._num_classes

    @property
    def class_names(self) -> list[str]:
        """Readable names of the evaluation classes, in label order."""
        return class_display_names(self._val_folders(), self._names)

    def training_pairs(self) -> list[Pair]:
        """The pairs of ``train`` (shards, table or class-name captions), read once."""
        if "pairs" not in self._loaded:
            source = self._resolve(self.train_source)
            if source.is_file():
                self._loaded["pairs"] = read_caption_table(source)
            else:
                how = "expected a folder of *.tar shards, a .csv/.tsv file or an ImageFolder tree"
                require_dir(source, "training pairs", how)
                if any(source.glob("*.tar")):
                    self._loaded["pairs"] = scan_shards(source)
                else:
                    templates = self.caption_templates
                    self._loaded["pairs"] = templated_pairs(source, templates, self._names)
        return self._loaded["pairs"]

    def build_dataset(self, split: str, transform: Callable | None) -> Dataset:
        limits = {"max_image_pixels": self.max_image_pixels, "max_image_side": self.max_image_side}
        if split == "val":
            root = self._resolve(self.val_dir)
            samples = scan_image_folder(root)
            return ImageFolderDataset(
                root,
                transform,
                samples=samples,
                max_image_pixels=self.max_image_pixels,
                max_image_side=self.max_image_side,
            )
        tokens = split == "train"
        return ImageTextDataset(
            self.training_pairs(), transform, self.context_length, tokens=tokens, **limits
        )
