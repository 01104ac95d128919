"""What the offline evaluations share: typed saved hyperparameters, top-1/top-5 accuracy.

``LinearEvaluation`` and ``FineTune`` classify with a head over the pretrained encoder and log
``val/top1``, ``val/top5`` (``test/...`` under ``test``) from the metrics of
:func:`top_k_metrics`; ``KNNEvaluation`` shares the typed ``hparams`` of
:class:`EvaluationModule`.

Examples:
    >>> metrics = top_k_metrics(10)
    >>> sorted(metrics)
    ['test_top1', 'test_top5', 'val_top1', 'val_top5']
"""

from __future__ import annotations

from typing import cast

import lightning as L
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_ssl.lightning_types import AttributeDict, saved_hparams
from lightning_ssl.nn.backbones import feature_dim

TOP_K = (1, 5)


class EvaluationModule(L.LightningModule):
    """A LightningModule whose ``hparams`` are the saved ``__init__`` arguments, typed."""

    @property
    def hparams(self) -> AttributeDict:
        """The saved ``__init__`` arguments, read as attributes (``self.hparams.lr``)."""
        return saved_hparams(super().hparams)


def top_k_metrics(num_classes: int) -> nn.ModuleDict:
    """Top-1 and top-5 accuracy (top-k capped at ``num_classes``) for validation and test,
    named ``{stage}_top{k}`` (``val_top1``, ...)."""
    return nn.ModuleDict(
        {
            f"{stage}_top{k}": MulticlassAccuracy(
                num_classes, top_k=min(k, num_classes), average="micro"
            )
            for stage in ("val", "test")
            for k in TOP_K
        }
    )


class TopKClassifier(EvaluationModule):
    """An evaluation whose ``forward`` gives class logits, scored by ``self.metrics``
    (:func:`top_k_metrics`) on the validation and test splits."""

    metrics: nn.ModuleDict

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        images, labels = batch
        logits = self(images)
        for k in TOP_K:
            metric = cast(MulticlassAccuracy, self.metrics[f"{stage}_top{k}"])
            metric(logits, labels)
            self.log(f"{stage}/top{k}", metric, on_epoch=True, prog_bar=k == 1)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")


def output_dim(encoder: nn.Module, image_size: int) -> int:
    """The feature dimension of ``encoder``: its ``dim`` or, failing that, the width of its
    output on a zero batch of ``image_size`` images (``nn.backbones.feature_dim``)."""
    return feature_dim(encoder, image_size, attribute="dim")
