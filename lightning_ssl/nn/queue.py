"""A FIFO queue of feature vectors (MoCo's negatives, NNCLR's support set), kept in buffers.

Contents, pointer and fill count are persistent buffers, so the queue is saved in checkpoints and
moves with its LightningModule. Pure tensor operations: gather keys across processes *before*
``push`` (see :class:`lightning_ssl.callbacks.queue.QueueUpdater`) so every rank holds the same
queue.

Examples:
    >>> queue = FeatureQueue(size=4, dim=2)
    >>> queue.push(torch.ones(3, 2))
    >>> queue.valid().shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FeatureQueue(nn.Module):
    """First-in first-out queue of ``size`` rows of dimension ``dim``, with optional labels.

    Rows are written at ``ptr`` and wrap around; pushing ``B`` rows equals pushing them one at a
    time, for any ``B`` (a batch larger than the queue leaves its last ``size`` rows). Rows are
    filled from row 0, so the valid rows are always the first ``filled`` ones.

    Args:
        size: Number of rows (MoCo v2: 65536).
        dim: Feature dimension (MoCo v2: 128).
        with_labels: Also store one integer label per row (``-1`` when empty), e.g. to measure
            how often negatives share the anchor's class.
        random_init: Start full of random unit vectors, all rows valid (MoCo's choice); otherwise
            start empty and ``valid()`` returns only the rows pushed so far (NNCLR).

    Examples:
        >>> queue = FeatureQueue(size=3, dim=1, with_labels=True)
        >>> queue.push(torch.arange(4.0)[:, None], labels=torch.arange(4))
        >>> queue.valid().flatten().tolist(), queue.valid_labels().tolist()
        ([3.0, 1.0, 2.0], [3, 1, 2])
    """

    features: Tensor
    labels: Tensor
    ptr: Tensor
    filled: Tensor

    def __init__(
        self, size: int, dim: int, with_labels: bool = False, random_init: bool = False
    ) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim must be positive, got size={size}, dim={dim}")
        self.size, self.dim, self.with_labels = size, dim, with_labels
        init = F.normalize(torch.randn(size, dim), dim=1) if random_init else torch.zeros(size, dim)
        self.register_buffer("features", init)
        if with_labels:
            self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.tensor(0, dtype=torch.long))
        self.register_buffer("filled", torch.tensor(size if random_init else 0, dtype=torch.long))
        # Host copy of ``filled`` so ``valid()`` needs no device sync; reset on state_dict load.
        self._filled_host: int | None = size if random_init else 0
        self.register_load_state_dict_post_hook(_forget_filled_host)

    @torch.no_grad()
    def push(self, keys: Tensor, labels: Tensor | None = None) -> None:
        """Enqueue ``keys`` (and their ``labels``), overwriting the oldest rows.

        Shape: keys (B, dim), labels (B,).
        """
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must have shape (B, {self.dim}), got {tuple(keys.shape)}")
        if self.with_labels != (labels is not None):
            raise ValueError(f"labels must be given if and only if with_labels={self.with_labels}")
        batch = keys.shape[0]
        kept = min(batch, self.size)
        offsets = torch.arange(batch - kept, batch, device=self.ptr.device)
        rows = (self.ptr + offsets) % self.size
        self.features.index_copy_(0, rows, keys[batch - kept :].detach().to(self.features.dtype))
        if labels is not None:
            self.labels.index_copy_(0, rows, labels[batch - kept :].to(self.labels))
        self.ptr.copy_((self.ptr + batch) % self.size)
        self.filled.clamp_(max=self.size - batch).add_(batch)  # min(filled + B, size)
        if self._filled_host is not None:
            self._filled_host = min(self._filled_host + batch, self.size)

    def _num_valid(self) -> int:
        if self._filled_host is None:
            self._filled_host = int(self.filled)
        return self._filled_host

    def is_full(self) -> bool:
        """Whether every row has been written (always, with ``random_init``)."""
        return self._num_valid() == self.size

    def valid(self) -> Tensor:
        """The filled rows, shape ``(filled, dim)`` (all rows once full or with ``random_init``)."""
        return self.features[: self._num_valid()]

    def valid_labels(self) -> Tensor:
        """Labels of the rows of :meth:`valid`, shape ``(filled,)``."""
        if not self.with_labels:
            raise RuntimeError("this queue was built with with_labels=False")
        return self.labels[: self._num_valid()]

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, with_labels={self.with_labels}"


def _forget_filled_host(module: FeatureQueue, incompatible_keys: object) -> None:
    module._filled_host = None
