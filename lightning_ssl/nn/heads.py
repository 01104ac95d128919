"""MLP projection and prediction heads shared by every method."""

from __future__ import annotations

import itertools

from torch import nn


class MLP(nn.Sequential):
    """``num_layers`` linear layers; BatchNorm and ReLU between them, optional BN at the end.

    The layouts of the papers: SimCLR ``MLP(d, 2048, 128)``; BYOL ``MLP(d, 4096, 256)``;
    SimSiam projector ``MLP(d, 2048, 2048, num_layers=3, last_batch_norm=True)``; MoCo v3
    ``MLP(d, 4096, 256, num_layers=3, last_batch_norm=True, last_affine=False)``; Barlow Twins
    and VICReg ``MLP(d, 8192, 8192, num_layers=3)``.

    Args:
        in_dim: input features.
        hidden_dim: width of the hidden layers.
        out_dim: output features.
        num_layers: number of linear layers (>= 1).
        batch_norm: BatchNorm after each hidden linear layer.
        last_batch_norm: BatchNorm after the last linear layer.
        last_affine: whether that last BatchNorm has learnable scale and shift.

    Example:
        >>> import torch
        >>> MLP(512, 2048, 128)(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
        last_affine: bool = True,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
            last = i == num_layers - 1
            norm = last_batch_norm if last else batch_norm
            layers.append(nn.Linear(d_in, d_out, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm1d(d_out, affine=last_affine if last else True))
            if not last:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.out_dim = out_dim
