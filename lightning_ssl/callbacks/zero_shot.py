"""Zero-shot classification monitor for image-text models (CLIP section 3.1.4): prompts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl.callbacks.accuracy import EpochAccuracy
from lightning_ssl.data.tokenizer import ZERO_SHOT_TEMPLATES, fill_templates, tokenize
from lightning_ssl.lightning_types import trainer_attributes

_TEXT_CHUNK = 256  # captions encoded at once when building the classifier


class _ImageTextModel(Protocol):
    """What the monitor calls on the model (``methods.clip.CLIP``; a callback cannot import it)."""

    def embed_image(self, features: Tensor) -> Tensor: ...


class ZeroShotMonitor(L.Callback):
    """Classify the validation images by their nearest class prompt; log ``val/zeroshot_top1``.

    Each class's weight is the normalised mean of the text embeddings of its prompts, every
    template filled with the class name (CLIP's prompt ensembling, section 3.1.4); an image's
    prediction is the class of highest cosine similarity to its embedding. The model provides
    ``encode_text(tokens)``, ``embed_image(features)`` and ``hparams.context_length``; the
    features are those ``validation_step`` returns. Accuracy is counted by
    :class:`~lightning_ssl.callbacks.accuracy.EpochAccuracy` (torchmetrics, as the probe and the
    kNN monitor), summed over processes; labels below 0 are left out.

    Args:
        templates: prompt templates, each with one ``{}`` (default: CLIP's 7-prompt ensemble).
        class_names: names in label order (default: the DataModule's ``class_names``).
        every_n_epochs: evaluate at validations of epochs divisible by this.

    Examples:
        >>> monitor = ZeroShotMonitor(templates=["a photo of a {}."])
        >>> # Trainer(callbacks=[monitor]) with a CLIP model and an ImageTextDataModule
    """

    def __init__(
        self,
        templates: Sequence[str] = ZERO_SHOT_TEMPLATES,
        class_names: Sequence[str] | None = None,
        every_n_epochs: int = 1,
    ) -> None:
        fill_templates(templates, ["check"])  # one '{}' per template, else a clear error
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.templates, self.class_names = list(templates), class_names
        self.every_n_epochs = every_n_epochs
        self._classifier: Tensor | None = None
        self._accuracy: EpochAccuracy | None = None

    def _names(self, trainer: L.Trainer) -> list[str]:
        datamodule = trainer_attributes(trainer).datamodule
        names = self.class_names or getattr(datamodule, "class_names", None)
        if not names:
            raise ValueError(
                "ZeroShotMonitor needs class names: use an ImageTextDataModule (its val_dir "
                "classes) or pass class_names"
            )
        return list(names)

    @torch.no_grad()
    def class_embeddings(self, pl_module: Any, names: Sequence[str]) -> Tensor:
        """``(C, D)`` normalised prompt-ensemble embedding of every class."""
        prompts = fill_templates(self.templates, names)
        tokens = tokenize(prompts, pl_module.hparams.context_length).to(pl_module.device)
        chunks = [pl_module.encode_text(t).float() for t in tokens.split(_TEXT_CHUNK)]
        per_prompt = torch.cat(chunks).view(len(names), len(self.templates), -1)
        return F.normalize(F.normalize(per_prompt, dim=-1).mean(dim=1), dim=-1)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._classifier, self._accuracy = None, None
        if (trainer.current_epoch + 1) % self.every_n_epochs and not trainer.sanity_checking:
            return
        self._classifier = self.class_embeddings(pl_module, self._names(trainer))
        self._accuracy = EpochAccuracy(len(self._classifier), pl_module.device)

    @torch.no_grad()
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._classifier is None or self._accuracy is None:
            return
        embed_image = cast(_ImageTextModel, pl_module).embed_image
        images = embed_image(outputs["features"].float()).float()
        labels = batch[1]
        keep = labels >= 0
        self._accuracy.update(images[keep] @ self._classifier.T, labels[keep])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        accuracy, self._classifier, self._accuracy = self._accuracy, None, None
        if accuracy is None or trainer.sanity_checking:
            return
        top1, top5 = accuracy.compute()  # summed over processes: every rank calls it
        pl_module.log("val/zeroshot_top1", top1, sync_dist=False, rank_zero_only=False)
        pl_module.log("val/zeroshot_top5", top5, sync_dist=False, rank_zero_only=False)
