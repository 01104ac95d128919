"""Collapse monitor: the spread of the normalized embedding over the batch (SimSiam, §4)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_ssl.lightning_types import trainer_attributes


def embedding_std(z: Tensor | list[Tensor]) -> Tensor:
    """Std over the batch of the L2-normalized embedding, averaged over dimensions (and views).

    Chen & He, "Exploring Simple Siamese Representation Learning" (SimSiam), §4: a collapsed
    (constant) output gives 0; a healthy, spread-out output of dimension ``d`` gives about
    ``1 / sqrt(d)``. Computed in float32 (bf16 embeddings are cast).

    Shape: ``z``: (B, D) or a list of (B, D), one per view; returns a scalar.
    """
    views = [z] if isinstance(z, Tensor) else z
    stds = [F.normalize(v.detach().float(), dim=-1).std(dim=0).mean() for v in views]
    return torch.stack(stds).mean()


class CollapseMonitor(L.Callback):
    """Log ``train/z_std`` (see :func:`embedding_std`) and warn once when it nears collapse.

    Reads the ``embeddings`` that ``training_step`` returns (:meth:`SSLMethod.step_output`);
    a step without them is skipped. The value is computed only every ``every_n_steps``
    optimizer steps and logged as a tensor; the host reads it (for the warning) only then, and
    never again once it has warned. Under DDP each process measures its own batch; rank 0's
    value is logged. Which embedding each method passes is listed in the README (Metrics).

    Args:
        every_n_steps: interval in optimizer steps; ``None`` uses the Trainer's
            ``log_every_n_steps``, so the value is computed exactly when the logger writes.
        warn_ratio: warn when ``z_std < warn_ratio / sqrt(d)``.
    """

    def __init__(self, every_n_steps: int | None = None, warn_ratio: float = 0.1) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 or None, got {every_n_steps}")
        if not 0.0 < warn_ratio < 1.0:
            raise ValueError(f"warn_ratio must be in (0, 1), got {warn_ratio}")
        self.every_n_steps = every_n_steps
        self.warn_ratio = warn_ratio
        self._warned = False
        self._last_step = -1

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        interval = self.every_n_steps or max(1, trainer_attributes(trainer).log_every_n_steps)
        embeddings = outputs.get("embeddings") if isinstance(outputs, dict) else None
        step = trainer.global_step  # optimizer steps done, this batch's included
        if embeddings is None or step == 0 or step % interval or step == self._last_step:
            return  # also once per optimizer step under gradient accumulation
        self._last_step = step
        z_std = embedding_std(embeddings)
        pl_module.log("train/z_std", z_std, on_step=True, on_epoch=False)
        if not self._warned:
            dim = (embeddings if isinstance(embeddings, Tensor) else embeddings[0]).shape[-1]
            value, healthy = float(z_std), 1.0 / math.sqrt(dim)
            if value < self.warn_ratio * healthy:
                self._warned = True
                rank_zero_warn(
                    f"representation collapse: train/z_std = {value:.2e} at global step "
                    f"{trainer.global_step}, below {self.warn_ratio} x 1/sqrt({dim}) = "
                    f"{self.warn_ratio * healthy:.2e} (healthy is about {healthy:.2e})"
                )
