"""The small base every method shares: backbone, step output, evaluation features, hooks."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn

from lightning_ssl.callbacks.collapse import CollapseMonitor
from lightning_ssl.callbacks.guards import NonFiniteLossGuard
from lightning_ssl.lars import LarsPresetName
from lightning_ssl.lightning_types import AttributeDict, saved_hparams, trainer_attributes
from lightning_ssl.methods.batch_seed import seed_global_generators
from lightning_ssl.nn.backbones import Backbone
from lightning_ssl.nn.pretrained_weights import skipping_pretrained
from lightning_ssl.optim import OptimizerName, ScalingRule
from lightning_ssl.optim_setup import assemble_optimizer, global_batch_size
from lightning_ssl.resume_hparams import reconcile
from lightning_ssl.validation import check_values

Batch = tuple[list[Tensor], Tensor]


class SSLMethod(L.LightningModule):
    """Base class of self-supervised methods (a ``LightningModule``).

    A subclass builds its heads in ``__init__``, returns the callbacks it needs (EMA teacher,
    queue) from ``configure_callbacks`` and writes ``training_step`` like the paper's pseudo-code,
    returning :meth:`step_output`. The online probe and the kNN monitor read the ``features`` that
    ``training_step`` and ``validation_step`` return.

    Args:
        backbone: encoder name: a torchvision ResNet (``resnet18``, ``resnet50``) or a timm model.
        cifar_stem: 3x3 stem without max-pool for 32 px images.
        backbone_kwargs: extra arguments of the encoder constructor.
        optimizer: ``sgd``, ``lars`` or ``adamw``.
        lr: base learning rate for a global batch of 256, scaled by ``lr_scaling``.
        weight_decay: weight decay (biases and normalization weights: ``decay_bias_and_norm``).
        momentum: SGD/LARS momentum.
        lars_preset: whose LARS update rule ``optimizer: lars`` uses: ``simclr``, ``byol``,
            ``barlow_twins``, ``vicreg``, ``mocov3``, ``solo_learn`` (eta 0.02, LR clipping) or
            ``swav`` (apex LARC); see :data:`lightning_ssl.lars.LARS_PRESETS`.
        trust_coefficient: LARS ``eta``, overriding the preset's.
        decay_bias_and_norm: also decay parameters with at most one dimension (biases, norms).
        adapt_bias_and_norm: let LARS adapt biases and norms too.
        lr_scaling: how ``lr`` grows with the global batch: ``linear``, ``sqrt`` or ``none``.
        warmup_epochs: epochs of linear warm-up (may be fractional), then cosine decay.
        min_lr_ratio: final learning rate as a fraction of the peak.
        num_classes: classes of the dataset (linked from the DataModule by the CLI).
        image_size: global crop size (linked from the DataModule).
        num_global_crops: global crops per image (linked from the DataModule).
        num_local_crops: local crops per image (linked from the DataModule).
        channels_last: NHWC convolutions (faster on GPUs with bf16/fp16; see :class:`Backbone`).
        compile_backbone: ``torch.compile`` the student backbone in place (state-dict keys are
            unchanged); ``True`` uses the default backend, a string names one (``"inductor"``,
            ``"aot_eager"`` ...). The first steps are slow while it compiles.
    """

    #: Whether the method can use local (small) crops besides the global ones.
    supports_local_crops: ClassVar[bool] = False
    #: Global crops per image the method needs (two views for the joint-embedding methods;
    #: MAE, CLIP and InstDisc: one).
    min_global_crops: ClassVar[int] = 2

    def __init__(
        self,
        backbone: str = "resnet18",
        cifar_stem: bool = False,
        backbone_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerName = "lars",
        lr: float = 0.3,
        weight_decay: float = 1e-6,
        momentum: float = 0.9,
        lars_preset: LarsPresetName = "byol",
        trust_coefficient: float | None = None,
        decay_bias_and_norm: bool = False,
        adapt_bias_and_norm: bool = False,
        lr_scaling: ScalingRule = "linear",
        warmup_epochs: float = 10.0,
        min_lr_ratio: float = 0.0,
        num_classes: int = 10,
        image_size: int = 224,
        num_global_crops: int = 2,
        num_local_crops: int = 0,
        channels_last: bool = False,
        compile_backbone: bool | str = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_values(type(self).__name__, self.hparams)
        if num_local_crops and not self.supports_local_crops:
            raise ValueError(
                f"{type(self).__name__} does not use local crops but the data makes "
                f"{num_local_crops}; set data num_local_crops: 0"
            )
        if num_global_crops < self.min_global_crops:
            raise ValueError(
                f"{type(self).__name__} needs {self.min_global_crops} global crops, "
                f"got {num_global_crops}"
            )
        self.backbone = Backbone(
            backbone, cifar_stem, image_size, channels_last, **(backbone_kwargs or {})
        )
        self.num_classes = num_classes
        self.effective_lr: float | None = None

    @property
    def hparams(self) -> AttributeDict:
        """The saved ``__init__`` arguments, read as attributes (``self.hparams.lr``)."""
        return saved_hparams(super().hparams)

    @classmethod
    def load_from_checkpoint(cls, *args: Any, **kwargs: Any) -> Any:
        """Lightning's, without re-reading a ``pretrained`` start: the checkpoint's weights
        replace it (its file may be gone since training)."""
        with skipping_pretrained():
            return super().load_from_checkpoint(*args, **kwargs)

    # ----------------------------------------------------------------- helpers for methods
    @staticmethod
    def encode(module: nn.Module, views: list[Tensor]) -> list[Tensor]:
        """Apply ``module`` to each view, batching consecutive views of equal shape together."""
        outputs: list[Tensor] = []
        start = 0
        while start < len(views):
            end = start + 1
            while end < len(views) and views[end].shape == views[start].shape:
                end += 1
            outputs.extend(module(torch.cat(views[start:end])).chunk(end - start))
            start = end
        return outputs

    def step_output(
        self,
        loss: Tensor,
        features: list[Tensor],
        embeddings: Tensor | list[Tensor] | None = None,
        **terms: Tensor | float,
    ) -> dict[str, Any]:
        """Log ``train/loss`` and ``train/<term>``; return what callbacks read.

        Args:
            loss: the loss to minimise.
            features: backbone features of the global crops (the online probe trains on them).
            embeddings: the projection the method contrasts or predicts, one (B, D) tensor per
                global crop; the :class:`CollapseMonitor` logs ``train/z_std`` from them.
            **terms: loss terms or diagnostics to log; tensors named ``queue_keys`` etc. that a
                callback reads should be passed in the returned dict by the method instead.
        """
        self.log("train/loss", loss, prog_bar=True)
        for name, value in terms.items():
            self.log(f"train/{name}", value)
        out: dict[str, Any] = {"loss": loss, "features": torch.cat(features).detach()}
        if embeddings is not None:
            views = [embeddings] if isinstance(embeddings, Tensor) else embeddings
            out["embeddings"] = [z.detach() for z in views]
        return out

    def extract_features(self, images: Tensor) -> Tensor:
        """Features used for evaluation (probe, kNN); the student backbone unless overridden."""
        return self.backbone(images)

    def param_group_overrides(self) -> dict[str, dict[str, Any]]:
        """Per-prefix optimizer options, e.g. ``{"predictor.": {"fixed_lr": True}}``.

        Options: any optimizer group key, ``fixed_lr`` (no warm-up or decay) and ``lr_scale``
        (peak LR relative to the scaled ``lr``).
        """
        return {}

    def no_decay_group_options(self) -> dict[str, Any]:
        """Options of the groups without weight decay (biases, norms), e.g. ``{"lr_scale": x}``."""
        return {}

    # ----------------------------------------------------------------- Lightning hooks
    def forward(self, images: Tensor) -> Tensor:
        return self.extract_features(images)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"features": self.extract_features(batch[0])}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"features": self.extract_features(batch[0])}

    def configure_model(self) -> None:
        # After the callbacks' setup: EMA teachers copy the uncompiled student.
        backend = self.hparams.get("compile_backbone", False)
        if backend and getattr(self.backbone, "_compiled_call_impl", None) is None:
            self.backbone.compile(**({} if backend is True else {"backend": backend}))

    def configure_callbacks(self) -> list[L.Callback]:
        # Lightning lets a module's callbacks replace the Trainer's of the same type: keep a
        # guard or monitor the user configured (e.g. a less frequent check) instead.
        trainer = self._trainer
        configured = trainer_attributes(trainer).callbacks if trainer is not None else []
        defaults = [NonFiniteLossGuard(), CollapseMonitor()]
        return [d for d in defaults if not any(type(c) is type(d) for c in configured)]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed the global generators per batch (stochastic depth, dropout): exact resume."""
        seed_global_generators(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lightning_ssl_method"] = type(self).__name__

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another method or other weight shapes with a clear message
        (not a key mismatch); apply this run's other values from the resumed step."""
        reconcile(self, checkpoint)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """The base's optimizer with per-step warm-up and cosine decay (:mod:`.optim_setup`)."""
        self.effective_lr, config = assemble_optimizer(
            self, self.hparams, self.param_group_overrides(), self.no_decay_group_options()
        )
        return config

    def global_batch_size(self) -> int:
        """Images per optimizer step over all processes: devices x nodes x batch x accumulation."""
        return global_batch_size(self.trainer)
