"""Where a run is, as data: the training order and each image's views are pure functions of
the position in the run, so a run resumed from any checkpoint repeats the uninterrupted one.

* :func:`training_sampler` builds the sampler of every DataModule's training loader; its
  position comes from :func:`training_position`, the trainer's count of processed batches
  (restored from checkpoints), so a run resumed mid-epoch sees exactly the batches it had not
  seen.
* :class:`StartOnFirstBatchLoader` starts its iterator (worker processes, sampler) at the first
  batch requested. Lightning creates the training iterator while ``configure_optimizers`` reads
  ``trainer.estimated_stepping_batches``, before a checkpoint's loop state is restored, and
  keeps it for the resumed epoch; a multi-process iterator draws its sampler's indices as it is
  created, so without the deferral they were those of a fresh run.
* :class:`PositionSeededDataset` makes each image's views with torch's CPU generator seeded by
  ``(seed, epoch, index)``: the same views whichever worker process makes them, however many
  workers there are, after any resume, with no random state to save in checkpoints. (The
  device-side augmentation seeds its generator by ``(seed, rank, batch number)`` alike, see
  :func:`~lightning_ssl.data.device.seeded_generator`.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

Position = tuple[int, int, int]
#: ``(epoch, index)``: what a keyed :class:`ResumableSampler` yields for each sample.
SampleKey = tuple[int, int]


def derive_seed(*key: int) -> int:
    """A 63-bit seed that is a pure function of the integers ``key`` (SHA-256 of them).

    Examples:
        >>> derive_seed(0, 1, 2) == derive_seed(0, 1, 2) != derive_seed(0, 2, 1)
        True
    """
    digest = hashlib.sha256(repr(tuple(int(k) for k in key)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` whose position is read from the training progress.

    ``position()`` returns ``(epoch, start, stop)``: the epoch whose permutation to use and the
    slice of this process's samples still to draw (or ``None`` to behave as a plain sampler).
    With the trainer's count of processed batches as the source, the batch at global index
    ``g`` is always the same one, so a run resumed from any checkpoint (mid-epoch included)
    trains on exactly the batches the uninterrupted run would have. Lightning alone restarts a
    plain loader at the beginning of its epoch (some images twice, others never), and with
    worker processes builds the iterator before calling ``set_epoch``. With ``keyed=True`` it
    yields ``(epoch, index)`` pairs, the keys of a :class:`PositionSeededDataset`.

    Examples:
        >>> sampler = ResumableSampler(range(8), num_replicas=1, rank=0, shuffle=False,
        ...                            position=lambda: (3, 6, 8))
        >>> list(sampler)
        [6, 7]
        >>> sampler.keyed = True
        >>> list(sampler)
        [(3, 6), (3, 7)]
    """

    def __init__(
        self,
        *args: Any,
        position: Callable[[], Position | None] = lambda: None,
        keyed: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.position, self.keyed = position, keyed

    def __iter__(self) -> Iterator[Any]:
        where = self.position()
        if where is None:
            indices = list(super().__iter__())
        else:
            epoch, start, stop = where
            self.set_epoch(epoch)
            indices = list(super().__iter__())[start:stop]
        return iter([(self.epoch, i) for i in indices] if self.keyed else indices)


def training_sampler(
    dataset: Dataset, batch_size: int, seed: int, trainer: Trainer | None, keyed: bool = False
) -> ResumableSampler:
    """The shuffling, last-batch-dropping sampler of this process's share of ``dataset``.

    Its position is :func:`training_position` of ``trainer`` (none without a trainer);
    ``keyed=True`` yields ``(epoch, index)`` keys for a :class:`PositionSeededDataset`.

    Raises:
        ValueError: ``batch_size`` times the number of processes exceeds the dataset, so no
            batch would be produced.

    Examples:
        >>> sampler = training_sampler(range(8), 4, seed=0, trainer=None)
        >>> len(list(sampler))
        8
    """
    size = len(dataset)  # type: ignore[arg-type]
    world = trainer.world_size if trainer is not None else 1
    rank = trainer.global_rank if trainer is not None else 0
    if batch_size * world > size:
        processes = f" x {world} processes" if world > 1 else ""
        raise ValueError(
            f"batch_size={batch_size}{processes} is larger than the {size} training "
            "images: with drop_last=True no batch would be produced; lower batch_size "
            "or raise train_subset"
        )
    # The order is a function of (seed, epoch) only (Lightning calls set_epoch, and leaves a
    # DistributedSampler in place under DDP), and the loader's position is in checkpoints:
    # a run resumed mid-epoch sees exactly the batches it had not seen.
    return ResumableSampler(
        dataset,
        num_replicas=world,
        rank=rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
        position=lambda: training_position(trainer, size, batch_size),
        keyed=keyed,
    )


def training_data(
    dataset: Dataset, batch_size: int, seed: int, trainer: Trainer | None, seed_views: bool
) -> tuple[Dataset, ResumableSampler]:
    """The training dataset and its :func:`training_sampler`.

    With ``seed_views`` (views made per image in the loader) the dataset is wrapped in a
    :class:`PositionSeededDataset` and the sampler yields its ``(epoch, index)`` keys.

    Examples:
        >>> data, sampler = training_data(range(8), 4, seed=0, trainer=None, seed_views=True)
        >>> type(data).__name__, len(list(sampler))
        ('PositionSeededDataset', 8)
    """
    sampler = training_sampler(dataset, batch_size, seed, trainer, keyed=seed_views)
    return (PositionSeededDataset(dataset, seed) if seed_views else dataset), sampler


def training_position(
    trainer: Trainer | None, num_samples: int, batch_size: int
) -> Position | None:
    """``(epoch, start, stop)`` of the next training batch in this process's samples.

    Read from the trainer's count of processed batches (restored from checkpoints), with
    ``limit_train_batches`` shortening each epoch; ``None`` without a trainer.
    """
    if trainer is None:
        return None
    loader_batches = num_samples // (batch_size * trainer.world_size)
    limit = trainer.limit_train_batches
    per_epoch = (
        min(loader_batches, limit)
        if isinstance(limit, int)
        else int(loader_batches * (limit or 1.0))
    )
    # Lightning declares the field as the base tracker but builds a _ProcessedTracker.
    total = trainer.fit_loop.epoch_loop.batch_progress.total
    processed = total.processed  # type: ignore[attr-defined]
    epoch, offset = divmod(processed, max(1, per_epoch))
    return epoch, offset * batch_size, per_epoch * batch_size


class PositionSeededDataset(Dataset):
    """``dataset`` indexed by ``(epoch, index)``: each item made with torch's CPU generator
    seeded by ``(seed, epoch, index)``.

    The training transforms (torchvision's ``v2`` and ours) draw from torch's generator; seeding
    it per item makes an image's views a function of its position in the run alone, not of the
    worker process that made them or of the random state of a resumed process. The caller's
    random state is restored afterwards (it matters with ``num_workers=0``). Within an epoch a
    process draws each index at most once (``drop_last`` partitions), so no two items share a
    key.

    Examples:
        >>> class Noise(Dataset):
        ...     def __getitem__(self, index):
        ...         return torch.rand(2)
        >>> noise = PositionSeededDataset(Noise(), seed=0)
        >>> torch.equal(noise[1, 5], noise[1, 5]), torch.equal(noise[1, 5], noise[2, 5])
        (True, False)
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey) -> Any:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(derive_seed(self.seed, epoch, index))
            return self.dataset[index]


class StartOnFirstBatchLoader(DataLoader):
    """A ``DataLoader`` whose iterator starts (workers, sampler) at the first batch requested.

    Lightning creates the training iterator when ``trainer.estimated_stepping_batches`` is
    first read (in ``configure_optimizers``), before a checkpoint's loop state is restored, and
    uses that iterator for the resumed epoch. A multi-process iterator draws its sampler's first
    indices as it is created, so the sampler would read a fresh run's position; deferring the
    start to the first ``next()`` lets it read the restored one.

    Examples:
        >>> read = []
        >>> loader = StartOnFirstBatchLoader(range(4), batch_size=2, collate_fn=read.extend)
        >>> batches = iter(loader)
        >>> read
        []
        >>> _ = next(batches)
        >>> read
        [0, 1]
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _StartOnFirstBatch(self)


class _StartOnFirstBatch(Iterator[Any]):
    def __init__(self, loader: StartOnFirstBatchLoader) -> None:
        self._loader = loader
        self._iterator: Iterator[Any] | None = None

    def __len__(self) -> int:
        return len(self._loader)

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = DataLoader.__iter__(self._loader)
        return next(self._iterator)
