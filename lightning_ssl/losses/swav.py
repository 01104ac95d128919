"""SwAV (Caron et al., 2020): Sinkhorn-Knopp codes and the swapped-prediction loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.losses._precision import float32


def _global_max(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Max of ``x`` over ``dims`` (kept as size 1) and over every process's copy of ``x``
    (a process without rows contributes ``-inf``)."""
    if x.numel():
        local = x.amax(dim=dims, keepdim=True)
    else:
        shape = [1 if d in dims else n for d, n in enumerate(x.shape)]
        local = x.new_full(shape, float("-inf"))
    return distributed.gather_no_grad(local[None]).amax(dim=0)


def _global_logsumexp(log_q: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``log sum exp(log_q)`` over ``dims`` (kept as size 1) and over all processes.

    The peak is subtracted before ``exp`` and the sum includes the peak's ``exp(0) = 1``, so the
    result is finite whenever ``log_q`` is.
    """
    peak = _global_max(log_q, dims)
    total = distributed.all_reduce_sum(torch.exp(log_q - peak).sum(dim=dims, keepdim=True))
    return peak + torch.log(total)


@torch.no_grad()
@float32
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Soft codes by Sinkhorn-Knopp over the global batch (SwAV, Sec. 3.1 and Alg. 1).

    Exactly SwAV's ``distributed_sinkhorn``: ``Q = exp(scores / epsilon)^T`` (``K x N``, ``N``
    samples of all processes) is normalized to sum 1, then ``iterations`` times each prototype
    row is scaled to total ``1/K`` (row sums over all processes) and each sample column to
    ``1/N``. The columns, scaled by ``N``, are the codes. Computed without gradients.

    Computed on ``log Q`` (every normalization subtracts a log-sum-exp), in float32 (float64 for
    float64 scores): the official float32 ``exp(scores / epsilon)`` overflows once
    ``scores / epsilon > 88`` and a shifted ``exp`` underflows to a zero column (``0 / 0``) once
    a sample's scores lie ``104 epsilon`` below the others'; the log domain gives the same codes
    with neither, for any finite ``(scores - scores.max()) / epsilon``. Scores are shifted by
    their global maximum first, which cancels in the first normalization.

    Processes may hold different numbers of rows (DINOv2 balances the masked patch tokens of
    the global batch, a count that differs per process): ``N`` is their sum.

    Args:
        scores: ``(B, K)`` similarities of this process's samples to ``K`` prototypes.
        epsilon: entropy regularization (SwAV: 0.05).
        iterations: Sinkhorn iterations (SwAV: 3).

    Returns:
        ``(B, K)`` codes; every row sums to 1, every prototype column sums to about ``B / K``.

    Examples:
        >>> codes = sinkhorn_knopp(torch.randn(6, 3))
        >>> torch.allclose(codes.sum(dim=1), torch.ones(6))
        True
    """
    rows = scores.new_tensor(float(scores.shape[0]))
    log_batch = distributed.all_reduce_sum(rows).log()  # B of the official code: all rows
    log_num_prototypes = math.log(scores.shape[1])
    log_q = (scores.T - _global_max(scores, (0, 1))) / epsilon  # (K, B), max 0: no inf
    log_q = log_q - _global_logsumexp(log_q, (0, 1))  # Q sums to 1
    for _ in range(iterations):
        log_q = log_q - _global_logsumexp(log_q, (1,)) - log_num_prototypes  # rows: 1/K
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - log_batch  # columns: 1/B
    return torch.exp(log_q + log_batch).T


@float32
def swav_loss(scores: list[Tensor], codes: list[Tensor], temperature: float = 0.1) -> Tensor:
    """Swapped-prediction loss of SwAV (Caron et al., 2020, eq. 1-2; official ``main_swav.py``).

    The code ``q_i`` of crop ``i`` (one of the global crops) is predicted from every other crop
    ``v != i``; with ``p_v = softmax(scores_v / temperature)``::

        L = 1/|codes| sum_i 1/(V - 1) sum_{v != i} mean_b [ -sum_k q_i[b, k] log p_v[b, k] ]

    Args:
        scores: ``V`` tensors ``(B, K)``, prototype scores of every crop; the crops with codes
            come first (global crops, then local crops).
        codes: ``C <= V`` tensors ``(B, K)``, e.g. from :func:`sinkhorn_knopp`; ``codes[i]``
            belongs to ``scores[i]``. Treated as constants (detached).
        temperature: softmax temperature of the predictions (SwAV: 0.1).

    Returns:
        Scalar loss, averaged over this process's samples.

    Examples:
        >>> scores = [torch.randn(4, 10) for _ in range(4)]  # 2 global + 2 local crops
        >>> codes = [sinkhorn_knopp(s) for s in scores[:2]]
        >>> swav_loss(scores, codes).shape
        torch.Size([])
    """
    if not 0 < len(codes) <= len(scores) or len(scores) < 2:
        raise ValueError(f"need 2+ crops and 1 to {len(scores)} codes, got {len(codes)} codes")
    loss = scores[0].new_zeros(())
    for i, q in enumerate(codes):
        q = q.detach()
        subloss = scores[0].new_zeros(())
        for v, s in enumerate(scores):
            if v != i:
                subloss -= (q * F.log_softmax(s / temperature, dim=1)).sum(dim=1).mean()
        loss += subloss / (len(scores) - 1)
    return loss / len(codes)
