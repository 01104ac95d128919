"""I-JEPA (Assran et al., 2023): predict the representations of target blocks from a context."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lightning_ssl.callbacks import EMA
from lightning_ssl.data.masking import (
    MultiBlockMasks,
    equal_length_indices,
    gather_tokens,
    multiblock_masks,
)
from lightning_ssl.losses.ijepa import IJEPALossName, ijepa_loss
from lightning_ssl.losses.vicreg import variance_covariance
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.methods.batch_seed import batch_generator
from lightning_ssl.methods.single_view import require_one_view
from lightning_ssl.nn.ijepa import (
    IJEPAPredictor,
    context_tokens,
    ijepa_init_,
    patch_tokens,
    use_ijepa_position_embedding,
)
from lightning_ssl.nn.mae import vit_patch_size
from lightning_ssl.nn.teacher import frozen_copy
from lightning_ssl.optim import OptimizerName, ScalingRule
from lightning_ssl.schedules import cosine_schedule
from lightning_ssl.validation import InvalidValueError, check_heads

#: The official encoder's layout in timm's terms: no class token, every token normed, averaged
#: (without a norm of the average) for evaluation.
OFFICIAL_VIT = {"class_token": False, "global_pool": "avg", "fc_norm": False}
#: Mixed into the mask generator's seed so masks and the batched views draw different numbers.
_MASK_STREAM = 0x4A455041


class IJEPA(SSLMethod):
    """Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture.

    Per batch, one target block size and one context block size are drawn; per image, ``M``
    target blocks and a large context block without the targets' patches
    (:func:`~lightning_ssl.data.masking.multiblock_masks`). The context encoder (the ViT) sees
    only the context patches; the target encoder (an EMA of it, momentum linear
    ``tau_base`` -> ``tau_final`` over the run) sees the whole image, and its patch tokens,
    layer-normalised, at each target block are the targets; the narrow predictor fills one mask
    token per target patch (with that patch's position embedding) and predicts them from the
    context. Weight decay follows a cosine ``weight_decay`` -> ``weight_decay_end``; the LR
    warms up linearly from ``warmup_start_ratio x`` the peak, then a cosine to
    ``min_lr_ratio x`` the peak (official ``helper.init_opt``).

    Masks come from a generator seeded by (data seed, rank, batch number): a resumed run
    repeats them. Evaluation (online probe, kNN, ``extract_features``) reads the target
    encoder's patch tokens of the whole image, averaged (I-JEPA has no class token; its linear
    probe averages the target encoder's output); the probe trains on the same average, which
    the step computes anyway.

    Args:
        num_targets: target blocks per image (official: 4).
        target_scale: fraction of the grid one target block covers (0.15, 0.2).
        target_aspect: target blocks' aspect ratio range (0.75, 1.5).
        context_scale: fraction of the grid the context block covers before the targets are
            removed (0.85, 1.0); its aspect ratio is 1.
        min_keep: a context keeps more than this many patches (official: 10), else redrawn.
        predictor_dim: predictor width (official ViT-H/14: 384).
        predictor_depth: predictor blocks (official ViT-H/14: 12).
        predictor_num_heads: predictor heads; ``None``: the encoder's (as the official).
        loss: ``smooth_l1`` (the official code) or ``mse`` (the paper's L2, Eq. 1).
        tau_base: target-encoder momentum at step 0 (0.996).
        tau_final: momentum at the last step (1.0), reached linearly.
        weight_decay_end: weight decay at the last step (0.4).
        warmup_start_ratio: LR at the warm-up's start over the peak (official: 0.0002 / 0.001).
        sincos_pos_embed: the encoder's fixed 2-D sin-cos position embedding (official).
        backbone_kwargs: the ViT's options; ``None``: :data:`OFFICIAL_VIT`. Others must keep
            ``global_pool: avg`` and ``fc_norm: false``.
        ijepa_init: re-initialize the encoder as the official (truncated normal 0.02).
        variance_weight: weight of VICReg's variance term on the context encoder's tokens,
            averaged per image, over the global batch; 0 (official I-JEPA) leaves it out. With
            ``covariance_weight`` it is C-JEPA's regulariser (Mo & Tong, 2024, without the
            invariance term, which needs two views): against the collapse in which every token
            becomes its position's mean, the same for every image.
        covariance_weight: weight of VICReg's covariance term on the same averages (0: none).
        **kwargs: backbone, optimizer, schedule and data arguments of :class:`SSLMethod`.

    Examples:
        >>> ijepa = IJEPA(backbone="vit_tiny_patch16_224", image_size=32, predictor_dim=48,
        ...     predictor_depth=1, backbone_kwargs={"patch_size": 4, "depth": 1, **OFFICIAL_VIT},
        ...     min_keep=4)
        >>> loss, pred, features, terms = ijepa.predict_targets(torch.randn(2, 3, 32, 32),
        ...     torch.Generator().manual_seed(0))
        >>> pred.shape[:2], features.shape  # 4 blocks of the 8 x 8 grid per image
        (torch.Size([2, 4]), torch.Size([2, 192]))
        >>> terms  # the C-JEPA regulariser's, logged beside the loss when it is on
        {}
    """

    min_global_crops = 1

    def __init__(
        self,
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        min_keep: int = 10,
        predictor_dim: int = 384,
        predictor_depth: int = 12,
        predictor_num_heads: int | None = None,
        loss: IJEPALossName = "smooth_l1",
        tau_base: float = 0.996,
        tau_final: float = 1.0,
        weight_decay_end: float = 0.4,
        warmup_start_ratio: float = 0.2,
        sincos_pos_embed: bool = True,
        ijepa_init: bool = True,
        variance_weight: float = 0.0,
        covariance_weight: float = 0.0,
        backbone: str = "vit_huge_patch14_224",
        optimizer: OptimizerName = "adamw",
        lr: float = 0.001,
        lr_scaling: ScalingRule = "none",
        weight_decay: float = 0.04,
        warmup_epochs: float = 40.0,
        min_lr_ratio: float = 0.001,
        num_global_crops: int = 1,
        **kwargs: Any,
    ) -> None:
        _check_ranges(target_scale, target_aspect, context_scale, loss)
        kwargs |= dict(optimizer=optimizer, lr=lr, lr_scaling=lr_scaling, weight_decay=weight_decay)
        if kwargs.get("backbone_kwargs") is None:
            kwargs["backbone_kwargs"] = dict(OFFICIAL_VIT)
        super().__init__(
            backbone=backbone,
            warmup_epochs=warmup_epochs,
            min_lr_ratio=min_lr_ratio,
            num_global_crops=num_global_crops,
            **kwargs,
        )
        require_one_view("I-JEPA", "masks one view per image", num_global_crops, "ijepa")
        vit: Any = self.backbone.model  # a timm VisionTransformer (checked below)
        self.patch_size = _check_vit(vit)
        heads = predictor_num_heads or vit.blocks[0].attn.num_heads
        names = "predictor_num_heads, default: the encoder's"
        check_heads("IJEPA", "predictor_dim", predictor_dim, names, heads)
        self.predictor = IJEPAPredictor(self.backbone.dim, predictor_dim, predictor_depth, heads)
        if ijepa_init:
            ijepa_init_(vit)
        if sincos_pos_embed:
            use_ijepa_position_embedding(vit)
        self.teacher = frozen_copy(self.backbone)

    def configure_callbacks(self) -> list[L.Callback]:
        hp = self.hparams
        ema = EMA(self.backbone, self.teacher, hp.tau_base, hp.tau_final, schedule="linear")
        return [*super().configure_callbacks(), ema]

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        (images, *_), _ = batch
        loss, pred, features, terms = self.predict_targets(images, self.mask_generator(images))
        embeddings = pred.detach().flatten(1, 2).mean(1)
        return self.step_output(loss, [features], embeddings=embeddings, **terms)

    def predict_targets(
        self, images: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Mask, encode the context, predict the targets: ``(loss, predictions (B, M, T, D),
        the target encoder's averaged patch tokens (B, D), the regulariser's terms to log)``."""
        p = self.patch_size
        grid = (images.shape[-2] // p, images.shape[-1] // p)
        context_ids, target_ids = self.draw_masks(len(images), grid, generator)
        with torch.no_grad():
            h = patch_tokens(self.teacher.model, images)
            targets = gather_tokens(h, target_ids.flatten(1)).view(*target_ids.shape, -1)
        z = context_tokens(self.backbone.model, images, context_ids)
        pred = self.predictor(z, context_ids, target_ids, grid)
        regulariser, terms = self.regulariser(z)
        return ijepa_loss(pred, targets, self.hparams.loss) + regulariser, pred, h.mean(1), terms

    def regulariser(self, context: Tensor) -> tuple[Tensor | float, dict[str, Tensor]]:
        """C-JEPA's weighted variance and covariance terms of the context tokens averaged per
        image, and the unweighted terms; ``(0, {})`` with both weights 0 (official I-JEPA)."""
        hp = self.hparams
        if not (hp.variance_weight or hp.covariance_weight):
            return 0.0, {}
        variance, covariance = variance_covariance(context.mean(1))
        weighted = hp.variance_weight * variance + hp.covariance_weight * covariance
        return weighted, {"variance": variance, "covariance": covariance}

    def draw_masks(
        self, batch: int, grid: tuple[int, int], generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """``(context ids (B, K), target ids (B, M, T))``: patch indices in grid order, the
        context truncated to the batch's smallest (the official collator's ``min_keep_enc``)."""
        hp = self.hparams
        masks: MultiBlockMasks = multiblock_masks(
            batch,
            grid,
            generator,
            num_targets=hp.num_targets,
            target_scale=tuple(hp.target_scale),
            target_aspect=tuple(hp.target_aspect),
            context_scale=tuple(hp.context_scale),
            min_keep=hp.min_keep,
        )
        targets = torch.stack(
            [equal_length_indices(masks.targets[:, i]) for i in range(hp.num_targets)], dim=1
        )
        return equal_length_indices(masks.context), targets

    def extract_features(self, images: Tensor) -> Tensor:
        """The target encoder's patch tokens of the whole image, averaged (timm's ``avg``
        pool of the normed tokens: the target encoder is what ``export`` writes)."""
        return self.teacher(images)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Weight decay of the decayed groups on the official cosine; the official scheduler
        steps before the first update, so step ``k`` uses the value at ``k + 1``."""
        super().on_train_batch_start(batch, batch_idx)
        hp = self.hparams
        total = self.trainer.estimated_stepping_batches
        wd = cosine_schedule(self.global_step + 1, total, hp.weight_decay, hp.weight_decay_end)
        for group in self.trainer.optimizers[0].param_groups:
            if not group["name"].endswith("no_decay"):
                group["weight_decay"] = wd

    def mask_generator(self, images: Tensor) -> torch.Generator:
        """A generator seeded by (data seed, rank, batch number): a resumed run draws the same
        masks; every process draws its own."""
        return batch_generator(self, images.device, _MASK_STREAM)


def _check_vit(vit: Any) -> int:
    """The ViT's patch size, or a clear error for a ViT without averaged, normed tokens."""
    patch_size = vit_patch_size(vit)
    if getattr(vit, "global_pool", None) != "avg" or isinstance(vit.norm, nn.Identity):
        raise ValueError(
            "I-JEPA reads every token after the encoder's final norm and evaluates their "
            "average: set backbone_kwargs global_pool: avg and fc_norm: false (the official "
            "ViT also has class_token: false)"
        )
    return patch_size


def _check_ranges(
    target_scale: Any, target_aspect: Any, context_scale: Any, loss: str
) -> None:
    """One clear message for a scale or aspect range a user got wrong, or an unknown loss."""
    for name, pair, high in (
        ("target_scale", target_scale, 1.0),
        ("target_aspect", target_aspect, float("inf")),
        ("context_scale", context_scale, 1.0),
    ):
        ok = isinstance(pair, list | tuple) and len(pair) == 2
        if not (ok and 0.0 < pair[0] <= pair[1] <= high):
            raise InvalidValueError(
                f"IJEPA: {name} must be two numbers 0 < low <= high <= {high}, got {pair}"
            )
    if loss not in ("smooth_l1", "mse"):
        raise InvalidValueError(f"IJEPA: loss must be 'smooth_l1' or 'mse', got {loss!r}")
