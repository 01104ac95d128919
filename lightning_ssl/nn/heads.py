"""MLP projection and prediction heads shared by every method, in the sources' BatchNorm layouts."""

from __future__ import annotations

import itertools
from typing import Literal

from torch import nn

#: Where an MLP head has BatchNorm: after every linear layer, after the hidden ones only, nowhere.
BatchNormLayout = Literal["all", "hidden", "none"]
#: What the BatchNorm after the last layer learns: scale and shift, the scale only (official
#: SimCLR: ``center=False``), or nothing (MoCo v3, SimSiam: ``affine=False``).
LastNormAffine = Literal["scale_shift", "scale", "none"]


class MLP(nn.Sequential):
    """``num_layers`` linear layers; BatchNorm and ReLU between them, optional BN at the end.

    A linear layer followed by BatchNorm has no bias (BN's shift replaces it). The layouts of the
    official code:

    - SimCLR (``model_util.py`` ``projection_head``): ``MLP(d, d, 128, batch_norm=True,
      last_batch_norm=True, last_shift=False)``, BN on every layer, the last without shift.
    - BYOL (``utils/networks.py`` ``MLP``): ``MLP(d, 4096, 256, last_bias=False)``.
    - SimSiam projector: ``MLP(d, 2048, 2048, num_layers=3, last_batch_norm=True,
      last_affine=False)``; MoCo v3 ``MLP(d, 4096, 256, num_layers=3, last_batch_norm=True,
      last_affine=False)``; MoCo v2 ``MLP(d, 2048, 128, batch_norm=False)``.

    Args:
        in_dim: input features.
        hidden_dim: width of the hidden layers.
        out_dim: output features.
        num_layers: number of linear layers (>= 1).
        batch_norm: BatchNorm after each hidden linear layer.
        last_batch_norm: BatchNorm after the last linear layer.
        last_affine: whether that last BatchNorm has a learnable scale (and shift).
        last_shift: with ``last_affine``, whether it also has a learnable shift; ``False`` keeps
            the shift a frozen zero (official SimCLR's bias-free output). A frozen parameter
            rather than none, so the layer stays a plain ``BatchNorm1d`` that
            ``SyncBatchNorm.convert_sync_batchnorm`` converts with its scale.
        last_bias: bias of the last linear layer when no BatchNorm follows it (BYOL: none).

    Examples:
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
        last_shift: bool = True,
        last_bias: bool = True,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
            last = i == num_layers - 1
            norm = last_batch_norm if last else batch_norm
            layers.append(nn.Linear(d_in, d_out, bias=not norm and (last_bias or not last)))
            if norm:
                layers.append(nn.BatchNorm1d(d_out, affine=last_affine if last else True))
            if not last:
                layers.append(nn.ReLU(inplace=True))
        if last_batch_norm and last_affine and not last_shift:
            layers[-1].bias.requires_grad_(False)  # stays 0: optimizers skip frozen parameters
        super().__init__(*layers)
        self.out_dim = out_dim

    @classmethod
    def with_layout(
        cls,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batch_norm: BatchNormLayout = "hidden",
        last_norm_affine: LastNormAffine = "scale_shift",
        last_bias: bool = True,
    ) -> MLP:
        """An MLP from a named BatchNorm layout (the typed options methods expose).

        Examples:
            >>> head = MLP.with_layout(512, 512, 128, batch_norm="all", last_norm_affine="scale")
            >>> head[-1].weight.requires_grad, head[-1].bias.requires_grad
            (True, False)
        """
        return cls(
            in_dim,
            hidden_dim,
            out_dim,
            num_layers,
            batch_norm=batch_norm != "none",
            last_batch_norm=batch_norm == "all",
            last_affine=last_norm_affine != "none",
            last_shift=last_norm_affine == "scale_shift",
            last_bias=last_bias,
        )
