"""DINO (Caron et al., 2021): self-distillation of a momentum teacher without labels."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from timm.layers import DropPath
from torch import Tensor, nn

from lightning_ssl.callbacks import EMA
from lightning_ssl.losses import dino_loss, dino_teacher_entropy, update_dino_center
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.nn.dino_head import DINOHead
from lightning_ssl.nn.teacher import frozen_copy
from lightning_ssl.optim import OptimizerName
from lightning_ssl.schedules import cosine_schedule, linear_warmup_constant


class DINO(SSLMethod):
    """Emerging Properties in Self-Supervised Vision Transformers (Caron et al., 2021, Alg. 1).

    The student ``g_s = head(backbone)`` sees every crop, the teacher ``g_t`` (an EMA of the
    student, tau 0.996 -> 1 along a cosine) only the global crops; the student matches the
    centered, sharpened teacher distribution of the *other* global crop. The center ``C`` is a
    buffer updated after the loss from the teacher outputs of the global batch.

    Per step, as the official ``main_dino.py``: teacher temperature warmed up linearly, weight
    decay of the decayed groups on a cosine (``weight_decay`` -> ``weight_decay_end``), each
    parameter's gradient clipped to norm ``clip_grad`` (in ``configure_gradient_clipping``; the
    trainer's ``gradient_clip_val`` still applies on top if set), and the last layer frozen
    during the first ``freeze_last_layer_epochs``. Evaluation (``extract_features``, the probe's
    training features) uses the teacher backbone, as DINO reports the teacher.

    The EMA averages parameters only (official ``main_dino.py``: the momentum update loops over
    ``parameters()``): a BatchNorm backbone's teacher normalizes with its own batch statistics
    in training and evaluates with the running statistics of its own forward passes, never
    the student's.

    Args:
        out_dim: head output size ``K`` (DINO: 65,536).
        hidden_dim: head MLP width (DINO: 2048).
        bottleneck_dim: head bottleneck (DINO: 256).
        use_bn_in_head: BatchNorm in the head MLP (DINO: off for ViTs).
        norm_last_layer: freeze the last layer's weight-norm scale at 1 (DINO's default; its
            ViT-S/16 recipes set ``False``).
        student_temp: student temperature (DINO: 0.1).
        warmup_teacher_temp: teacher temperature at step 0 (DINO: 0.04).
        teacher_temp: teacher temperature after the warm-up (DINO: 0.07 with ViT-S/16).
        teacher_temp_warmup_epochs: epochs of the linear warm-up (DINO: 30).
        center_momentum: center EMA momentum ``m`` (DINO: 0.9).
        tau_base: teacher EMA momentum at step 0 (DINO: 0.996; 0.9995 for batch 256).
        tau_final: teacher EMA momentum at the end (DINO: 1.0).
        weight_decay_end: final weight decay of the cosine schedule (DINO: 0.4).
        clip_grad: maximum gradient norm of each parameter, 0 to disable (DINO: 3.0).
        freeze_last_layer_epochs: epochs without updates of the last layer (DINO: 1).
        optimizer: DINO uses AdamW with ViTs.
        lr: peak learning rate per 256 images (DINO: 0.0005).
        weight_decay: initial weight decay (DINO: 0.04).
        warmup_epochs: linear LR warm-up (DINO: 10).
        min_lr_ratio: final LR / peak (DINO: 1e-6 absolute, i.e. 0.002 of 0.0005 at batch 256).
        **kwargs: backbone and data arguments of :class:`SSLMethod`.
    """

    supports_local_crops: ClassVar[bool] = True
    center: Tensor  # buffer: the running mean of the teacher outputs

    def __init__(
        self,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        use_bn_in_head: bool = False,
        norm_last_layer: bool = True,
        student_temp: float = 0.1,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.07,
        teacher_temp_warmup_epochs: float = 30.0,
        center_momentum: float = 0.9,
        tau_base: float = 0.996,
        tau_final: float = 1.0,
        weight_decay_end: float = 0.4,
        clip_grad: float = 3.0,
        freeze_last_layer_epochs: int = 1,
        optimizer: OptimizerName = "adamw",
        lr: float = 0.0005,
        weight_decay: float = 0.04,
        warmup_epochs: float = 10.0,
        min_lr_ratio: float = 0.002,
        **kwargs: Any,
    ) -> None:
        kwargs |= dict(optimizer=optimizer, lr=lr, weight_decay=weight_decay)
        super().__init__(warmup_epochs=warmup_epochs, min_lr_ratio=min_lr_ratio, **kwargs)
        head = (out_dim, use_bn_in_head, norm_last_layer, 3, hidden_dim, bottleneck_dim)
        self.head = DINOHead(self.backbone.dim, *head)
        self.teacher = frozen_copy(nn.ModuleDict({"backbone": self.backbone, "head": self.head}))
        for module in self.teacher.modules():  # the official teacher has no stochastic depth
            if isinstance(module, DropPath):
                module.drop_prob = 0.0
        self.register_buffer("center", torch.zeros(1, out_dim))

    def ema_student(self) -> nn.ModuleDict:
        """The student modules the teacher averages, keyed as in ``self.teacher``."""
        return nn.ModuleDict({"backbone": self.backbone, "head": self.head})

    def configure_callbacks(self) -> list[L.Callback]:
        hp = self.hparams
        ema = EMA(self.ema_student(), self.teacher, hp.tau_base, hp.tau_final, buffers="leave")
        return [*super().configure_callbacks(), ema]

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        views, _ = batch
        global_views = views[: self.hparams.num_global_crops]
        student_out = self.head(torch.cat(self.encode(self.backbone, views))).chunk(len(views))
        with torch.no_grad():
            teacher_h = self.encode(self.teacher["backbone"], global_views)
            teacher_out = self.teacher["head"](torch.cat(teacher_h)).chunk(len(global_views))
        temp = self.teacher_temperature(self.global_step)
        loss = dino_loss(student_out, teacher_out, self.center, self.hparams.student_temp, temp)
        entropy = dino_teacher_entropy(teacher_out, self.center, temp)
        self.center = update_dino_center(self.center, teacher_out, self.hparams.center_momentum)
        return self.step_output(
            loss,
            teacher_h,
            embeddings=list(student_out[: len(global_views)]),
            teacher_temp=temp,
            teacher_entropy=entropy,
            kl=loss.detach() - entropy,
        )

    def teacher_temperature(
        self, step: int, start: float | None = None, end: float | None = None
    ) -> float:
        """Teacher temperature at optimizer step ``step``: linear warm-up from ``start``
        (default ``warmup_teacher_temp``) to ``end`` (``teacher_temp``), then constant."""
        hp, trainer = self.hparams, self.trainer
        steps_per_epoch = max(1, trainer.num_training_batches // trainer.accumulate_grad_batches)
        warmup = round(hp.teacher_temp_warmup_epochs * steps_per_epoch)
        start = hp.warmup_teacher_temp if start is None else start
        return linear_warmup_constant(step, warmup, start, hp.teacher_temp if end is None else end)

    def extract_features(self, images: Tensor) -> Tensor:
        """Teacher backbone features: DINO evaluates the teacher (k-NN and linear probe)."""
        return self.teacher["backbone"](images)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        hp = self.hparams
        total = self.trainer.estimated_stepping_batches
        wd = cosine_schedule(self.global_step, total, hp.weight_decay, hp.weight_decay_end)
        for group in self.trainer.optimizers[0].param_groups:
            if not group["name"].endswith("no_decay"):
                group["weight_decay"] = wd

    def on_after_backward(self) -> None:
        if self.current_epoch < self.hparams.freeze_last_layer_epochs:
            for param in self.head.last_layer.parameters():
                param.grad = None  # skipped by the optimizer: no update, no weight decay

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self.hparams.clip_grad > 0 and grads:
            for grad, norm in zip(grads, torch._foreach_norm(grads), strict=True):
                grad.mul_((self.hparams.clip_grad / (norm + 1e-6)).clamp(max=1.0))
        if gradient_clip_val:  # the trainer's clipping, if also requested
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
