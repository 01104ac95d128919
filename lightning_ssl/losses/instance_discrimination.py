"""Instance discrimination (Wu et al., 2018): each image is its own class, its weight a memory
bank entry. The non-parametric softmax (eq. 2) and its NCE approximation (eqs. 3-6).

Notation of the paper: ``v = f(x)`` the L2-normalised feature of an image, ``v_i`` its memory
bank entry, ``tau`` the temperature, ``N`` the number of training images,
``P(i|v) = exp(v_i . v / tau) / Z`` and ``P_n = 1 / N`` the uniform noise distribution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl.losses._precision import float32


@float32
def instance_softmax_loss(
    features: Tensor, bank: Tensor, indices: Tensor, temperature: float
) -> Tensor:
    """The full non-parametric softmax (eq. 2): ``-log P(i|v)`` averaged over the batch, with
    ``P(i|v) = exp(v_i . v / tau) / sum_j exp(v_j . v / tau)`` over all ``N`` bank entries.

    The official code's ``LinearAverage`` with ``CrossEntropyLoss`` (``--nce-k 0``). Gradients
    reach ``features`` only (the bank is a buffer, updated by the momentum rule).

    Args:
        features: ``(B, D)`` L2-normalised features ``v``.
        bank: ``(N, D)`` memory bank.
        indices: ``(B,)`` each feature's image index ``i``.
        temperature: ``tau`` (paper: 0.07).

    Examples:
        >>> bank = torch.eye(3)
        >>> float(instance_softmax_loss(bank[:2], bank, torch.tensor([0, 1]), 1.0)) < 1.0
        True
    """
    logits = features @ bank.detach().T / temperature
    return F.cross_entropy(logits, indices)


@float32
def nce_loss(
    features: Tensor,
    candidates: Tensor,
    temperature: float,
    log_normalizer: Tensor | float,
    num_samples: int,
) -> Tensor:
    """Noise-contrastive estimation of the instance softmax (eqs. 3-6), averaged over the batch.

    Each feature ``v`` is scored against ``1 + m`` bank entries: its own ``v_i`` (the data
    sample, column 0) and ``m`` noise entries drawn from ``P_n = 1/N``. With
    ``P(j|v) = exp(v_j . v / tau) / Z`` and ``h(j, v) = P(j|v) / (P(j|v) + m P_n)``, the loss is
    ``-log h(i, v) - sum_noise log(1 - h(j, v))`` (the official ``NCECriterion``, computed in log
    space, which is stable: ``log h = -softplus(log(m P_n) - log P)``).

    Args:
        features: ``(B, D)`` L2-normalised features ``v``.
        candidates: ``(B, 1 + m, D)`` bank entries: the image's own first, then the noise.
        temperature: ``tau`` (paper: 0.07).
        log_normalizer: ``log Z`` (the paper estimates ``Z`` once from the first batch).
        num_samples: ``N``, the number of training images.

    Examples:
        >>> v = F.normalize(torch.randn(2, 4), dim=1)
        >>> rows = torch.cat([v[:, None], F.normalize(torch.randn(2, 3, 4), dim=2)], 1)
        >>> nce_loss(v, rows, 0.07, log_normalizer=math.log(10.0), num_samples=100).shape
        torch.Size([])
    """
    noise = candidates.shape[1] - 1
    log_probs = torch.einsum("bkd,bd->bk", candidates.detach(), features) / temperature
    log_probs = log_probs - log_normalizer
    log_noise = math.log(noise / num_samples)  # log(m P_n)
    log_h_data = -F.softplus(log_noise - log_probs[:, 0])
    log_not_h_noise = -F.softplus(log_probs[:, 1:] - log_noise)
    return -(log_h_data + log_not_h_noise.sum(dim=1)).mean()
