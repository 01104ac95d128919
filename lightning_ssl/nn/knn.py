"""Weighted k-nearest-neighbour classification (InstDisc, Wu et al., 2018; DINO, 2021)."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 65536,
) -> Tensor:
    """Class scores of ``query`` by a cosine-similarity kNN vote over ``bank``.

    Each of the ``k`` nearest bank features votes for its label with weight ``exp(s / T)``, ``s``
    the cosine similarity. The bank is scanned in chunks with a running top-k, so memory is
    ``O(Q * (k + chunk_size))`` whatever the bank size. Bank rows with label ``-1`` are padding
    and never vote.

    Args:
        query: ``(Q, D)`` features, L2-normalized.
        bank: ``(N, D)`` features, L2-normalized.
        bank_labels: ``(N,)`` labels in ``[0, num_classes)`` or ``-1``.
        num_classes: number of classes.
        k: neighbours (DINO: 20; InstDisc and lightly's CIFAR protocol: 200).
        temperature: ``T`` of the vote weights.
        chunk_size: bank rows compared at once.

    Returns:
        ``(Q, num_classes)`` scores; ``argmax`` is the prediction.

    Examples:
        >>> bank = torch.nn.functional.normalize(torch.eye(3), dim=1)
        >>> knn_predict(bank[:1], bank, torch.tensor([0, 1, 2]), 3, k=1).argmax(1)
        tensor([0])
    """
    k = min(k, bank.shape[0])
    top_sim = query.new_full((query.shape[0], 0), float("-inf"), dtype=torch.float32)
    top_lab = bank_labels.new_empty((query.shape[0], 0))
    for start in range(0, bank.shape[0], chunk_size):
        chunk = bank[start : start + chunk_size]
        labels = bank_labels[start : start + chunk_size]
        sim = (query @ chunk.T).float().masked_fill(labels[None, :] < 0, float("-inf"))
        top_sim = torch.cat([top_sim, sim], dim=1)
        top_lab = torch.cat([top_lab, labels[None, :].expand(query.shape[0], -1)], dim=1)
        top_sim, index = top_sim.topk(min(k, top_sim.shape[1]), dim=1)
        top_lab = top_lab.gather(1, index)
    weights = (top_sim / temperature).exp()  # padding rows: exp(-inf) = 0
    scores = torch.zeros(query.shape[0], num_classes, device=query.device)
    return scores.scatter_add_(1, top_lab.clamp(min=0), weights)
