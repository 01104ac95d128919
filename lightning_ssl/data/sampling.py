"""The training order: a function of (seed, epoch) only, resumable at any batch.

:func:`training_sampler` builds the sampler of every DataModule's training loader; its position
comes from :func:`training_position`, the trainer's count of processed batches (restored from
checkpoints), so a run resumed mid-epoch sees exactly the batches it had not seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset, DistributedSampler

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

Position = tuple[int, int, int]


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` whose position is read from the training progress.

    ``position()`` returns ``(epoch, start, stop)``: the epoch whose permutation to use and the
    slice of this process's samples still to draw (or ``None`` to behave as a plain sampler).
    With the trainer's count of processed batches as the source, the batch at global index
    ``g`` is always the same one, so a run resumed from any checkpoint (mid-epoch included)
    trains on exactly the batches the uninterrupted run would have. Lightning alone restarts a
    plain loader at the beginning of its epoch (some images twice, others never), and with
    worker processes builds the iterator before calling ``set_epoch``.

    Example:
        >>> sampler = ResumableSampler(range(8), num_replicas=1, rank=0, shuffle=False,
        ...                            position=lambda: (0, 6, 8))
        >>> list(sampler)
        [6, 7]
    """

    def __init__(
        self,
        *args: Any,
        position: Callable[[], Position | None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def __iter__(self) -> Iterator[int]:
        where = self.position()
        if where is None:
            return super().__iter__()
        epoch, start, stop = where
        self.set_epoch(epoch)
        return iter(list(super().__iter__())[start:stop])


def training_sampler(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    trainer: Trainer | None,
    position: Callable[[], Position | None],
) -> ResumableSampler:
    """The shuffling, last-batch-dropping sampler of this process's share of ``dataset``.

    Raises:
        ValueError: ``batch_size`` times the number of processes exceeds the dataset, so no
            batch would be produced.

    Example:
        >>> sampler = training_sampler(range(8), 4, seed=0, trainer=None, position=lambda: None)
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
        position=position,
    )


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
    processed = trainer.fit_loop.epoch_loop.batch_progress.total.processed
    epoch, offset = divmod(processed, max(1, per_epoch))
    return epoch, offset * batch_size, per_epoch * batch_size
