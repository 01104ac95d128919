"""Full fine-tuning: the pretrained encoder unfrozen, with a new classifier, trained end to end.

MAE's protocol (He et al., 2022, appendix A.1; facebookresearch/mae ``main_finetune.py``,
``FINETUNE.md``), after BEiT/DeiT: AdamW (betas 0.9/0.999) at ``blr`` 5e-4 per 256 images,
weight decay 0.05 (none on biases, norms, position embedding and class token), layer-wise
learning-rate decay 0.65 (ViT-B; 0.75 ViT-L), 5 warm-up epochs then a cosine to ``min_lr``,
100 epochs (ViT-B), drop path 0.1, RandAugment ``rand-m9-mstd0.5-inc1``, random erasing 0.25,
Mixup 0.8 / CutMix 1.0 with label smoothing 0.1, classification from the average patch token
through a new LayerNorm (``global_pool``). The same module runs SimCLR's semi-supervised
protocol (Nesterov SGD on 1% or 10% of the labels, no regularisation: ``label_fraction`` or
``subset_file``, and the other options off).

Examples:
    ``lightning-ssl fit --config configs/eval/finetune/cifar10.yaml
    --model.init_args.pretrained runs/mae-cifar10/checkpoints/last.ckpt
    --data.init_args.data_dir data/cifar10``
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from timm.data import Mixup
from torch import Tensor, nn

from lightning_ssl.data import SSLDataModule
from lightning_ssl.eval.classifier import TopKClassifier, output_dim, top_k_metrics
from lightning_ssl.eval.data import LinearEvalDataModule, finetune_train_transform
from lightning_ssl.eval.finetune_encoder import is_vit, set_drop_path, use_global_pool
from lightning_ssl.eval.layer_decay import check_layer_decay, layer_decay_groups
from lightning_ssl.eval.pretrained import feature_encoder, load_pretrained
from lightning_ssl.lightning_types import trainer_attributes
from lightning_ssl.methods.batch_seed import seed_global_generators
from lightning_ssl.nn.backbones import Backbone
from lightning_ssl.optim import ScalingRule, scaled_lr
from lightning_ssl.schedules import linear_warmup_cosine


class FineTune(TopKClassifier):
    """Fine-tune the encoder of a pretraining checkpoint of any method, with a linear classifier.

    The checkpoint is loaded like :class:`~lightning_ssl.eval.linear.LinearEvaluation` loads it
    (its own method class, no key renamed, the encoder ``extract_features`` uses); every encoder
    weight then trains (BatchNorm statistics too), the encoder in training mode. Reports
    ``val/top1`` and ``val/top5`` (``test/...`` when testing) over the whole split.

    Args:
        pretrained: path of a Lightning checkpoint written by any :class:`SSLMethod`.
        optimizer: ``adamw`` (MAE) or ``sgd`` (SimCLR's semi-supervised protocol).
        lr: learning rate for a batch of 256 images (MAE's ``blr``), scaled by ``lr_scaling``.
        lr_scaling: ``linear`` (``lr * B / 256``), ``sqrt`` or ``none``.
        min_lr: absolute learning rate the cosine ends at (MAE: 1e-6), scaled per layer.
        betas: AdamW's betas.
        momentum: SGD momentum.
        nesterov: Nesterov momentum (SGD).
        weight_decay: weight decay of weights with two or more dimensions.
        layer_decay: layer-wise LR decay (1.0: none); see :mod:`~lightning_ssl.eval.layer_decay`.
        warmup_epochs: linear warm-up before the cosine decay.
        drop_path_rate: stochastic depth of the last block (timm ViTs and ResNets).
        global_pool: ViTs: classify the average patch token through a new LayerNorm (MAE);
            ``False`` keeps the class token after the final norm.
        mixup: Mixup's alpha (0: off).
        cutmix: CutMix's alpha (0: off).
        mixup_prob: probability of mixing a batch when Mixup or CutMix is on.
        mixup_switch_prob: probability of CutMix instead of Mixup when both are on.
        label_smoothing: label smoothing of the targets (mixed or not).
        auto_augment: timm's RandAugment policy (``None``: no RandAugment).
        random_erase: probability of random erasing (0: off).
        crop_scale: area range of the random resized crop.
        interpolation: interpolation of the random resized crop (``bicubic``: MAE).
        head_init_std: standard deviation of the classifier's initial weights (MAE: 2e-5; 0:
            zeros, SimCLR's ``zero_init_logits_layer``).
        label_fraction: train on this share of the labels, the same count per class (1%, 10%).
        subset_file: train on the images this file names (SimCLR's ImageNet subsets).
        num_classes: classes of the dataset (linked from the data by the CLI).
        image_size: linked from the data.
        num_global_crops: linked from the data (unused).
        num_local_crops: linked from the data (unused).

    Examples:
        >>> dm = CIFAR10DataModule("data/cifar10", batch_size=256)  # doctest: +SKIP
        >>> model = FineTune("last.ckpt", num_classes=10, image_size=32)  # doctest: +SKIP
        >>> L.Trainer(max_epochs=100).fit(model, model.wrap_datamodule(dm))  # doctest: +SKIP
    """

    def __init__(
        self,
        pretrained: str,
        optimizer: Literal["adamw", "sgd"] = "adamw",
        lr: float = 5e-4,
        lr_scaling: ScalingRule = "linear",
        min_lr: float = 1e-6,
        betas: tuple[float, float] = (0.9, 0.999),
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.05,
        layer_decay: float = 0.65,
        warmup_epochs: float = 5.0,
        drop_path_rate: float = 0.1,
        global_pool: bool = True,
        mixup: float = 0.8,
        cutmix: float = 1.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        random_erase: float = 0.25,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        interpolation: str = "bicubic",
        head_init_std: float = 2e-5,
        label_fraction: float | None = None,
        subset_file: str | None = None,
        num_classes: int = 1000,
        image_size: int = 224,
        num_global_crops: int = 2,
        num_local_crops: int = 0,
    ) -> None:
        super().__init__()
        check_layer_decay(layer_decay)
        self.save_hyperparameters()
        method = load_pretrained(pretrained)
        self.method_name = type(method).__name__
        self.encoder = _unfrozen_encoder(feature_encoder(method), drop_path_rate, global_pool)
        dim = output_dim(self.encoder, int(method.hparams.get("image_size", image_size)))
        self.head = nn.Linear(dim, num_classes)
        if head_init_std > 0:
            nn.init.trunc_normal_(self.head.weight, std=head_init_std)  # main_finetune.py:257
        else:  # SimCLR's zero_init_logits_layer
            nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.num_classes = num_classes
        self.mixup = _mixup(self.hparams)
        self.metrics = top_k_metrics(num_classes)
        self.effective_lr: float | None = None

    def wrap_datamodule(self, data: SSLDataModule) -> LinearEvalDataModule:
        """The labelled loaders this fine-tuning trains on, over ``data``'s splits."""
        hp = self.hparams
        transform = finetune_train_transform(
            data.image_size,
            data.mean,
            data.std,
            hp.auto_augment,
            hp.random_erase,
            (hp.crop_scale[0], hp.crop_scale[1]),
            hp.interpolation,
        )
        return LinearEvalDataModule(
            data,
            train_transform=transform,
            label_fraction=hp.label_fraction,
            subset_file=hp.subset_file,
        )

    def forward(self, images: Tensor) -> Tensor:
        """Class logits of ``images``."""
        return self.head(self.encoder(images))

    def _backbone_model(self) -> nn.Module:
        """The timm/torchvision model inside the encoder (whose parameter names layers read)."""
        return self.encoder.model if isinstance(self.encoder, Backbone) else self.encoder

    # ----------------------------------------------------------------- training
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed the global generators per batch (drop path, Mixup/CutMix): exact resume."""
        seed_global_generators(self)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        if isinstance(images, list):
            raise TypeError(
                "FineTune got the pretraining views: train it on "
                "model.wrap_datamodule(datamodule) (the CLI does so), not on the DataModule"
            )
        if self.mixup is not None:
            images, targets = self.mixup(images, labels)
            logits = self(images)
            # timm's SoftTargetCrossEntropy: the mixed, smoothed targets are distributions.
            loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = self(images)
            loss = F.cross_entropy(
                logits.float(), labels, label_smoothing=self.hparams.label_smoothing
            )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        hp, trainer = self.hparams, self.trainer
        loader = trainer.train_dataloader
        if loader is None:  # not loaded yet by the fit loop: the DataModule's
            datamodule = trainer_attributes(trainer).datamodule
            assert datamodule is not None, "FineTune trains on a DataModule"
            loader = datamodule.train_dataloader()
        batch = loader.batch_size * trainer.world_size * trainer.accumulate_grad_batches
        lr = self.effective_lr = scaled_lr(hp.lr, batch, hp.lr_scaling)
        rank_zero_info(
            f"FineTune of the {self.method_name} encoder: lr {hp.lr} x ({hp.lr_scaling} rule, "
            f"global batch {batch}) = {lr:.4g}, layer decay {hp.layer_decay}"
        )
        groups = layer_decay_groups(
            self._backbone_model(), self.head, hp.weight_decay, hp.layer_decay
        )
        for group in groups:
            group["lr"] = lr * group["lr_scale"]
        optimizer: torch.optim.Optimizer
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr, hp.momentum, nesterov=hp.nesterov)
        else:
            optimizer = torch.optim.AdamW(groups, lr, betas=tuple(hp.betas))
        total = int(trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, len(loader) // trainer.accumulate_grad_batches)
        warmup = round(hp.warmup_epochs * steps_per_epoch)
        floor = min(1.0, hp.min_lr / lr) if lr > 0 else 0.0
        # Shifted by one so that neither the first step (warm-up from 0) nor the last is a no-op.
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: linear_warmup_cosine(step + 1, warmup, total + 1, end=floor)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def _unfrozen_encoder(encoder: nn.Module, drop_path_rate: float, global_pool: bool) -> nn.Module:
    """The pretrained encoder with every weight trainable (MAE trains the position embedding
    its pretraining kept fixed), MAE's global pool (ViTs) and stochastic depth."""
    model = encoder.model if isinstance(encoder, Backbone) else encoder
    if global_pool and is_vit(model):
        use_global_pool(model)
    set_drop_path(model, drop_path_rate)
    encoder.requires_grad_(True)
    return encoder.train()


def _mixup(hp: Any) -> Mixup | None:
    """timm's Mixup/CutMix (label smoothing included in its targets), or ``None`` when off."""
    if hp.mixup <= 0 and hp.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=hp.mixup,
        cutmix_alpha=hp.cutmix,
        prob=hp.mixup_prob,
        switch_prob=hp.mixup_switch_prob,
        mode="batch",
        label_smoothing=hp.label_smoothing,
        num_classes=hp.num_classes,
    )
