"""CPC's InfoNCE over a grid of patch vectors (van den Oord et al., 2018; Hénaff et al., 2020).

Negatives are every other patch vector of the *global* batch: the targets are gathered across
processes with gradients (:func:`lightning_ssl.distributed.gather`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.losses._precision import float32


@float32
def cpc_loss(predictions: Tensor, targets: Tensor) -> Tensor:
    """InfoNCE of each prediction ``k`` rows ahead against all patch vectors of the batch.

    ``predictions[k - 1, b, i, j]`` (``k = 1 .. K``) predicts ``targets[b, i + k, j]``; rows with
    ``i + k >= H`` have no target and are left out. With ``z_l`` every target vector of the
    global batch (all images, all positions, all processes; Hénaff et al., 2020, eq. 2)::

        p = predictions[k - 1, b, i, j]
        l(b, i, j, k) = -log exp(p . z[b, i + k, j]) / sum_l exp(p . z_l)

    and the loss is the mean of ``l`` over all predictions of this process (the paper's sum over
    ``i, j, k``, divided by their count; every process has the same count, so DDP's average of
    the processes' means is the global mean).

    Args:
        predictions: ``(K, B, H, W, D)`` with ``K < H``.
        targets: ``(B, H, W, D)`` patch vectors of this process's images.

    Returns:
        Scalar loss.

    Examples:
        >>> cpc_loss(torch.randn(2, 3, 4, 4, 8), torch.randn(3, 4, 4, 8)).shape
        torch.Size([])
    """
    steps, batch, height, width, dim = predictions.shape
    if targets.shape != (batch, height, width, dim):
        raise ValueError(f"targets {tuple(targets.shape)} do not fit {tuple(predictions.shape)}")
    if steps >= height:
        raise ValueError(f"{steps} prediction steps need more than {height} rows")
    keys = distributed.gather(targets).flatten(0, 2)  # (N * H * W, D), image-major
    image = distributed.rank() * batch + torch.arange(batch, device=targets.device)
    column = torch.arange(width, device=targets.device)
    total = predictions.new_zeros(())
    for k in range(1, steps + 1):
        query = predictions[k - 1, :, : height - k].reshape(-1, dim)
        row = torch.arange(k, height, device=targets.device)
        labels = (image[:, None, None] * height + row[None, :, None]) * width + column
        total = total + F.cross_entropy(query @ keys.T, labels.flatten(), reduction="sum")
    count = batch * width * sum(height - k for k in range(1, steps + 1))
    return total / count
