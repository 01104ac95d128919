"""Offline weighted kNN evaluation of a pretraining checkpoint (InstDisc, DINO protocol).

Examples:
    ``lightning-ssl validate --config configs/eval/knn/cifar10.yaml
    --model.init_args.pretrained runs/simclr-cifar10/checkpoints/last.ckpt
    --data.init_args.data_dir data/cifar10``
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from lightning_ssl.eval.classifier import EvaluationModule
from lightning_ssl.eval.data import encode_dataset
from lightning_ssl.eval.pretrained import feature_encoder, frozen, load_pretrained
from lightning_ssl.lightning_types import eval_data
from lightning_ssl.nn.knn import knn_predict


class KNNEvaluation(EvaluationModule):
    """Classify the validation split by a weighted kNN vote over the whole training split.

    At the start of a validation (or test) epoch the training split under the evaluation
    transform (``datamodule.train_eval_dataloader()``) is encoded by the checkpoint's frozen
    encoder, each process taking every ``world_size``-th image, and gathered so that every rank
    holds the whole L2-normalized bank. Each validation image's ``k`` nearest bank features
    (cosine) vote with weight ``exp(s / T)`` (:func:`~lightning_ssl.nn.knn.knn_predict`,
    scanning the bank in chunks). Logs ``knn/top1`` and ``knn/top5``, accumulated over the
    whole split on every process. Run it with ``validate`` (or ``test``); it has nothing to fit.
    The float32 bank takes ``N x D x 4`` bytes on every device (ImageNet with a ResNet-50:
    1.28M x 2048 x 4 = 10.5 GB).

    Args:
        pretrained: path of a Lightning checkpoint written by any :class:`SSLMethod`.
        k: neighbours (InstDisc and lightly's CIFAR protocol: 200; DINO: 20).
        temperature: vote temperature ``T`` (0.1; DINO: 0.07).
        chunk_size: bank rows compared at once (memory ``O(batch * (k + chunk_size))``).
        num_classes: classes of the dataset (linked from the data by the CLI).
        image_size: linked from the data (unused).
        num_global_crops: linked from the data (unused).
        num_local_crops: linked from the data (unused).

    Examples:
        >>> model = KNNEvaluation("last.ckpt", k=20, temperature=0.07)  # doctest: +SKIP
        >>> L.Trainer().validate(model, datamodule=dm)  # doctest: +SKIP
    """

    def __init__(
        self,
        pretrained: str,
        k: int = 200,
        temperature: float = 0.1,
        chunk_size: int = 16384,
        num_classes: int = 1000,
        image_size: int = 224,
        num_global_crops: int = 2,
        num_local_crops: int = 0,
    ) -> None:
        super().__init__()
        if k < 1 or temperature <= 0 or chunk_size < 1:
            raise ValueError("KNNEvaluation needs k >= 1, temperature > 0 and chunk_size >= 1")
        self.save_hyperparameters()
        method = load_pretrained(pretrained)
        self.method_name = type(method).__name__
        self.encoder = frozen(feature_encoder(method))
        self.num_classes = num_classes
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        self._bank: tuple[Tensor, Tensor] | None = None

    def train(self, mode: bool = True) -> KNNEvaluation:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """L2-normalized features of ``images``."""
        return F.normalize(self.encoder(images).float(), dim=1)

    def build_bank(self) -> tuple[Tensor, Tensor]:
        """Normalized features and labels of the whole training split (on every process)."""
        loader = eval_data(self.trainer).train_eval_dataloader()
        context = self.trainer.precision_plugin.forward_context
        return encode_dataset(self.encoder, loader, self.device, normalize=True, context=context)

    def _start(self) -> None:
        self._bank = self.build_bank()

    def _step(self, batch: tuple[Tensor, Tensor]) -> None:
        assert self._bank is not None, "the bank is built at the start of the epoch"
        images, labels = batch
        scores = knn_predict(
            self(images),
            *self._bank,
            self.num_classes,
            self.hparams.k,
            self.hparams.temperature,
            self.hparams.chunk_size,
        )
        self.top1(scores, labels)
        self.top5(scores, labels)
        self.log("knn/top1", self.top1, on_epoch=True, prog_bar=True)
        self.log("knn/top5", self.top5, on_epoch=True)

    def on_validation_epoch_start(self) -> None:
        self._start()

    def on_test_epoch_start(self) -> None:
        self._start()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch)

    def on_validation_epoch_end(self) -> None:
        self._bank = None

    def on_test_epoch_end(self) -> None:
        self._bank = None

    def configure_optimizers(self) -> None:
        """Nothing to train."""
        return None
