"""Top-1/top-5 accuracy of an evaluation epoch over all processes, with torchmetrics.

The online probe and the kNN monitor update it with each batch's scores on the device (no host
synchronisation per batch); :meth:`EpochAccuracy.compute` sums the counts over processes, so
every rank gets the accuracy of the union of their samples. The counts live in this object,
which the callbacks rebuild at each epoch start: they are never part of a checkpoint.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multiclass_accuracy


def _accuracy(num_classes: int, k: int, device: torch.device) -> MulticlassAccuracy:
    # Micro average: correct / seen over all samples. validate_args=False: the checks of the
    # label values would synchronise the host on every batch.
    top_k = min(k, num_classes)  # fewer classes than k: every prediction is right
    metric = MulticlassAccuracy(num_classes, top_k=top_k, average="micro", validate_args=False)
    return metric.to(device)


def batch_top1(scores: Tensor, labels: Tensor) -> Tensor:
    """Top-1 accuracy of one batch, a tensor on the scores' device (0 for an empty batch).

    Examples:
        >>> batch_top1(torch.tensor([[2.0, 1.0], [2.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.5000)
    """
    if len(labels) == 0:  # torchmetrics cannot reshape an empty batch (the shape is on the host)
        return scores.new_zeros(())
    return multiclass_accuracy(
        scores, labels, scores.shape[1], average="micro", top_k=1, validate_args=False
    )


class EpochAccuracy:
    """Top-1 and top-5 accuracy (micro average) accumulated over an epoch.

    Callers leave unlabelled samples (label -1) out before :meth:`update`.

    Args:
        num_classes: number of classes of the scores.
        device: where the counts live (the scores' device).

    Examples:
        >>> accuracy = EpochAccuracy(3, torch.device("cpu"))
        >>> accuracy.update(torch.tensor([[3.0, 2, 1], [1, 2, 3]]), torch.tensor([1, 2]))
        >>> accuracy.update(torch.tensor([[1.0, 2, 3]]), torch.tensor([0]))
        >>> [round(float(a), 4) for a in accuracy.compute()]
        [0.3333, 1.0]
    """

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.top1 = _accuracy(num_classes, 1, device)
        self.top5 = _accuracy(num_classes, 5, device)

    def update(self, scores: Tensor, labels: Tensor) -> None:
        """Count one batch: ``scores`` ``(B, C)`` (logits or votes), ``labels`` ``(B,)``."""
        if len(labels) == 0:  # all unlabelled: nothing to count (torchmetrics would fail)
            return
        self.top1.update(scores, labels)
        self.top5.update(scores, labels)

    def compute(self) -> tuple[Tensor, Tensor]:
        """``(top1, top5)`` over every process's samples (a collective: all ranks call it)."""
        return self.top1.compute(), self.top5.compute()
