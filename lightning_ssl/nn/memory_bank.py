"""InstDisc's memory bank: one L2-normalised feature per training image, kept in a buffer.

Memory: ``N x dim`` values, e.g. ImageNet 1.28 M x 128 x 4 B ~ 655 MB in float32 (half with
``dtype=torch.float16``). The rows and the estimated normaliser ``log Z`` are persistent
buffers, so the bank is saved in checkpoints and moves with its LightningModule. Pure tensor
operations: gather the batch's features and indices across processes *before* :meth:`update`
so every rank writes the same rows (see :class:`lightning_ssl.methods.InstDisc`).

Examples:
    >>> bank = MemoryBank(size=10, dim=4)
    >>> bank.update(F.normalize(torch.randn(2, 4), dim=1), torch.tensor([3, 7]), momentum=0.5)
    >>> norms = bank.rows(torch.tensor([3, 7])).norm(dim=1)
    >>> torch.allclose(norms, torch.ones(2))  # unit rows (the last bit depends on the draw)
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MemoryBank(nn.Module):
    """``size`` rows of dimension ``dim``, initialised as the official code (lemniscate.pytorch
    ``lib/NCEAverage.py``): uniform in ``[-s, s]`` with ``s = 1 / sqrt(dim / 3)``, so each entry
    has variance ``1 / dim`` and each row a squared norm of 1 in expectation (not normalised
    exactly; every row is normalised at its first update).

    Args:
        size: ``N``, the number of training images.
        dim: Feature dimension (paper: 128).
        dtype: Storage type; ``torch.float16`` halves the memory (rows are read in float32).
        seed: Seed of the initial rows: the same on every process without a broadcast.

    Examples:
        >>> MemoryBank(size=4, dim=3, dtype=torch.float16).memory.dtype
        torch.float16
    """

    memory: Tensor
    log_normalizer: Tensor

    def __init__(
        self, size: int, dim: int, dtype: torch.dtype = torch.float32, seed: int = 0
    ) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim must be positive, got size={size}, dim={dim}")
        bound = 1.0 / math.sqrt(dim / 3)
        generator = torch.Generator().manual_seed(seed)
        rows = torch.rand(size, dim, generator=generator).mul_(2 * bound).sub_(bound)
        self.register_buffer("memory", rows.to(dtype))
        # log Z of P(i|v) = exp(v_i . v / tau) / Z; NaN until estimated (the first batch).
        self.register_buffer("log_normalizer", torch.tensor(float("nan")))

    @property
    def size(self) -> int:
        """``N``, the number of rows."""
        return self.memory.shape[0]

    def rows(self, indices: Tensor) -> Tensor:
        """The rows at ``indices`` (any shape), in float32: shape ``(*indices.shape, dim)``."""
        return self.memory[indices].float()

    def all_rows(self) -> Tensor:
        """Every row in float32 (the full softmax of eq. 2)."""
        return self.memory.float()

    @torch.no_grad()
    def update(self, features: Tensor, indices: Tensor, momentum: float) -> None:
        """``v_i <- normalise(momentum * v_i + (1 - momentum) * f_i)`` for each index, once.

        An index that occurs several times (not with the training sampler) is written once,
        from its first occurrence, so the result does not depend on the write order.
        """
        first = _first_occurrences(indices)
        indices, features = indices[first], features[first].float()
        mixed = momentum * self.memory[indices].float() + (1.0 - momentum) * features
        self.memory.index_copy_(0, indices, F.normalize(mixed, dim=1).to(self.memory.dtype))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.memory.shape[1]}, dtype={self.memory.dtype}"


def _first_occurrences(indices: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct value of ``indices``.

    Examples:
        >>> _first_occurrences(torch.tensor([5, 2, 5, 1])).tolist()
        [3, 1, 0]
    """
    unique, inverse = torch.unique(indices, return_inverse=True)
    positions = torch.arange(len(indices), device=indices.device)
    first = torch.full_like(unique, len(indices))
    return first.scatter_reduce_(0, inverse, positions, reduce="amin")
