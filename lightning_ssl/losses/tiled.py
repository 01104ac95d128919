"""Memory-efficient NT-Xent and InfoNCE: the exact losses without the full similarity matrix.

Following Inf-CL (Cheng et al., 2024, "Breaking the Memory Barrier: Near Infinite Batch Size
Scaling for Contrastive Loss"), the log-sum-exp over the negatives is computed over square
tiles of the similarity matrix and the backward recomputes each tile from the saved row-wise
log-sum-exp, so memory is ``O(tile_size**2)`` instead of ``O(n * N)`` (``n`` local anchors,
``N`` keys of the global batch). Loss and gradients equal those of
:mod:`lightning_ssl.losses.contrastive` (also across processes: keys are gathered with
gradients in the same way); the positive logits are cheap row-wise dot products.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from lightning_ssl import distributed
from lightning_ssl.losses._precision import float32


def _mask_self(logits: Tensor, self_cols: Tensor | None, col_start: int) -> None:
    """Set ``logits[r, self_cols[r] - col_start]`` to -inf where that column is in the tile.

    One scatter of ``rows`` elements: no tile-sized mask and no host synchronisation.
    """
    if self_cols is None:
        return
    local = self_cols - col_start
    inside = (local >= 0) & (local < logits.shape[1])
    index = local.clamp(0, logits.shape[1] - 1)[:, None]
    kept = logits.gather(1, index)
    logits.scatter_(1, index, torch.where(inside[:, None], float("-inf"), kept))


def _tiles(size: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(start + tile, size)) for start in range(0, size, tile)]


class _TiledLogSumExp(torch.autograd.Function):
    """``lse[r] = logsumexp_c(q[r] . k[c] / T)`` over all ``c != self_cols[r]``, tile by tile."""

    @staticmethod
    def forward(
        ctx: Any,  # torch's FunctionCtx, carrying temperature and tile to the backward
        q: Tensor,
        k: Tensor,
        temperature: float,
        tile: int,
        self_cols: Tensor | None,
    ) -> Tensor:
        q_scaled = q / temperature  # fold 1/T into the small operand, not into every tile
        lse = torch.full((q.shape[0],), float("-inf"), dtype=q.dtype, device=q.device)
        for r0, r1 in _tiles(q.shape[0], tile):
            rows = self_cols[r0:r1] if self_cols is not None else None
            for c0, c1 in _tiles(k.shape[0], tile):
                logits = q_scaled[r0:r1] @ k[c0:c1].T
                _mask_self(logits, rows, c0)
                # logsumexp in place (no tile-sized temporaries); a finite shift keeps rows
                # whose columns are all masked at exp(-inf) = 0 instead of NaN.
                shift = logits.amax(dim=1).clamp_min(torch.finfo(logits.dtype).min)
                total = logits.sub_(shift[:, None]).exp_().sum(dim=1)
                lse[r0:r1] = torch.logaddexp(lse[r0:r1], total.log() + shift)
        ctx.save_for_backward(q_scaled, k, lse, self_cols)
        ctx.temperature, ctx.tile = temperature, tile
        return lse

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_lse: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        q_scaled, k, lse, self_cols = ctx.saved_tensors
        need_q, need_k = ctx.needs_input_grad[:2]
        # d lse[r] / d logit[r, c] = softmax[r, c], and logit = q . k / T: grad_q[r] is
        # grad_lse[r] / T * sum_c softmax[r, c] k[c], the row factor applied once at the end.
        grad_q = torch.zeros_like(q_scaled) if need_q else None
        grad_k = torch.zeros_like(k) if need_k else None
        q_weighted = q_scaled * grad_lse[:, None]  # carries 1/T already
        with torch.autocast(q_scaled.device.type, enabled=False):
            for r0, r1 in _tiles(q_scaled.shape[0], ctx.tile):
                rows = self_cols[r0:r1] if self_cols is not None else None
                for c0, c1 in _tiles(k.shape[0], ctx.tile):
                    softmax = q_scaled[r0:r1] @ k[c0:c1].T
                    _mask_self(softmax, rows, c0)
                    softmax.sub_(lse[r0:r1, None]).exp_()  # masked entries: exp(-inf) = 0
                    if grad_k is not None:
                        grad_k[c0:c1].addmm_(softmax.T, q_weighted[r0:r1])
                    if grad_q is not None:
                        grad_q[r0:r1].addmm_(softmax, k[c0:c1])
        if grad_q is not None:
            grad_q.mul_((grad_lse / ctx.temperature)[:, None])
        return grad_q, grad_k, None, None, None


@float32
def tiled_logsumexp(
    q: Tensor, k: Tensor, temperature: float, tile_size: int, self_cols: Tensor | None = None
) -> Tensor:
    """Row-wise ``logsumexp(q @ k.T / temperature)``, never holding more than one tile.

    Args:
        q: ``(n, D)`` queries.
        k: ``(N, D)`` keys.
        temperature: divides every logit.
        tile_size: rows and columns of one tile of the ``(n, N)`` logit matrix.
        self_cols: optional ``(n,)`` column excluded from each row (self-similarity).

    Returns:
        ``(n,)`` log-sum-exp, differentiable w.r.t. ``q`` and ``k``.

    Examples:
        >>> q, k = torch.randn(5, 3), torch.randn(7, 3)
        >>> ref = torch.logsumexp(q @ k.T / 0.5, dim=1)
        >>> torch.allclose(tiled_logsumexp(q, k, 0.5, tile_size=2), ref)
        True
    """
    if tile_size < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    return _TiledLogSumExp.apply(q, k, temperature, tile_size, self_cols)


@float32
def tiled_nt_xent_loss(
    views: Sequence[Tensor], temperature: float = 0.1, tile_size: int = 4096
) -> Tensor:
    """:func:`~lightning_ssl.losses.nt_xent_loss` with ``O(tile_size**2)`` memory.

    Same formula, views, positives, self-masking and cross-process negatives; the logit matrix
    ``(V*B, V*N)`` is processed in ``tile_size x tile_size`` tiles.

    Args:
        views: ``V >= 2`` projections, one per view, each of shape ``(B, D)``.
        temperature: softmax temperature.
        tile_size: rows and columns of one tile.

    Returns:
        Scalar float32 loss, the mean over all anchors of this process.

    Examples:
        >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
        >>> tiled_nt_xent_loss([z1, z2], temperature=0.5, tile_size=3).shape
        torch.Size([])
    """
    if len(views) < 2:
        raise ValueError(f"nt_xent_loss needs at least 2 views, got {len(views)}")
    num_views, batch = len(views), views[0].shape[0]
    local = F.normalize(torch.stack(list(views)), dim=-1)  # (V, B, D)
    world = distributed.gather(local.transpose(0, 1)).transpose(0, 1)  # (V, N, D)
    total = world.shape[1]
    # Anchor (v, i) is row v*B + i; itself is column v*N + offset + i of the keys.
    view = torch.arange(num_views, device=local.device).repeat_interleave(batch)
    img = torch.arange(batch, device=local.device).repeat(num_views)
    self_cols = view * total + distributed.rank() * batch + img
    lse = tiled_logsumexp(
        local.flatten(0, 1), world.flatten(0, 1), temperature, tile_size, self_cols
    )
    # Positives (v, i) -> (w, i), w != v: off-diagonal sum of the (V, V) Gram matrix of views.
    gram = local.flatten(1) @ local.flatten(1).T
    pair_sum = gram.sum() - gram.trace()
    positive_mean = pair_sum / (num_views * batch * (num_views - 1) * temperature)
    return lse.mean() - positive_mean


@float32
def tiled_info_nce_loss(
    query: Tensor,
    key: Tensor,
    temperature: float,
    negatives: Tensor | None = None,
    tile_size: int = 4096,
) -> Tensor:
    """:func:`~lightning_ssl.losses.info_nce_loss` with ``O(tile_size**2)`` memory.

    Args:
        query: ``(B, D)`` queries.
        key: ``(B, D)`` positive keys; without ``negatives`` the keys of the global batch
            (gathered across processes) are the candidates, as in MoCo v3.
        temperature: softmax temperature.
        negatives: optional ``(K, D)`` negative keys (MoCo's queue).
        tile_size: rows and columns of one tile.

    Returns:
        Scalar float32 cross-entropy averaged over this process's queries.

    Examples:
        >>> q, k = torch.randn(4, 8), torch.randn(4, 8)
        >>> tiled_info_nce_loss(q, k, 0.2, negatives=torch.randn(16, 8), tile_size=3).shape
        torch.Size([])
    """
    query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
    positive = (query * key).sum(dim=-1) / temperature
    if negatives is None:
        lse = tiled_logsumexp(query, distributed.gather(key), temperature, tile_size)
    else:
        negatives = F.normalize(negatives, dim=-1)
        lse = torch.logaddexp(positive, tiled_logsumexp(query, negatives, temperature, tile_size))
    return (lse - positive).mean()
