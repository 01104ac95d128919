"""Training batches on the training device: images kept there, padded batches, seeded views.

Under ``batched_augmentation`` the training loader yields one of three batch forms, which
:func:`unpack_training_batch` turns into ``(images, sizes, labels)`` for
:class:`~lightning_ssl.data.batched.BatchedMultiCrop`:

* ``(images, labels)``: ``uint8`` images of one size (in-memory datasets);
* ``(images, sizes, labels)``: zero-padded images of different sizes with their true sizes
  (ImageFolder, :func:`~lightning_ssl.data.datasets.pad_collate`);
* ``(EncodedBatch, labels)`` with ``decode_on_device``: JPEG bytes, decoded and padded on the
  device (:func:`~lightning_ssl.data.encoded.decode_batch`);
* ``(indices, labels)`` with ``images_on_device``: positions into the ``uint8`` training
  images copied once to the device (:func:`copy_images_to`).

With ``sample_indices`` every form carries one more last element, each image's index in the
training dataset (:class:`IndexedDataset`, :func:`collate_with_indices`,
:func:`dataset_positions`), which :func:`split_sample_indices` takes off before unpacking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset, default_collate

from lightning_ssl.data.datasets import TensorImageDataset
from lightning_ssl.data.encoded import EncodedBatch, decode_batch
from lightning_ssl.data.sampling import derive_seed


def check_data_arguments(
    batched_augmentation: bool, images_on_device: bool, **bounded: tuple[int | None, int]
) -> None:
    """Raise ``ValueError`` on a contradiction or a ``name=(value, low)`` below its bound."""
    if images_on_device and not batched_augmentation:
        raise ValueError(
            "images_on_device=True needs batched_augmentation=True: the images held on the "
            "device are augmented there, the loader only yields their indices"
        )
    for name, (value, low) in bounded.items():
        if value is not None and value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


def tensor_parts(dataset: Dataset) -> list[tuple[TensorImageDataset, Tensor]]:
    """The in-memory datasets behind ``dataset`` and the indices of its items in each.

    Items come part by part (a subset mixing STL-10's labelled and unlabelled images is
    grouped by part; the sampler shuffles anyway, and indices and labels are listed alike).
    Handles :class:`TensorImageDataset`, :class:`~torch.utils.data.Subset` (``train_subset``)
    and :class:`~torch.utils.data.ConcatDataset` (STL-10's train + unlabeled).

    Examples:
        >>> data = TensorImageDataset(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.arange(4))
        >>> [index.tolist() for _, index in tensor_parts(Subset(data, [3, 1]))]
        [[3, 1]]
    """
    return [(part, index) for part, index, _ in _located_parts(dataset)]


def dataset_positions(dataset: Dataset) -> Tensor:
    """Each :func:`copy_images_to` image's index in ``dataset`` (a permutation of ``0..N-1``).

    Examples:
        >>> a = TensorImageDataset(torch.zeros(2, 3, 1, 1, dtype=torch.uint8), torch.zeros(2))
        >>> b = TensorImageDataset(torch.ones(2, 3, 1, 1, dtype=torch.uint8), torch.ones(2))
        >>> dataset_positions(Subset(ConcatDataset([a, b]), [2, 0, 3])).tolist()
        [1, 0, 2]
    """
    return torch.cat([positions for _, _, positions in _located_parts(dataset)])


def _located_parts(dataset: Dataset) -> list[tuple[TensorImageDataset, Tensor, Tensor]]:
    """``(part, indices in the part, positions in dataset)`` of :func:`tensor_parts`."""
    if isinstance(dataset, TensorImageDataset):
        return [(dataset, torch.arange(len(dataset)), torch.arange(len(dataset)))]
    if isinstance(dataset, ConcatDataset):
        parts: list[tuple[TensorImageDataset, Tensor, Tensor]] = []
        offset = 0
        for inner in dataset.datasets:
            parts += [(p, i, pos + offset) for p, i, pos in _located_parts(inner)]
            offset += len(inner)  # type: ignore[arg-type]
        return parts
    if isinstance(dataset, Subset):
        located = _located_parts(dataset.dataset)
        wanted = torch.as_tensor(dataset.indices, dtype=torch.int64)
        # Subset indices address the concatenation of the inner parts.
        offsets = torch.tensor([0] + [len(index) for _, index, _ in located]).cumsum(0)
        part_of = torch.searchsorted(offsets[1:], wanted, right=True)
        parts = []
        for number, (part, index, _) in enumerate(located):
            mask = part_of == number
            if mask.any():
                positions = mask.nonzero().flatten()
                parts.append((part, index[wanted[mask] - offsets[number]], positions))
        return parts
    raise TypeError(
        f"images_on_device needs in-memory (TensorImageDataset) training data, got "
        f"{type(dataset).__name__}"
    )


def indices_and_labels(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """Positions ``0..N-1`` into :func:`copy_images_to`'s images and the matching labels."""
    labels = torch.cat([part.labels[index] for part, index in tensor_parts(dataset)])
    return torch.arange(len(labels)), labels


def copy_images_to(dataset: Dataset, device: torch.device) -> Tensor:
    """The ``uint8`` images of ``dataset`` (in :func:`tensor_parts` order) on ``device``.

    The copy is built chunk by chunk, so memory-mapped data (STL-10) is never held twice in
    host memory.
    """
    parts = tensor_parts(dataset)
    count = sum(len(index) for _, index in parts)
    shape = parts[0][0].images.shape[1:]
    images = torch.empty((count, *shape), dtype=torch.uint8, device=device)
    start = 0
    for part, index in parts:
        for chunk in index.split(4096):
            images[start : start + len(chunk)] = part.images[chunk].to(device)
            start += len(chunk)
    return images


def unpack_training_batch(
    batch: Any, device_images: Callable[[torch.device], Tensor] | None = None
) -> tuple[Tensor, Tensor | None, Tensor]:
    """``(images, sizes, labels)`` of a batch of the ``batched_augmentation`` loader.

    ``device_images`` (given under ``images_on_device``) maps the batch's device to the
    training images held there; the batch then holds their indices. ``sizes`` is ``None``
    unless the images are zero-padded.

    Examples:
        >>> images, sizes, labels = unpack_training_batch((torch.zeros(2, 3, 4, 4), torch.ones(2)))
        >>> tuple(images.shape), sizes
        ((2, 3, 4, 4), None)
    """
    if device_images is not None:
        indices, labels = batch
        return device_images(indices.device)[indices], None, labels
    if len(batch) == 3:
        images, sizes, labels = batch
        return images, sizes, labels
    images, labels = batch
    if isinstance(images, EncodedBatch):  # decode_on_device: JPEG bytes, decoded here
        images, sizes = decode_batch(images, labels.device)
        return images, sizes, labels
    return images, None, labels


def seeded_generator(key: tuple[int, ...], device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded by a hash of ``key`` (e.g. seed, rank, batch number).

    Every process draws different parameters (the global RNG is seeded alike on all ranks),
    and a resumed run, whose loop restores the batch count, draws the same ones.
    """
    return torch.Generator(device).manual_seed(derive_seed(*key))


def training_items(dataset: Dataset, images_on_device: bool, indexed: bool) -> Dataset:
    """What the training loader draws from: ``dataset`` (images, labels) or, with
    ``images_on_device``, positions into :func:`copy_images_to`'s images and labels; with
    ``indexed`` each item also ends with its index in ``dataset``."""
    if images_on_device:
        positions = (dataset_positions(dataset),) if indexed else ()
        return TensorDataset(*indices_and_labels(dataset), *positions)
    # Inside the per-image seeding wrapper of the CPU path: the views do not change.
    return IndexedDataset(dataset) if indexed else dataset


class IndexedDataset(Dataset):
    """``dataset`` whose items end with their index: ``(*item, index)``.

    Examples:
        >>> IndexedDataset([("a", 0), ("b", 1)])[1]
        ('b', 1, 1)
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (*self.dataset[index], index)


def collate_with_indices(collate: Callable | None) -> Callable:
    """Batch :class:`IndexedDataset` items: ``collate`` of the items, then an ``int64`` tensor of
    their indices (``collate=None``: torch's default collation).

    Examples:
        >>> batch = collate_with_indices(None)([(torch.zeros(2), 0, 7), (torch.ones(2), 1, 3)])
        >>> batch[1].tolist(), batch[2].tolist()
        ([0, 1], [7, 3])
    """
    inner = default_collate if collate is None else collate

    def collate_indexed(items: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        indices = torch.tensor([int(item[-1]) for item in items], dtype=torch.int64)
        return (*inner([item[:-1] for item in items]), indices)

    return collate_indexed


def split_sample_indices(batch: Any, indexed: bool) -> tuple[Any, tuple[Tensor, ...]]:
    """``(batch without its indices, (indices,))`` of an ``indexed`` batch, else ``(batch, ())``.

    Examples:
        >>> split_sample_indices(("images", "labels", "indices"), indexed=True)
        (('images', 'labels'), ('indices',))
    """
    if not indexed:
        return batch, ()
    *rest, indices = batch
    return tuple(rest), (indices,)
