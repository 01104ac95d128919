"""Collectives used by losses and callbacks; every helper is a no-op at world size 1.

DDP averages gradients over ranks. A loss that sees the *global* batch through
:func:`gather` therefore needs a backward that **sums** the incoming gradient over ranks before
taking this rank's slice: then 2 processes with batch B give the gradients of 1 process with
batch 2B (the bug of lightly#1528 was a backward that did not).

Examples:
    >>> import torch
    >>> x = torch.ones(4, 8, requires_grad=True)
    >>> gather(x).shape  # single process: unchanged
    torch.Size([4, 8])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        size = grad.shape[0] // dist.get_world_size()
        if dist.get_backend() == dist.Backend.NCCL:
            # One reduce-scatter: each rank receives only its slice of the summed gradient.
            own = grad.new_empty((size, *grad.shape[1:]))
            dist.reduce_scatter_tensor(own, grad, op=dist.ReduceOp.SUM)
            return own
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # gloo has no reduce-scatter
        return grad[dist.get_rank() * size : (dist.get_rank() + 1) * size]


def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, differentiably.

    Every rank must pass the same shape. The backward sums gradients over ranks and returns
    this rank's slice, so DDP's gradient averaging yields the single-process gradient. On NCCL
    the backward is one reduce-scatter (a rank receives only its slice of the sum); on gloo, which
    has none, an all-reduce and a slice. (PyTorch's ``torch.distributed.nn.functional.all_gather``
    does the same on NCCL, but its gloo backward, an all-to-all, returned wrong gradients for the
    non-contiguous gradients of NT-Xent's gather in ``tests/losses/test_losses_ddp.py``.)

    Shape: (B, ...) -> (world_size * B, ...)
    """
    if not is_distributed():
        return x
    if not x.requires_grad:
        return gather_no_grad(x)
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0 without autograd (queue keys, kNN banks)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _AllReduceSumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # d(sum_r x_r)/dx_own = 1 for every rank's loss: sum the upstream gradients over ranks.
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum ``x`` over ranks, differentiably (``torch.distributed.all_reduce`` is not).

    Used for statistics over the global batch that enter a loss, e.g. Barlow Twins'
    cross-correlation matrix (the bug of lightly#1977 used the non-differentiable collective).
    """
    if not is_distributed():
        return x
    if not x.requires_grad:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x
    return _AllReduceSumWithGrad.apply(x)


@torch.no_grad()
def all_reduce_mean_(x: Tensor) -> Tensor:
    """Average ``x`` over ranks in place, without autograd (DINO's center, probe gradients)."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x.div_(dist.get_world_size())
    return x


@torch.no_grad()
def broadcast_(x: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``x`` on every rank with the value of rank ``src``, in place."""
    if is_distributed():
        dist.broadcast(x, src=src)
    return x


@torch.no_grad()
def batch_shuffle(x: Tensor) -> tuple[Tensor, Tensor]:
    """Shuffle the global batch across processes: MoCo's shuffling BN (He et al., 2020, 3.3).

    The rows of all ranks are permuted by one random permutation (drawn on rank 0) and each rank
    gets its slice, so the BatchNorm statistics of a key encoder are computed on other samples
    than those of the query encoder. Undo with :func:`batch_unshuffle`. Every rank must pass the
    same batch size. At world size 1 this is a no-op: one process cannot change its own batch
    statistics by reordering rows.

    Shape: (B, ...) -> (B, ...), and the ``(world_size * B,)`` inverse permutation.

    Examples:
        >>> x = torch.arange(4.0)[:, None]
        >>> shuffled, unshuffle = batch_shuffle(x)
        >>> torch.equal(batch_unshuffle(shuffled, unshuffle), x)
        True
    """
    if not is_distributed():
        return x, torch.arange(x.shape[0], device=x.device)
    everyone = gather_no_grad(x)
    permutation = broadcast_(torch.randperm(everyone.shape[0], device=x.device))
    own = slice(rank() * x.shape[0], (rank() + 1) * x.shape[0])
    return everyone[permutation[own]], torch.argsort(permutation)


@torch.no_grad()
def batch_unshuffle(x: Tensor, unshuffle: Tensor) -> Tensor:
    """Give each rank back the rows of its own samples after :func:`batch_shuffle`.

    Args:
        x: ``(B, ...)`` outputs computed on this rank's slice of the shuffled batch.
        unshuffle: the inverse permutation returned by :func:`batch_shuffle`.
    """
    if not is_distributed():
        return x
    own = slice(rank() * x.shape[0], (rank() + 1) * x.shape[0])
    return gather_no_grad(x)[unshuffle[own]]
