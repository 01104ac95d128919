"""CPC's context network: masked convolutions over the grid of patch vectors, and the linear
predictions ``k`` rows ahead (van den Oord et al., 2018; Hénaff et al., 2020).

The context ``c[i, j]`` may see the patch vectors of rows ``<= i`` only (any column): every
convolution is padded above and never below, so no layer reaches a row further down, and
``z[i + k, j]``, ``k >= 1``, stays unseen by the context that predicts it. Other directions
(bottom-up, left-to-right ...) are the same network on the grid turned by :func:`orient`.

Examples:
    >>> net = ContextNetwork(dim=16, hidden_dim=8, num_blocks=2)
    >>> net(torch.randn(2, 7, 7, 16)).shape
    torch.Size([2, 7, 7, 16])
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Where the predicted rows lie from the context: ``down`` is CPC v1's top-to-bottom.
Direction = Literal["down", "up", "right", "left"]
DIRECTIONS: tuple[Direction, ...] = ("down", "up", "right", "left")


def orient(grid: Tensor, direction: Direction) -> Tensor:
    """Turn a ``(B, H, W, D)`` grid so that ``direction`` points down the rows; its own inverse
    for ``down``/``up`` and the transpose for ``right``, ``left`` reads rows right to left."""
    if direction == "down":
        return grid
    if direction == "up":
        return grid.flip(1)
    if direction == "right":
        return grid.transpose(1, 2)
    if direction == "left":
        return grid.transpose(1, 2).flip(1)
    raise ValueError(f"unknown direction {direction!r}; choose from {', '.join(DIRECTIONS)}")


class RowCausalBlock(nn.Module):
    """A residual block whose output row ``i`` depends on input rows ``<= i`` only.

    1x1 conv to ``hidden_dim``, ReLU, a 1x3 conv along the row, a 2x1 conv over the row above
    and the row itself (padded above), ReLU, 1x1 conv back to ``dim``: the bottleneck block of
    pl_bolts' CPC ``PixelCNN`` (its padding value 1 is 0 here).
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(dim, hidden_dim, kernel_size=1)
        self.along_row = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=(1, 3), padding=(0, 1))
        self.from_above = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=(2, 1))
        self.expand = nn.Conv2d(hidden_dim, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.along_row(F.relu(self.reduce(x)))
        h = self.from_above(F.pad(h, (0, 0, 1, 0)))  # one row of zeros on top, none below
        return x + self.expand(F.relu(h))


class ContextNetwork(nn.Module):
    """``num_blocks`` :class:`RowCausalBlock` s and a ReLU over a ``(B, H, W, dim)`` grid.

    Row ``i`` of the output sees input rows ``i - num_blocks`` to ``i``.
    """

    def __init__(self, dim: int, hidden_dim: int = 256, num_blocks: int = 5) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(RowCausalBlock(dim, hidden_dim) for _ in range(num_blocks)))

    def forward(self, grid: Tensor) -> Tensor:
        x = grid.permute(0, 3, 1, 2)  # (B, D, H, W) for the convolutions
        return F.relu(self.blocks(x)).permute(0, 2, 3, 1)


class RowPredictor(nn.Module):
    """The linear predictions ``W_k c[i, j]`` of ``z[i + k, j]`` for ``k = 1 .. steps``.

    Shape: (B, H, W, context_dim) -> (steps, B, H, W, dim).
    """

    def __init__(self, context_dim: int, dim: int, steps: int) -> None:
        super().__init__()
        self.steps, self.dim = steps, dim
        self.linear = nn.Linear(context_dim, steps * dim, bias=False)  # W_1 ... W_K, no bias

    def forward(self, context: Tensor) -> Tensor:
        out = self.linear(context).unflatten(-1, (self.steps, self.dim))
        return torch.movedim(out, -2, 0)
