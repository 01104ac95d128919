"""Batched k-means on the accelerator, seeded and deterministic, after faiss' ``Clustering``.

PCL's official code clusters with ``faiss.Clustering`` (``niter=20``, ``nredo=5``,
``max_points_per_centroid=1000``, L2 distances on L2-normalised features). :func:`kmeans` follows
the same algorithm in torch, so it runs wherever the features are (GPU or CPU) without faiss:

* training points: all, or a random ``k * max_points_per_centroid`` of them when there are more;
* each of ``restarts`` runs starts from ``k`` distinct random training points and makes
  ``iterations`` Lloyd steps (assign each point to its nearest centroid, move each centroid to
  the mean of its points); an empty cluster takes half of a cluster chosen with probability
  proportional to its size minus one, the two centroids pushed apart by a factor ``1 +- 1/1024``
  (faiss ``split_clusters``); the run with the lowest objective (sum of squared distances at
  its last assignment) is kept;
* finally every point is assigned to the kept centroids (faiss' ``index.search(x, 1)``).

Distances are computed block by block (``block_elements`` entries of the point-centroid matrix
at once), so memory stays bounded for ImageNet sizes (1.28 M points, 100 k centroids). The
results are bit-for-bit reproducible for a seed on a device: the random draws come from a
seeded generator, and sums are exact sums of fixed-point integers, which do not depend on the
order in which a GPU adds them (float atomics would).

Examples:
    >>> x = torch.cat([torch.randn(50, 2) * 0.1 + 5, torch.randn(50, 2) * 0.1 - 5])
    >>> result = kmeans(x, k=2, seed=0)
    >>> sorted(torch.bincount(result.assignments).tolist())
    [50, 50]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: faiss ``split_clusters``' relative perturbation of a split centroid.
SPLIT_EPS = 1.0 / 1024.0


@dataclass(frozen=True)
class KMeansResult:
    """``centroids`` ``(k, D)``; each point's nearest centroid ``assignments`` ``(N,)`` and its
    squared L2 ``distances`` ``(N,)`` to it; the kept run's ``objective`` (faiss': the sum of
    squared distances of the training points at its last assignment)."""

    centroids: Tensor
    assignments: Tensor
    distances: Tensor
    objective: float


def kmeans(
    x: Tensor,
    k: int,
    iterations: int = 20,
    restarts: int = 5,
    seed: int = 0,
    max_points_per_centroid: int = 1000,
    block_elements: int = 1 << 26,
) -> KMeansResult:
    """Lloyd's k-means with L2 distances, the best of ``restarts`` runs (faiss semantics).

    Args:
        x: ``(N, D)`` points (PCL: L2-normalised features), on the device to compute on.
        k: number of clusters, at most ``N``.
        iterations: Lloyd steps per run (faiss ``niter``, PCL: 20).
        restarts: runs from different random starts, the best kept (faiss ``nredo``, PCL: 5).
        seed: seed of every random draw (subsample, starts, splits).
        max_points_per_centroid: train on at most ``k`` times this many random points (faiss:
            PCL sets 1000); every point is assigned at the end.
        block_elements: entries of the point-centroid distance matrix computed at once.

    Returns:
        The centroids (not normalised) and every point's assignment and squared distance.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= N points, got k={k} for N={n}")
    if iterations < 1 or restarts < 1:
        raise ValueError(f"iterations and restarts must be >= 1, got {iterations}, {restarts}")
    x = x.float()
    generator = torch.Generator(x.device).manual_seed(seed)
    train = x
    if n > k * max_points_per_centroid:
        keep = torch.randperm(n, generator=generator, device=x.device)
        train = x[keep[: k * max_points_per_centroid]]
    best, best_objective = None, math.inf
    for run in range(restarts):
        generator.manual_seed(seed + 1 + run * 15486557)  # faiss' seed of each redo
        centroids, objective = _lloyd(train, k, iterations, generator, block_elements)
        if objective < best_objective:
            best, best_objective = centroids, objective
    assert best is not None
    assignments, distances = nearest_centroids(x, best, block_elements)
    return KMeansResult(best, assignments, distances, best_objective)


def _lloyd(
    x: Tensor, k: int, iterations: int, generator: torch.Generator, block_elements: int
) -> tuple[Tensor, float]:
    """One run: ``k`` distinct random points as starts, then Lloyd steps; (centroids, objective)."""
    start = torch.randperm(x.shape[0], generator=generator, device=x.device)[:k]
    centroids = x[start].clone()
    fixed, scale = to_fixed_point(x)  # once: the points do not change between steps
    objective = math.inf
    for _ in range(iterations):
        assignments, distances = nearest_centroids(x, centroids, block_elements)
        objective = float(distances.double().sum())
        counts = torch.bincount(assignments, minlength=k)
        sums = fixed_segment_sum(fixed, scale, assignments, k)
        means = (sums / counts.clamp(min=1)[:, None]).float()
        centroids = torch.where(counts[:, None] > 0, means, centroids)
        split_empty_clusters_(centroids, counts, generator)
    return centroids, objective


def nearest_centroids(
    x: Tensor, centroids: Tensor, block_elements: int = 1 << 26
) -> tuple[Tensor, Tensor]:
    """Each point's nearest centroid (the first on ties) and its squared L2 distance.

    Shape: x (N, D), centroids (K, D) -> (N,) long, (N,) float.

    Examples:
        >>> nearest_centroids(torch.tensor([[0.0], [3.0]]), torch.tensor([[1.0], [2.5]]))
        (tensor([0, 1]), tensor([1.0000, 0.2500]))
    """
    squared_norms = centroids.pow(2).sum(dim=1)
    rows = max(1, block_elements // max(len(centroids), 1))
    assignments, distances = [], []
    for block in x.split(rows):
        # ||x - c||^2 = ||x||^2 + (||c||^2 - 2 x.c): the argmin needs the bracket only
        partial = torch.addmm(squared_norms, block, centroids.T, alpha=-2.0)
        nearest, index = partial.min(dim=1)
        distances.append((nearest + block.pow(2).sum(dim=1)).clamp_(min=0.0))
        assignments.append(index)
    return torch.cat(assignments), torch.cat(distances)


def segment_sum(values: Tensor, segments: Tensor, num_segments: int) -> Tensor:
    """``out[s] = sum of values[i] with segments[i] == s`` in float64, exactly reproducible.

    The values are rounded to fixed-point integers (:func:`to_fixed_point`); integer sums do
    not depend on the order of the additions, so the result is the same on every run and
    device, where float ``index_add_`` on a GPU is not.

    Shape: values (N, ...) and segments (N,) -> (num_segments, ...).

    Examples:
        >>> segment_sum(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1, 0, 1]), 3)
        tensor([2., 5., 0.], dtype=torch.float64)
    """
    return fixed_segment_sum(*to_fixed_point(values), segments, num_segments)


def to_fixed_point(values: Tensor) -> tuple[Tensor, float]:
    """``(round(values * scale) as int64, scale)`` with the largest power-of-two ``scale`` for
    which no sum of the ``N`` rows can overflow: a resolution of ``max|values| * N / 2**62``,
    ~1e-12 for a million unit vectors."""
    bound = float(values.abs().max()) if values.numel() else 0.0
    if bound == 0.0:
        return torch.zeros_like(values, dtype=torch.int64), 1.0
    scale = 2.0 ** math.floor(math.log2(2.0**62 / (bound * max(len(values), 1))))
    return values.double().mul_(scale).round_().long(), scale


def fixed_segment_sum(fixed: Tensor, scale: float, segments: Tensor, num_segments: int) -> Tensor:
    """Segment sums (float64) of fixed-point values made by :func:`to_fixed_point`."""
    out = torch.zeros((num_segments, *fixed.shape[1:]), dtype=torch.int64, device=fixed.device)
    return out.index_add_(0, segments, fixed).double().div_(scale)


def split_empty_clusters_(centroids: Tensor, counts: Tensor, generator: torch.Generator) -> None:
    """faiss ``split_clusters``, in place: each empty cluster copies a cluster drawn with
    probability proportional to ``size - 1`` (distinct donors, so no two copies coincide) and
    the pair is pushed apart by ``1 +- SPLIT_EPS`` alternately along the dimensions. Empty
    clusters without a donor left (more empties than clusters of 2 or more) stay for the next
    iteration."""
    empty = (counts == 0).nonzero().squeeze(1)
    weights = (counts - 1).clamp(min=0).double()
    donors_available = int((weights > 0).sum())
    take = min(len(empty), donors_available)
    if take == 0:
        return
    donors = torch.multinomial(weights, take, replacement=False, generator=generator)
    receivers = empty[:take]
    sign = torch.ones(centroids.shape[1], device=centroids.device)
    sign[1::2] = -1.0
    copies = centroids[donors]
    centroids[receivers] = copies * (1.0 + SPLIT_EPS * sign)
    centroids[donors] = copies * (1.0 - SPLIT_EPS * sign)
