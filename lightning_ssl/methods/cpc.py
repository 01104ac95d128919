"""CPC v2 (Hénaff et al., 2020): predict the representations of patches rows ahead."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lightning_ssl.data.patches import (
    PatchAugmentation,
    PatchGrid,
    augment_patches,
    extract_patches,
)
from lightning_ssl.losses import cpc_loss
from lightning_ssl.methods.base import Batch, SSLMethod
from lightning_ssl.methods.batch_seed import batch_generator
from lightning_ssl.methods.single_view import require_one_view
from lightning_ssl.nn.cpc import ContextNetwork, Direction, RowPredictor, orient
from lightning_ssl.optim import OptimizerName, ScalingRule

#: Mixed into the patch generator's seed so its draws differ from the batched views'.
_PATCH_STREAM = 0x435043


class CPC(SSLMethod):
    """Data-Efficient Image Recognition with Contrastive Predictive Coding (CPC v2).

    Each image becomes a grid of overlapping patches (default: patches of a quarter of the image
    at half-patch stride, 7 x 7: 64 px at stride 32 on 256 px crops, 8 px at stride 4 on
    CIFAR), each patch augmented on its own (random offset, flip, colour dropping) and encoded
    by the backbone into one vector ``z[i, j]``. A masked convolutional context network gives
    ``c[i, j]`` from the rows ``<= i`` only, and ``W_k c[i, j]`` predicts ``z[i + k, j]`` for
    ``k = 1 .. K`` (paper: up to 5 rows ahead); :func:`~lightning_ssl.losses.cpc_loss` contrasts
    each prediction with every patch vector of the global batch. CPC v2 predicts in more than
    one direction: each direction has its own context network and predictions (ours: the
    paper does not say whether they share weights) over the grid turned by
    :func:`~lightning_ssl.nn.cpc.orient`; the loss is their mean.

    The backbone is layer-normalised (``backbone_kwargs: {norm: layer}``, the default here):
    BatchNorm's batch statistics would let a patch's vector carry information about the other
    patches (paper sec. 4.1). Evaluation (online probe, kNN, ``extract_features``) uses the
    mean of the patch vectors of the whole, unaugmented image's grid.

    No official code is public: the defaults follow the paper where it says, pl_bolts'
    ``CPC_v2`` (a community reimplementation) for the context network and optimizer, and are
    ours elsewhere (see ``recipes/cpc/*.yaml``).

    Args:
        patch_size: patch side in pixels (default: ``image_size // 4``).
        patch_stride: distance between neighbouring patches (default: ``patch_size // 2``).
        prediction_steps: ``K``, rows predicted ahead (paper: 5 on a 7 x 7 grid).
        directions: where the predicted rows lie from the context: ``down`` (CPC v1: top to
            bottom), ``up``, ``right``, ``left``; CPC v2: ``[down, up]``.
        context_blocks: residual blocks of the context network.
        context_hidden_dim: width inside the context network's blocks.
        patch_jitter: each patch is cut up to this many pixels away from its grid position
            (default: ``patch_size // 8``).
        patch_flip_prob: probability of flipping each patch horizontally.
        colour_drop_prob: probability that a patch keeps one colour channel (paper: every patch
            drops two of its three channels).
        backbone_kwargs: encoder options; ``norm`` defaults to ``layer``.
        optimizer: AdamW (pl_bolts: Adam).
        lr: 4e-4 (pl_bolts' ImageNet value).
        weight_decay: 1e-5 (pl_bolts).
        **kwargs: backbone, schedule and data arguments of :class:`SSLMethod`.

    Examples:
        >>> cpc = CPC(backbone="timm:test_resnet", image_size=32, num_global_crops=1,
        ...           context_hidden_dim=8, context_blocks=1)
        >>> cpc.grid
        PatchGrid(patch=8, stride=4, size=7)
        >>> cpc.extract_features(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 96])
    """

    min_global_crops: ClassVar[int] = 1

    def __init__(
        self,
        patch_size: int | None = None,
        patch_stride: int | None = None,
        prediction_steps: int = 5,
        directions: tuple[Direction, ...] = ("down", "up"),
        context_blocks: int = 5,
        context_hidden_dim: int = 256,
        patch_jitter: int | None = None,
        patch_flip_prob: float = 0.5,
        colour_drop_prob: float = 1.0,
        backbone_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerName = "adamw",
        lr: float = 4e-4,
        lr_scaling: ScalingRule = "none",
        weight_decay: float = 1e-5,
        num_global_crops: int = 1,
        **kwargs: Any,
    ) -> None:
        # Reassigned before the base saves the arguments: the checkpoint records the norm used.
        backbone_kwargs = {"norm": "layer", **(backbone_kwargs or {})}
        super().__init__(
            backbone_kwargs=backbone_kwargs,
            optimizer=optimizer,
            lr=lr,
            lr_scaling=lr_scaling,
            weight_decay=weight_decay,
            num_global_crops=num_global_crops,
            **kwargs,
        )
        uses = "cuts one view per image into patches"
        require_one_view("CPC", uses, num_global_crops, "cpc")
        self.grid = PatchGrid.for_image(self.hparams.image_size, patch_size, patch_stride)
        if not 0 < prediction_steps < self.grid.size:
            raise ValueError(
                f"prediction_steps={prediction_steps} needs a grid of more rows than "
                f"{self.grid.size}: lower it or use smaller patches"
            )
        if not directions or len(set(directions)) != len(directions):
            raise ValueError(f"directions must be distinct and at least one: {directions}")
        self.patch_augmentation = PatchAugmentation(
            self.grid.patch // 8 if patch_jitter is None else patch_jitter,
            patch_flip_prob,
            colour_drop_prob,
        )
        dim = self.backbone.dim
        self.context = nn.ModuleDict(
            {d: ContextNetwork(dim, context_hidden_dim, context_blocks) for d in directions}
        )
        self.predictors = nn.ModuleDict(
            {d: RowPredictor(dim, dim, prediction_steps) for d in directions}
        )

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        images = batch[0][0]
        patches = augment_patches(
            images, self.grid, self.patch_augmentation, self.patch_generator(images)
        )
        z = self.encode_patches(patches)  # (B, G, G, D)
        losses = [self.predictive_loss(z, d) for d in self.hparams.directions]
        loss = torch.stack(losses).mean()
        pooled = z.mean(dim=(1, 2))
        directions = self.hparams.directions
        terms = {f"loss_{d}": t.detach() for d, t in zip(directions, losses, strict=True)}
        return self.step_output(loss, [pooled], embeddings=pooled, **terms)

    def predictive_loss(self, z: Tensor, direction: Direction) -> Tensor:
        """InfoNCE of the predictions in ``direction`` over the grid ``z`` (B, G, G, D)."""
        targets = orient(z, direction)
        predictions = self.predictors[direction](self.context[direction](targets))
        return cpc_loss(predictions, targets)

    def encode_patches(self, patches: Tensor) -> Tensor:
        """One backbone vector per patch. Shape: (B, G, G, C, P, P) -> (B, G, G, D)."""
        vectors = self.backbone(patches.flatten(0, 2))
        return vectors.unflatten(0, patches.shape[:3])

    def extract_features(self, images: Tensor) -> Tensor:
        """The mean of the patch vectors of the whole image's grid (no augmentation)."""
        return self.encode_patches(extract_patches(images, self.grid)).mean(dim=(1, 2))

    def patch_generator(self, images: Tensor) -> torch.Generator:
        """A generator seeded by (data seed, rank, batch number): a resumed run draws the same
        patch augmentations; every process draws its own."""
        return batch_generator(self, images.device, _PATCH_STREAM)
