"""Generators for draws a method makes on the batch's device (masks), resumable exactly."""

from __future__ import annotations

import lightning as L
import torch

from lightning_ssl.data.device import seeded_generator
from lightning_ssl.lightning_types import trainer_attributes


def batch_generator(
    method: L.LightningModule, device: torch.device, stream: int
) -> torch.Generator:
    """A generator seeded by (data seed, rank, batch number, ``stream``): a resumed run draws
    the same numbers again (the loop restores the batch count), every process its own, and
    two streams (masks, the batched views) never share numbers. Seed 0 outside a Trainer.

    Examples:
        >>> g = batch_generator(L.LightningModule(), torch.device("cpu"), stream=1)  # no Trainer
        >>> torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=g.manual_seed(0)))
        True
    """
    if method._trainer is None:
        return torch.Generator(device).manual_seed(0)
    trainer = method.trainer
    data_hparams = getattr(trainer_attributes(trainer).datamodule, "hparams", None) or {}
    seed = int(data_hparams.get("seed", 0))
    batch = trainer.fit_loop.epoch_loop.batch_progress.total.ready
    return seeded_generator((seed, trainer.global_rank, batch, stream), device)
