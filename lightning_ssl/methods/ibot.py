"""iBOT (Zhou et al., 2022): DINO plus masked patch-token self-distillation; DINOv2's KoLeo
regulariser and Sinkhorn-Knopp teacher as options (Oquab et al., 2024)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_ssl.data.masking import block_masking
from lightning_ssl.losses import (
    dino_cross_entropy,
    ibot_patch_loss,
    koleo_loss,
    mean_entropy,
    teacher_targets,
    update_dino_center,
    update_patch_center,
)
from lightning_ssl.losses.ibot import Centering
from lightning_ssl.methods.base import Batch
from lightning_ssl.methods.batch_seed import batch_generator
from lightning_ssl.methods.dino import DINO
from lightning_ssl.nn.dino_head import DINOHead
from lightning_ssl.nn.mae import vit_patch_size
from lightning_ssl.nn.masked_vit import encode_tokens
from lightning_ssl.nn.teacher import frozen_copy
from lightning_ssl.validation import InvalidValueError

#: Mixed into the mask generator's seed so masks and the batched views draw different numbers.
_MASK_STREAM = 0x49424F54


class IBOT(DINO):
    """iBOT: Image BERT Pre-Training with Online Tokenizer (Zhou et al., ICLR 2022).

    DINO's image-level self-distillation (the class token of every crop against the teacher's
    other global crops; heads, EMA teacher, center, temperature and weight-decay schedules and
    last-layer freezing are :class:`DINO`'s) plus masked image modelling: each global crop the
    student sees is block-masked (a per-image ratio drawn from ``pred_ratio`` +-
    ``pred_ratio_var``; the patch embeddings of masked patches replaced by a learned mask
    token), the teacher sees it unmasked, and the student's output at each masked patch
    distills the teacher's centered, sharpened output at that patch (own center and teacher
    temperature). The student's global class tokens come from the masked crops, as official.

    DINOv2 options: ``koleo_weight`` adds the KoLeo regulariser on the student's class-token
    features of each global crop (DINOv2: 0.1); ``centering: sinkhorn`` replaces both centers
    by Sinkhorn-Knopp normalisation of the teacher outputs over the global batch (DINOv2's
    ``train.centering: sinkhorn_knopp``; the centers then stay unchanged).

    Masks are drawn from a generator seeded by (data seed, rank, batch number), so a resumed
    run repeats them. Evaluation uses the teacher backbone, as DINO and iBOT report.

    Deviations from ``main_ibot.py``: ``shared_head: false`` gives a separate patch head
    (MLP and last layer, student and teacher), DINOv2's ``ibot.separate_head``; iBOT's own
    shares the MLP and, in the teacher, the last layer too (its recipes use ``true``, which
    is exact here). Both temperatures warm up per step (official: per epoch). Block masks
    follow :func:`~lightning_ssl.data.masking.block_masking`'s vectorised BEiT rule (rectangles
    clamped to the grid; up to 100 proposals instead of 10 attempts per block).

    Args:
        out_dim: class-token head output size (iBOT: 8192).
        patch_out_dim: patch head output size with ``shared_head: false`` (default
            ``out_dim``); a shared head has ``out_dim``.
        shared_head: one head for the class and patch tokens (iBOT ViT recipes: true).
        teacher_temp: class-token teacher temperature after the warm-up (iBOT: 0.04; its
            ViT-S/16 recipe 0.07).
        warmup_teacher_patch_temp: patch teacher temperature at step 0 (iBOT: 0.04).
        teacher_patch_temp: patch teacher temperature after the warm-up (iBOT: 0.07).
        pred_ratio: masked fractions; each global crop picks one uniformly (iBOT: 0.3; ViT-S/16
            recipe: 0 and 0.3, i.e. half the crops unmasked).
        pred_ratio_var: half-width of the uniform draw around the chosen ratio (0; recipe: 0
            and 0.2).
        pred_aspect_ratio: aspect-ratio range of the mask blocks (BEiT/iBOT: 0.3 to 1/0.3).
        cls_weight: weight of the class-token loss (iBOT ``lambda1``: 1).
        patch_weight: weight of the patch loss (iBOT ``lambda2``: 1).
        koleo_weight: weight of DINOv2's KoLeo regulariser (0 off; DINOv2: 0.1).
        centering: ``center`` (iBOT's EMA centers) or ``sinkhorn`` (DINOv2's Sinkhorn-Knopp).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (DINOv2: 3).
        backbone: a timm ViT (iBOT: ViT-S/16).
        **kwargs: :class:`DINO`'s arguments (head sizes, temperatures, EMA, schedules) and the
            backbone, optimizer and data arguments of :class:`SSLMethod`.

    Examples:
        >>> ibot = IBOT(backbone="vit_tiny_patch16_224", image_size=32, out_dim=64,
        ...     hidden_dim=32, bottleneck_dim=16, backbone_kwargs={"patch_size": 8, "depth": 1})
        >>> masks = ibot.draw_masks(4, (4, 4), torch.Generator().manual_seed(0))
        >>> masks.shape, bool((masks.sum(1) <= 0.3 * 16).all())
        (torch.Size([4, 16]), True)
    """

    patch_center: Tensor  # buffer: the running mean of the teacher's patch outputs

    def __init__(
        self,
        out_dim: int = 8192,
        patch_out_dim: int | None = None,
        shared_head: bool = True,
        teacher_temp: float = 0.04,
        warmup_teacher_patch_temp: float = 0.04,
        teacher_patch_temp: float = 0.07,
        pred_ratio: tuple[float, ...] = (0.3,),
        pred_ratio_var: tuple[float, ...] = (0.0,),
        pred_aspect_ratio: tuple[float, float] = (0.3, 1 / 0.3),
        cls_weight: float = 1.0,
        patch_weight: float = 1.0,
        koleo_weight: float = 0.0,
        centering: Centering = "center",
        sinkhorn_iterations: int = 3,
        backbone: str = "vit_small_patch16_224",
        **kwargs: Any,
    ) -> None:
        super().__init__(out_dim=out_dim, teacher_temp=teacher_temp, backbone=backbone, **kwargs)
        _check_masking(pred_ratio, pred_ratio_var, pred_aspect_ratio)
        if shared_head and patch_out_dim not in (None, out_dim):
            raise InvalidValueError(
                f"IBOT: a shared head outputs out_dim={out_dim}, got patch_out_dim="
                f"{patch_out_dim}; set shared_head: false for a patch head of its own size"
            )
        vit = self.backbone.model
        self.patch_size = vit_patch_size(vit)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.backbone.dim))  # iBOT: zeros
        hp = self.hparams
        patch_dim = out_dim if shared_head else patch_out_dim or out_dim
        if not shared_head:
            head = (hp.use_bn_in_head, hp.norm_last_layer, 3, hp.hidden_dim, hp.bottleneck_dim)
            self.patch_head = DINOHead(self.backbone.dim, patch_dim, *head)
            self.teacher["patch_head"] = frozen_copy(self.patch_head)
        self.register_buffer("patch_center", torch.zeros(1, patch_dim))

    def ema_student(self) -> nn.ModuleDict:
        student = super().ema_student()
        if not self.hparams.shared_head:
            student["patch_head"] = self.patch_head
        return student

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        views, _ = batch
        hp, g = self.hparams, self.hparams.num_global_crops
        images = torch.cat(views[:g])  # the global crops, crop by crop
        masks = self.draw_masks(len(images), self.grid(images), self.mask_generator(images))
        student_cls, student_patches, features = self.student_pass(images, masks)
        local_h = self.encode(self.backbone, views[g:])  # local crops: unmasked
        local = list(self.head(torch.cat(local_h)).chunk(len(local_h))) if local_h else []
        with torch.no_grad():
            teacher_features, teacher_cls, teacher_patches = self.teacher_pass(images)
        temp, patch_temp = self.temperatures()
        cls_targets = self.targets(teacher_cls, temp, self.center)
        patch_targets = self.targets(teacher_patches[masks], patch_temp, self.patch_center)
        student_out = [*student_cls.chunk(g), *local]
        cls_loss = dino_cross_entropy(student_out, list(cls_targets.chunk(g)), hp.student_temp)
        patch_loss = ibot_patch_loss(student_patches, patch_targets, masks, hp.student_temp)
        loss = hp.cls_weight * cls_loss + hp.patch_weight * patch_loss
        terms = {"cls_loss": cls_loss.detach(), "patch_loss": patch_loss.detach()}
        if hp.koleo_weight > 0:  # DINOv2: each global crop's batch on its own, summed
            koleo = torch.stack([koleo_loss(f) for f in features.chunk(g)]).sum()
            loss, terms["koleo"] = loss + hp.koleo_weight * koleo, koleo.detach()
        self.update_centers(teacher_cls, teacher_patches)
        return self.step_output(
            loss,
            list(teacher_features.chunk(g)),
            embeddings=list(student_cls.chunk(g)),
            teacher_temp=temp,
            teacher_patch_temp=patch_temp,
            teacher_entropy=mean_entropy(cls_targets),
            masked_fraction=masks.float().mean(),
            **terms,
        )

    def student_pass(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The student on the masked crops: ``(class-token head outputs (S, K), patch head
        outputs at the masked patches (M, K'), backbone features (S, D))``."""
        vit: Any = self.backbone.model  # a timm VisionTransformer
        tokens = encode_tokens(vit, images, masks, self.mask_token)
        features = vit.forward_head(tokens, pre_logits=True)
        patches = tokens[:, getattr(vit, "num_prefix_tokens", 1) :]
        return self.head(features), self.patch_heads()[0](patches[masks]), features

    @torch.no_grad()
    def teacher_pass(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The teacher on the unmasked crops: ``(backbone features (S, D), class-token head
        outputs (S, K), patch head outputs at every patch (S, N, K'))``."""
        vit: Any = self.teacher["backbone"].model
        tokens = encode_tokens(vit, images)
        features = vit.forward_head(tokens, pre_logits=True)
        patches = tokens[:, getattr(vit, "num_prefix_tokens", 1) :]
        patch_out = self.patch_heads()[1](patches.flatten(0, 1)).unflatten(0, patches.shape[:2])
        return features, self.teacher["head"](features), patch_out

    def patch_heads(self) -> tuple[nn.Module, nn.Module]:
        """(student, teacher) heads of the patch tokens: the class-token heads when shared."""
        if self.hparams.shared_head:
            return self.head, self.teacher["head"]
        return self.patch_head, self.teacher["patch_head"]

    def temperatures(self) -> tuple[float, float]:
        """(class-token, patch) teacher temperatures at this step, both warmed up linearly."""
        hp, step = self.hparams, self.global_step
        patch = self.teacher_temperature(step, hp.warmup_teacher_patch_temp, hp.teacher_patch_temp)
        return self.teacher_temperature(step), patch

    def targets(self, teacher_out: Tensor, temp: float, center: Tensor) -> Tensor:
        """The teacher's distributions: centered and sharpened, or Sinkhorn-Knopp codes."""
        hp = self.hparams
        return teacher_targets(teacher_out, temp, hp.centering, center, hp.sinkhorn_iterations)

    @torch.no_grad()
    def update_centers(self, teacher_cls: Tensor, teacher_patches: Tensor) -> None:
        """iBOT's center updates after the loss (none with Sinkhorn-Knopp, as DINOv2)."""
        if self.hparams.centering == "center":
            momentum = self.hparams.center_momentum
            self.center = update_dino_center(self.center, [teacher_cls], momentum)
            self.patch_center = update_patch_center(self.patch_center, teacher_patches, momentum)

    def grid(self, images: Tensor) -> tuple[int, int]:
        """The patch grid ``(h, w)`` of a batch of crops."""
        return images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size

    def mask_generator(self, images: Tensor) -> torch.Generator:
        """Seeded by (data seed, rank, batch number): a resumed run draws the same masks."""
        return batch_generator(self, images.device, _MASK_STREAM)

    def draw_masks(self, n: int, grid: tuple[int, int], generator: torch.Generator) -> Tensor:
        """``(n, h * w)`` block masks, ``True`` masked, each with its own ratio: one of
        ``pred_ratio`` picked uniformly, then uniform within ``+- pred_ratio_var``; the masked
        count is ``int(ratio * h * w)`` (iBOT's ``ImageFolderMask.get_pred_ratio`` and its
        loop, which stops below ``ratio * h * w``), blocks of at least ``(min(h, w) // 3)^2``
        patches."""
        device, hp = generator.device, self.hparams
        means = torch.tensor(hp.pred_ratio, device=device, dtype=torch.float64)
        spreads = torch.tensor(hp.pred_ratio_var, device=device, dtype=torch.float64)
        spreads = spreads.expand_as(means)  # one spread may serve every ratio
        choice = torch.randint(len(means), (n,), generator=generator, device=device)
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        counts = ((means[choice] + (2 * u - 1) * spreads[choice]) * grid[0] * grid[1]).long()
        low = (min(grid) // 3) ** 2
        aspect = (float(hp.pred_aspect_ratio[0]), float(hp.pred_aspect_ratio[1]))
        return block_masking(n, grid, counts, generator, low, aspect=aspect)

    def on_after_backward(self) -> None:
        super().on_after_backward()  # the class-token head's last layer
        frozen = self.current_epoch < self.hparams.freeze_last_layer_epochs
        if frozen and not self.hparams.shared_head:
            for param in self.patch_head.last_layer.parameters():
                param.grad = None


def _fractions(value: Any) -> bool:
    numbers = isinstance(value, list | tuple) and len(value) > 0
    return numbers and all(isinstance(v, int | float) and 0 <= v <= 1 for v in value)


def _check_masking(pred_ratio: Any, pred_ratio_var: Any, pred_aspect_ratio: Any) -> None:
    """iBOT's asserts on the masking arguments (``loader.py``), each as one clear message."""
    for name, value in (("pred_ratio", pred_ratio), ("pred_ratio_var", pred_ratio_var)):
        if not _fractions(value):
            raise InvalidValueError(
                f"IBOT: {name} must be a list of fractions in [0, 1], got {value}"
            )
    aspect = pred_aspect_ratio
    if not (isinstance(aspect, list | tuple) and len(aspect) == 2 and 0 < aspect[0] <= aspect[1]):
        raise InvalidValueError(
            f"IBOT: pred_aspect_ratio must be two numbers 0 < low <= high, got {aspect}"
        )
    spreads = list(pred_ratio_var) * (len(pred_ratio) if len(pred_ratio_var) == 1 else 1)
    pairs = list(zip(pred_ratio, spreads, strict=False))
    if len(spreads) != len(pred_ratio) or any(v > r or r + v > 1 for r, v in pairs):
        raise InvalidValueError(
            f"IBOT: pred_ratio_var must be one value or one per ratio, with var <= ratio and "
            f"ratio + var <= 1, got pred_ratio {pred_ratio}, pred_ratio_var {pred_ratio_var}"
        )
