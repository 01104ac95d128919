"""Generators for a step's random draws (masks; the global generators libraries draw from),
seeded by the batch so that a resumed run repeats them exactly."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

from lightning_ssl.data.device import seeded_generator
from lightning_ssl.data.sampling import derive_seed
from lightning_ssl.lightning_types import trainer_attributes

_GLOBAL_STREAM = 0x474C4F42  # "GLOB": never one of the methods' own streams


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
    return seeded_generator(_batch_key(method, stream), device)


def seed_global_generators(method: L.LightningModule) -> None:
    """Seed torch's (every device), NumPy's and Python's global generators by (data seed, rank,
    batch number): what libraries draw from them inside a step (timm's stochastic depth and
    dropout, timm's Mixup/CutMix) repeats exactly when a run resumes, although no checkpoint
    holds those generators, and differs between processes and batches.

    Examples:
        >>> seed_global_generators(L.LightningModule())  # no Trainer: nothing to do
    """
    if method._trainer is None:
        return
    seed = derive_seed(*_batch_key(method, _GLOBAL_STREAM))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _batch_key(method: L.LightningModule, stream: int) -> tuple[int, int, int, int]:
    """(data seed, rank, batches started so far, ``stream``) of the running fit."""
    trainer = method.trainer
    data_hparams = getattr(trainer_attributes(trainer).datamodule, "hparams", None) or {}
    seed = int(data_hparams.get("seed", 0))
    batch = trainer.fit_loop.epoch_loop.batch_progress.total.ready
    return seed, trainer.global_rank, batch, stream
