"""CLIP's symmetric contrastive loss over image-text pairs (Radford et al., 2021, figure 3).

Pair ``i`` of the global batch is the positive of row ``i`` in both directions; every other
caption (image) of the global batch is a negative. Each process scores its own rows against
the features of every process, gathered with gradients (open_clip's ``ClipLoss`` with
``local_loss=True, gather_with_grad=True``): DDP's gradient average then equals the gradient
of one process holding the whole batch, at ``O(B * N)`` memory per process instead of
``O(N**2)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.losses._precision import float32
from lightning_ssl.losses.tiled import tiled_logsumexp


def _own_rows(batch: int, device: torch.device) -> Tensor:
    """Columns of this process's pairs in the gathered ``(N, D)`` features."""
    return distributed.rank() * batch + torch.arange(batch, device=device)


def _check(image_features: Tensor, text_features: Tensor) -> None:
    if image_features.shape != text_features.shape:
        raise ValueError(
            "clip_loss needs one caption per image: image features "
            f"{tuple(image_features.shape)} vs text features {tuple(text_features.shape)}"
        )


@float32
def clip_loss(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float
) -> Tensor:
    """Symmetric cross-entropy of CLIP (paper figure 3), over the global batch::

        logits = logit_scale * I @ T.T                  # (n, N): own images x all captions
        loss = (CE(logits, labels) + CE(logit_scale * T @ I_all.T, labels)) / 2

    The features are used as given: L2-normalise them first, as CLIP does.

    Args:
        image_features: ``(B, D)`` image embeddings of this process.
        text_features: ``(B, D)`` embeddings of the matching captions.
        logit_scale: the multiplier ``exp(t)`` of the learned log-temperature ``t`` (the value
            open_clip's ``ClipLoss`` takes), a float or a 0-d tensor (gradients flow).

    Returns:
        Scalar float32 loss, the mean of both directions over this process's pairs.

    Examples:
        >>> i, t = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
        >>> clip_loss(i, t, logit_scale=1 / 0.07).shape
        torch.Size([])
    """
    _check(image_features, text_features)
    labels = _own_rows(image_features.shape[0], image_features.device)
    all_images = distributed.gather(image_features)
    all_texts = distributed.gather(text_features)
    logits_per_image = logit_scale * image_features @ all_texts.T
    logits_per_text = logit_scale * text_features @ all_images.T
    return (
        F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
    ) / 2


@float32
def tiled_clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    tile_size: int = 4096,
) -> Tensor:
    """:func:`clip_loss` with ``O(tile_size**2)`` memory (Inf-CL tiles, both directions).

    Each direction's log-sum-exp runs over tiles of its ``(B, N)`` logit matrix
    (:func:`~lightning_ssl.losses.tiled_logsumexp`); ``logit_scale`` multiplies the small
    ``(B, D)`` query operand, so its gradient flows as in the plain loss. The positive logits
    are row-wise dot products. Same loss and gradients as :func:`clip_loss`.

    Examples:
        >>> i, t = F.normalize(torch.randn(6, 8), dim=1), F.normalize(torch.randn(6, 8), dim=1)
        >>> torch.allclose(tiled_clip_loss(i, t, 10.0, tile_size=4), clip_loss(i, t, 10.0))
        True
    """
    _check(image_features, text_features)
    all_images = distributed.gather(image_features)
    all_texts = distributed.gather(text_features)
    positive = logit_scale * (image_features * text_features).sum(dim=-1)
    lse_image = tiled_logsumexp(logit_scale * image_features, all_texts, 1.0, tile_size)
    lse_text = tiled_logsumexp(logit_scale * text_features, all_images, 1.0, tile_size)
    return ((lse_image - positive).mean() + (lse_text - positive).mean()) / 2
