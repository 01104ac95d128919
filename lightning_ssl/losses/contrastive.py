"""Contrastive losses: NT-Xent (SimCLR) and InfoNCE (MoCo, NNCLR).

Negatives come from the *global* batch: embeddings are gathered across processes with
gradients (:func:`lightning_ssl.distributed.gather`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.losses._precision import float32


@float32
def nt_xent_loss(views: Sequence[Tensor], temperature: float = 0.1) -> Tensor:
    """Normalized temperature-scaled cross-entropy (Chen et al., 2020, SimCLR eq. 1), multi-view.

    Every pair of views of the same image is a positive; every view of every other image in the
    global batch (all processes) is a negative. For an anchor ``(v, i)`` and each positive
    ``(w, i)``, ``w != v``::

        l = -log exp(s(v,i; w,i) / T) / sum_{(u,k) != (v,i)} exp(s(v,i; u,k) / T)

    averaged over positives and then over all ``V * B`` anchors; ``s`` is cosine similarity.
    With two views this is exactly the paper's loss.

    Args:
        views: ``V >= 2`` projections, one per view, each of shape ``(B, D)``; normalized inside.
        temperature: ``T`` in the formula (SimCLR: 0.1 to 0.5).

    Returns:
        Scalar loss, the mean over all anchors of this process (DDP averages across processes).

    Examples:
        >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
        >>> nt_xent_loss([z1, z2], temperature=0.5).shape
        torch.Size([])
    """
    if len(views) < 2:
        raise ValueError(f"nt_xent_loss needs at least 2 views, got {len(views)}")
    num_views, batch = len(views), views[0].shape[0]
    local = F.normalize(torch.stack(list(views)), dim=-1)  # (V, B, D)
    world = distributed.gather(local.transpose(0, 1)).transpose(0, 1)  # (V, N, D), N = W * B
    total = world.shape[1]
    offset = distributed.rank() * batch

    logits = local.flatten(0, 1) @ world.flatten(0, 1).T / temperature  # (V*B, V*N)
    # Column index of anchor (v, i) itself and of its image in every view.
    anchor_view = torch.arange(num_views, device=logits.device).repeat_interleave(batch)
    anchor_img = offset + torch.arange(batch, device=logits.device).repeat(num_views)
    col_view = torch.arange(num_views, device=logits.device).repeat_interleave(total)
    col_img = torch.arange(total, device=logits.device).repeat(num_views)
    same_img = anchor_img[:, None] == col_img[None, :]
    is_self = same_img & (anchor_view[:, None] == col_view[None, :])
    positive = same_img & ~is_self

    logits = logits.masked_fill(is_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -(log_prob[positive].view(num_views * batch, num_views - 1)).mean()


@float32
def info_nce_loss(
    query: Tensor, key: Tensor, temperature: float, negatives: Tensor | None = None
) -> Tensor:
    """InfoNCE (Oord et al., 2018; MoCo, He et al., 2020), one direction.

    Row ``i`` of ``query`` is paired with row ``i`` of ``key``. Without ``negatives`` the other
    keys of the global batch (gathered across processes) are the negatives, as in MoCo v3; with
    ``negatives`` (e.g. MoCo's queue) those rows are, as in MoCo v1/v2.

    Args:
        query: ``(B, D)`` queries (gradients flow).
        key: ``(B, D)`` positive keys.
        temperature: softmax temperature.
        negatives: optional ``(K, D)`` negative keys.

    Returns:
        Scalar cross-entropy averaged over this process's queries.

    Examples:
        >>> q, k = torch.randn(4, 8), torch.randn(4, 8)
        >>> info_nce_loss(q, k, temperature=0.2, negatives=torch.randn(16, 8)).shape
        torch.Size([])
    """
    query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
    if negatives is None:
        keys = distributed.gather(key)
        logits = query @ keys.T
        labels = distributed.rank() * query.shape[0] + torch.arange(
            query.shape[0], device=query.device
        )
    else:
        positive = (query * key).sum(dim=-1, keepdim=True)
        logits = torch.cat([positive, query @ F.normalize(negatives, dim=-1).T], dim=1)
        labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits / temperature, labels)
