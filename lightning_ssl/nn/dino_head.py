"""The DINO projection head: MLP, L2-normalized bottleneck, weight-normalized prototypes."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """MLP -> L2 normalization -> weight-normalized linear layer (Caron et al., 2021, Sec. 3.1).

    As the official ``DINOHead`` (``vision_transformer.py``): ``num_layers`` linear layers with
    GELU (and BatchNorm if ``use_bn``; DINO uses none with ViTs) down to a ``bottleneck_dim``
    embedding that is L2-normalized, then ``last_layer``, a bias-free linear layer to ``out_dim``
    with weight normalization ``W = g * V / ||V||`` per output unit. ``g`` starts at 1 and, with
    ``norm_last_layer``, stays frozen at 1 (better stability; DINO trains it with ViT-S/16).
    The MLP weights use a truncated normal (std 0.02), the last layer PyTorch's default.

    Args:
        in_dim: backbone feature size.
        out_dim: output size ``K`` (DINO: 65,536).
        use_bn: BatchNorm after each hidden linear layer (DINO: off for ViTs).
        norm_last_layer: freeze the weight-norm scale ``g`` of the last layer at 1.
        num_layers: linear layers of the MLP (DINO: 3).
        hidden_dim: hidden width of the MLP (DINO: 2048).
        bottleneck_dim: size of the normalized embedding (DINO: 256).

    Examples:
        >>> head = DINOHead(384, out_dim=1024)
        >>> head(torch.randn(4, 384)).shape
        torch.Size([4, 1024])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        num_layers: int = 3,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(d_in, d_out))
            if i < num_layers - 1:
                layers += [nn.BatchNorm1d(d_out)] if use_bn else []
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self.weight_g.fill_(1.0)
        self.weight_g.requires_grad_(not norm_last_layer)

    @property
    def weight_g(self) -> nn.Parameter:
        """The weight-norm scale ``g`` of the last layer, shape ``(out_dim, 1)``."""
        return self.last_layer.parametrizations.weight.original0

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, in_dim) -> (B, out_dim)."""
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))
