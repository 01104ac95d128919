"""Linear evaluation: a linear classifier trained on a frozen pretrained encoder.

The protocol of SimCLR (appendix B), MoCo v1/v2 and BYOL (appendix C.1): the encoder of a
pretraining checkpoint is frozen (weights and BatchNorm statistics), a linear layer on its
features is trained with cross-entropy on the training split augmented by random resized crops
and flips, and top-1/top-5 accuracy is measured on the centre-cropped validation split. MoCo v3
and MAE put a BatchNorm without affine parameters before the linear layer (``batch_norm``).

Examples:
    ``lightning-ssl fit --config configs/eval/linear/cifar10.yaml
    --model.init_args.pretrained runs/simclr-cifar10/checkpoints/last.ckpt
    --data.init_args.data_dir data/cifar10``
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn

from lightning_ssl.data import SSLDataModule
from lightning_ssl.eval.classifier import TopKClassifier, output_dim, top_k_metrics
from lightning_ssl.eval.data import LinearEvalDataModule, encode_dataset
from lightning_ssl.eval.pretrained import feature_encoder, frozen, load_pretrained
from lightning_ssl.lars import LARS, LARS_PRESETS
from lightning_ssl.lightning_types import eval_data, trainer_attributes
from lightning_ssl.optim import ScalingRule, parameter_groups, scaled_lr
from lightning_ssl.schedules import linear_warmup_cosine


class LinearEvaluation(TopKClassifier):
    """Train a linear head on the frozen features of a pretraining checkpoint of any method.

    The checkpoint's method is rebuilt with its own class (read from the checkpoint) and the
    module behind its ``extract_features`` becomes the frozen encoder: no key is renamed. The
    encoder stays in eval mode during training. Reports ``val/top1`` and ``val/top5``
    (``test/...`` when testing), accumulated over the whole split on every process.

    Train with a :class:`~lightning_ssl.eval.data.LinearEvalDataModule` around the pretraining
    DataModule (:meth:`wrap_datamodule`; the CLI does it for ``fit``).

    Args:
        pretrained: path of a Lightning checkpoint written by any :class:`SSLMethod`.
        optimizer: ``sgd`` (SimCLR, MoCo, BYOL), ``lars`` (SimCLR at batch 4096) or ``adamw``.
        lr: learning rate for a batch of 256 images, scaled by ``lr_scaling``.
        lr_scaling: ``linear`` (``lr * B / 256``), ``sqrt`` or ``none`` (``lr`` as given).
        momentum: SGD/LARS momentum.
        nesterov: Nesterov momentum (SimCLR's linear protocol).
        weight_decay: weight decay of the head.
        warmup_epochs: linear warm-up before the cosine decay to zero.
        batch_norm: a BatchNorm without affine parameters before the linear layer (MoCo v3, MAE).
        augment: random resized crop and flip on the training images; ``False`` uses the
            evaluation transform.
        crop_scale: area range of the random resized crop.
        cache_features: encode the training split once (needs ``augment=False``); each epoch
            then trains on the cached features, which makes evaluation on CPU fast.
        num_classes: classes of the dataset (linked from the data by the CLI).
        image_size: linked from the data (unused).
        num_global_crops: linked from the data (unused).
        num_local_crops: linked from the data (unused).

    Examples:
        >>> dm = CIFAR10DataModule("data/cifar10", batch_size=256)  # doctest: +SKIP
        >>> model = LinearEvaluation("last.ckpt", lr=0.1, num_classes=10)  # doctest: +SKIP
        >>> L.Trainer(max_epochs=100).fit(model, model.wrap_datamodule(dm))  # doctest: +SKIP
    """

    def __init__(
        self,
        pretrained: str,
        optimizer: Literal["sgd", "lars", "adamw"] = "sgd",
        lr: float = 0.1,
        lr_scaling: ScalingRule = "linear",
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        warmup_epochs: float = 0.0,
        batch_norm: bool = False,
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        cache_features: bool = False,
        num_classes: int = 1000,
        image_size: int = 224,
        num_global_crops: int = 2,
        num_local_crops: int = 0,
    ) -> None:
        super().__init__()
        if cache_features and augment:
            raise ValueError("cache_features needs augment=False: augmented features change")
        self.save_hyperparameters()
        method = load_pretrained(pretrained)
        self.method_name = type(method).__name__
        self.encoder = frozen(feature_encoder(method))
        dim = output_dim(self.encoder, int(method.hparams.get("image_size", image_size)))
        linear = nn.Linear(dim, num_classes)
        nn.init.normal_(linear.weight, std=0.01)  # MoCo v3 / MAE initialisation
        nn.init.zeros_(linear.bias)
        norm = nn.BatchNorm1d(dim, affine=False) if batch_norm else nn.Identity()
        self.head = nn.Sequential(norm, linear)
        self.num_classes = num_classes
        self.metrics = top_k_metrics(num_classes)
        self._cache: Tensor | None = None
        self.effective_lr: float | None = None

    def wrap_datamodule(self, data: SSLDataModule) -> LinearEvalDataModule:
        """The labelled loaders this evaluation trains on, over ``data``'s splits."""
        hp = self.hparams
        return LinearEvalDataModule(data, hp.augment, hp.crop_scale, hp.cache_features)

    def train(self, mode: bool = True) -> LinearEvaluation:
        super().train(mode)
        self.encoder.eval()  # frozen BatchNorm statistics, no dropout
        return self

    def forward(self, images: Tensor) -> Tensor:
        """Class logits of ``images``."""
        with torch.no_grad():
            features = self.encoder(images)
        return self.head(features.float())

    # ----------------------------------------------------------------- training
    def on_train_start(self) -> None:
        if self.hparams.cache_features and self._cache is None:
            loader = eval_data(self.trainer).train_eval_dataloader()
            context = self.trainer.precision_plugin.forward_context
            self._cache, _ = encode_dataset(self.encoder, loader, self.device, context=context)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, labels = batch
        if isinstance(inputs, list):
            raise TypeError(
                "LinearEvaluation got the pretraining views: train it on "
                "model.wrap_datamodule(datamodule) (the CLI does so), not on the DataModule"
            )
        if inputs.ndim == 1:  # indices into the feature cache
            assert self._cache is not None, "cache_features: the cache is built in on_train_start"
            logits = self.head(self._cache[inputs])
        else:
            logits = self(inputs)
        loss = F.cross_entropy(logits, labels)
        top1 = (logits.argmax(1) == labels).float().mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/top1", top1)
        return loss

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        hp, trainer = self.hparams, self.trainer
        total = int(trainer.estimated_stepping_batches)
        loader = trainer.train_dataloader
        if loader is None:  # not loaded yet by the fit loop: the DataModule's
            datamodule = trainer_attributes(trainer).datamodule
            assert datamodule is not None, "LinearEvaluation trains on a DataModule"
            loader = datamodule.train_dataloader()
        batch = loader.batch_size * trainer.world_size
        self.effective_lr = scaled_lr(hp.lr, batch * trainer.accumulate_grad_batches, hp.lr_scaling)
        lr = self.effective_lr
        rank_zero_info(
            f"LinearEvaluation of the {self.method_name} encoder: lr {hp.lr} x ({hp.lr_scaling} "
            f"rule, global batch {batch * trainer.accumulate_grad_batches}) = {lr:.4g}"
        )
        params = list(self.head.parameters())
        if hp.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr, hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.nesterov
            )
        elif hp.optimizer == "lars":
            # MAE's/MoCo v3's LARS: the weight is adapted even without weight decay (timm's
            # Lars adapted nothing at weight_decay 0, i.e. ran plain SGD); the bias is not.
            groups = parameter_groups(self.head.named_parameters(), hp.weight_decay)
            options = LARS_PRESETS["mocov3"].optimizer_options()
            optimizer = LARS(groups, lr, hp.momentum, weight_decay=hp.weight_decay, **options)
        else:
            optimizer = torch.optim.AdamW(params, lr, weight_decay=hp.weight_decay)
        steps_per_epoch = max(1, len(loader) // trainer.accumulate_grad_batches)
        warmup = round(hp.warmup_epochs * steps_per_epoch)
        # Shifted by one so that neither the first step (warm-up from 0) nor the last (cosine
        # at 0) is a no-op.
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: linear_warmup_cosine(step + 1, warmup, total + 1)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
