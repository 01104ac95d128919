"""ProtoNCE's prototype term (Li et al., 2021, "Prototypical Contrastive Learning of
Unsupervised Representations", eq. 11): a query against its cluster's prototype and other
prototypes, each prototype with its own temperature, the concentration ``phi``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl.losses._precision import float32


@float32
def proto_nce_loss(
    query: Tensor, prototypes: Tensor, concentration: Tensor, positives: Tensor, candidates: Tensor
) -> Tensor:
    """``-log exp(v . c_s / phi_s) / sum_{j in candidates} exp(v . c_j / phi_j)``, batch mean.

    For one clustering: ``v`` a query, ``s`` its cluster (``positives``), ``c`` the
    L2-normalised prototypes and ``phi`` their concentrations; the denominator runs over the
    ``candidates``, the prototypes of the batch's clusters and ``r`` sampled others (official
    ``pcl/builder.py``; each prototype counted once). PCL's loss is InfoNCE plus the mean of
    this term over the granularities. Gradients reach ``query`` only (prototypes are buffers).

    Args:
        query: ``(B, D)`` queries; normalised inside.
        prototypes: ``(K, D)`` prototypes; the rows used are normalised inside.
        concentration: ``(K,)`` ``phi`` of each prototype.
        positives: ``(B,)`` each query's cluster; every one must be among ``candidates``.
        candidates: ``(C,)`` distinct prototype ids of the denominator.

    Examples:
        >>> prototypes = torch.eye(3)
        >>> phi = torch.full((3,), 0.1)
        >>> loss = proto_nce_loss(prototypes[:2], prototypes, phi, torch.tensor([0, 1]),
        ...                       torch.arange(3))
        >>> float(loss) < 1e-3  # log(1 + 2 exp(-10))
        True
    """
    selected = F.normalize(prototypes.detach()[candidates], dim=1)
    logits = F.normalize(query, dim=1) @ selected.T / concentration.detach()[candidates]
    position = torch.full((len(prototypes),), -1, dtype=torch.long, device=candidates.device)
    position[candidates] = torch.arange(len(candidates), device=candidates.device)
    return F.cross_entropy(logits, position[positives])
