"""Negative cosine similarity: the prediction loss of BYOL and SimSiam."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lightning_ssl.losses._precision import float32


@float32
def negative_cosine_similarity(p: Tensor, z: Tensor) -> Tensor:
    """Mean over rows of ``-cos(p, stopgrad(z))`` (SimSiam, Chen & He, 2021, eq. 1).

    BYOL (Grill et al., 2020, eq. 2) writes the same loss as
    ``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)``, i.e. ``2 + 2 * negative_cosine_similarity(p, z)``:
    the same gradients up to a factor 2 (absorbed by the learning rate).

    The target ``z`` is detached: only the predictor branch ``p`` receives gradients.

    Args:
        p: ``(B, D)`` predictions (online branch).
        z: ``(B, D)`` targets (target/momentum branch or the other view's projection).

    Returns:
        Scalar in ``[-1, 1]``, the mean over this process's rows.

    Examples:
        >>> import torch
        >>> p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> negative_cosine_similarity(p, torch.tensor([[3.0, 0.0], [1.0, 0.0]]))
        tensor(-0.5000)
    """
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


@float32
def normalized_squared_distance(p: Tensor, z: Tensor) -> Tensor:
    """Mean over rows of ``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, stopgrad(z))`` (BYOL, eq. 2).

    The official ``helpers.regression_loss`` (deepmind-research ``byol/utils/helpers.py``) and
    solo-learn's ``byol_loss_func``: twice the gradient of :func:`negative_cosine_similarity`.

    Examples:
        >>> import torch
        >>> normalized_squared_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 5.0]]))
        tensor(2.)
    """
    return (F.normalize(p, dim=-1) - F.normalize(z.detach(), dim=-1)).pow(2).sum(dim=-1).mean()
