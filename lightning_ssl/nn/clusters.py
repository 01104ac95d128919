"""PCL's prototypes: k-means of the training features at several granularities, with each
prototype's concentration, kept in buffers (so they are in checkpoints).

``Prototypes`` holds, per granularity ``m``, the normalised centroids ``c`` ``(K_m, D)``, the
concentrations ``phi`` ``(K_m,)`` and each training image's cluster ``(N,)`` (the official
``im2cluster``), plus the epoch they were computed at (``-1``: none yet). The buffers take the
shapes of what is written into them or loaded from a checkpoint, so a model built before its
dataset is known loads any clustering. Pure tensor operations: the clustering itself runs on one
process and is broadcast (see :class:`lightning_ssl.callbacks.clustering.PrototypeClustering`).

Examples:
    >>> features = F.normalize(torch.randn(40, 8), dim=1)
    >>> levels = cluster_features(features, [2, 4], temperature=0.2, restarts=1)
    >>> prototypes = Prototypes(num_levels=2)
    >>> prototypes.store(levels, epoch=0)
    >>> [tuple(level.centroids.shape) for level in prototypes.levels], int(prototypes.epoch)
    ([(2, 8), (4, 8)], 0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl.nn.kmeans import kmeans, segment_sum


class Clustering(NamedTuple):
    """One granularity: ``centroids`` ``(K, D)`` (unit norm), ``concentration`` ``(K,)``,
    ``assignments`` ``(N,)``."""

    centroids: Tensor
    concentration: Tensor
    assignments: Tensor


def concentration(
    distances: Tensor, assignments: Tensor, k: int, temperature: float, alpha: float = 10.0
) -> Tensor:
    """Each prototype's concentration ``phi`` (Li et al., 2021, eq. 12), as the official code.

    ``phi = sum_z ||v_z - c|| / (Z log(Z + alpha))`` over the ``Z`` features of the cluster
    (``main_pcl.py`` ``run_kmeans``: the mean distance over ``log(Z + 10)``); a cluster of at
    most one feature takes the largest ``phi`` of the others; then ``phi`` is clamped to its
    10th and 90th percentiles and scaled to mean ``temperature``.

    Args:
        distances: ``(N,)`` squared L2 distance of each feature to its centroid.
        assignments: ``(N,)`` each feature's cluster.
        k: number of clusters.
        temperature: the mean of the returned ``phi`` (PCL: the InfoNCE temperature, 0.2).
        alpha: smoothing of small clusters (paper: 10).

    Examples:
        >>> phi = concentration(torch.rand(30), torch.arange(30) % 3, k=3, temperature=0.2)
        >>> round(float(phi.mean()), 6)
        0.2
    """
    counts = torch.bincount(assignments, minlength=k).double()
    mean_distance = segment_sum(distances.double().clamp(min=0).sqrt(), assignments, k) / (
        counts.clamp(min=1)
    )
    phi = torch.where(counts > 1, mean_distance / torch.log(counts + alpha), 0.0)
    phi = torch.where(counts > 1, phi, phi.max())
    if float(phi.max()) == 0.0:  # no cluster with two features: no spread to measure
        phi = torch.ones_like(phi)
    low, high = torch.quantile(phi, torch.tensor([0.1, 0.9], dtype=phi.dtype, device=phi.device))
    phi = phi.clamp(low, high)
    return (temperature * phi / phi.mean()).float()


def cluster_features(
    features: Tensor,
    num_clusters: Sequence[int],
    temperature: float,
    alpha: float = 10.0,
    seed: int = 0,
    **kmeans_options: Any,
) -> list[Clustering]:
    """k-means of ``features`` at each granularity (seed ``seed + m`` for the ``m``-th, as the
    official ``run_kmeans``), normalised centroids and concentrations.

    Args:
        features: ``(N, D)`` L2-normalised features of the training images, in dataset order.
        num_clusters: ``K`` of each granularity (PCL on ImageNet: 25000, 50000, 100000).
        temperature: mean concentration (:func:`concentration`).
        alpha: concentration smoothing (paper: 10).
        seed: base seed of the k-means draws.
        **kmeans_options: ``iterations``, ``restarts``, ``max_points_per_centroid``,
            ``block_elements`` of :func:`~lightning_ssl.nn.kmeans.kmeans`.
    """
    levels = []
    for m, k in enumerate(num_clusters):
        result = kmeans(features, k, seed=seed + m, **kmeans_options)
        phi = concentration(result.distances, result.assignments, k, temperature, alpha)
        levels.append(Clustering(F.normalize(result.centroids, dim=1), phi, result.assignments))
    return levels


class PrototypeLevel(nn.Module):
    """The buffers of one granularity (empty until a clustering is stored or loaded)."""

    centroids: Tensor
    concentration: Tensor
    assignments: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("centroids", torch.zeros(0, 0))
        self.register_buffer("concentration", torch.zeros(0))
        self.register_buffer("assignments", torch.zeros(0, dtype=torch.long))

    @property
    def num_clusters(self) -> int:
        return self.centroids.shape[0]

    def store(self, clustering: Clustering) -> None:
        for name, value in clustering._asdict().items():
            self._buffers[name] = value.detach().to(self._buffers[name])

    def match_shapes(self, state_dict: Mapping[str, Any], prefix: str) -> None:
        """Resize the buffers to those of ``state_dict`` (a checkpoint's) before loading it."""
        for name, buffer in list(self._buffers.items()):
            incoming = state_dict.get(prefix + name)
            if buffer is not None and incoming is not None and incoming.shape != buffer.shape:
                self._buffers[name] = buffer.new_empty(incoming.shape)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        self.match_shapes(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return f"num_clusters={self.num_clusters}, num_images={self.assignments.shape[0]}"


class Prototypes(nn.Module):
    """The clusterings of every granularity and the ``epoch`` they were computed at.

    Args:
        num_levels: number of granularities (PCL on ImageNet: 3).
    """

    epoch: Tensor

    def __init__(self, num_levels: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(PrototypeLevel() for _ in range(num_levels))
        self.register_buffer("epoch", torch.tensor(-1, dtype=torch.long))

    def clusterings(self) -> list[PrototypeLevel]:
        """The levels, one per granularity."""
        return [cast(PrototypeLevel, level) for level in self.levels]

    @property
    def ready(self) -> bool:
        """Whether a clustering has been stored (ProtoNCE applies from then on)."""
        return int(self.epoch) >= 0

    def store(self, levels: Sequence[Clustering], epoch: int) -> None:
        """Write the clusterings computed at ``epoch``."""
        if len(levels) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} clusterings, got {len(levels)}")
        for level, clustering in zip(self.clusterings(), levels, strict=True):
            level.store(clustering)
        self.epoch.fill_(epoch)

    def match_shapes(self, state_dict: Mapping[str, Any], prefix: str = "") -> None:
        """Resize every level's buffers to those of ``state_dict`` (keys under ``prefix``)."""
        for index, level in enumerate(self.clusterings()):
            level.match_shapes(state_dict, f"{prefix}levels.{index}.")

    def buffer_names(self, prefix: str = "") -> list[str]:
        """Names of every buffer under ``prefix`` (identical on every rank: DDP skips them)."""
        return [prefix + name for name, _ in self.named_buffers()]


def sample_candidates(
    positives: Tensor, num_clusters: int, num_negatives: int, generator: torch.Generator
) -> Tensor:
    """Prototype ids a batch is contrasted with: each prototype of ``positives`` once (sorted),
    then ``num_negatives`` others drawn uniformly without replacement (all of them if fewer).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_candidates(torch.tensor([3, 1, 3]), 6, 2, g)[:2].tolist()
        [1, 3]
    """
    present = torch.zeros(num_clusters, dtype=torch.bool, device=positives.device)
    present[positives] = True
    others = (~present).nonzero().squeeze(1)
    if len(others) > num_negatives:
        draw = torch.randperm(len(others), generator=generator, device=others.device)
        others = others[draw[:num_negatives]]
    return torch.cat([present.nonzero().squeeze(1), others])
