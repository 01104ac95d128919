"""k-means (faiss semantics in torch), the concentration estimate of the official code, the
negative prototype draw and the prototype buffers' checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_ssl.nn.clusters import (
    Prototypes,
    cluster_features,
    concentration,
    sample_candidates,
)
from lightning_ssl.nn.kmeans import kmeans, nearest_centroids, segment_sum, split_empty_clusters_


def _blobs(num: int, per: int, dim: int = 16, noise: float = 0.05, seed: int = 0):
    """``num`` well separated unit-norm clusters of ``per`` points, and the true labels."""
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(num, dim, generator=g), dim=1)
    labels = torch.arange(num).repeat_interleave(per)
    points = centers[labels] + noise * torch.randn(num * per, dim, generator=g)
    order = torch.randperm(num * per, generator=g)
    return F.normalize(points, dim=1)[order], labels[order]


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to renaming the clusters: a one-to-one map between the labels."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_recovers_separable_clusters_and_is_deterministic_for_a_seed():
    x, truth = _blobs(num=4, per=60)
    result = kmeans(x, 4, restarts=10, seed=0)
    assert _same_partition(result.assignments, truth)
    assert result.centroids.shape == (4, 16) and result.distances.shape == (240,)
    expected = ((x - result.centroids[result.assignments]) ** 2).sum(1)
    assert torch.allclose(result.distances, expected, atol=1e-5)
    again = kmeans(x, 4, restarts=10, seed=0)
    assert torch.equal(again.centroids, result.centroids)
    assert torch.equal(again.assignments, result.assignments)
    assert torch.equal(again.distances, result.distances)


def test_restarts_keep_the_run_with_the_lowest_objective():
    """Run ``r`` of a k-means with seed ``s`` is the single run of seed ``s + r * 15486557``
    (faiss' redo seeds): the one with the lowest objective is kept, bit for bit."""
    x, _ = _blobs(num=6, per=20, noise=0.3)
    best = kmeans(x, 6, iterations=5, restarts=4, seed=7)
    singles = [kmeans(x, 6, iterations=5, restarts=1, seed=7 + r * 15486557) for r in range(4)]
    objectives = [run.objective for run in singles]
    assert len(set(objectives)) > 1  # the starts matter here
    assert best.objective == min(objectives)
    assert torch.equal(best.centroids, singles[objectives.index(min(objectives))].centroids)


def test_trains_on_a_subsample_of_max_points_per_centroid_then_assigns_every_point():
    x, truth = _blobs(num=3, per=200)
    result = kmeans(x, 3, restarts=10, max_points_per_centroid=20, seed=1)  # 60 of 600 points
    assert result.assignments.shape == (600,)
    assert _same_partition(result.assignments, truth)
    assert not torch.equal(result.centroids, kmeans(x, 3, restarts=10, seed=1).centroids)


def test_an_empty_cluster_takes_half_of_a_large_one():
    centroids = torch.tensor([[1.0, 2.0], [5.0, 5.0], [9.0, 9.0]])
    counts = torch.tensor([10, 0, 1])  # only cluster 0 has points to spare
    split_empty_clusters_(centroids, counts, torch.Generator().manual_seed(0))
    eps = 1 / 1024
    assert torch.allclose(centroids[1], torch.tensor([1 + eps, 2 * (1 - eps)]))
    assert torch.allclose(centroids[0], torch.tensor([1 - eps, 2 * (1 + eps)]))
    assert torch.equal(centroids[2], torch.tensor([9.0, 9.0]))


def test_nearest_centroids_in_blocks_and_exact_segment_sums():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(300, 8, generator=g), torch.randn(17, 8, generator=g)
    index, distance = nearest_centroids(x, c, block_elements=50)  # 2 rows per block
    full = torch.cdist(x.double(), c.double()) ** 2
    assert torch.equal(index, full.argmin(1))
    assert torch.allclose(distance.double(), full.min(1).values, atol=1e-4)
    sums = segment_sum(x, index, 17)
    expected = torch.zeros(17, 8, dtype=torch.float64).index_add_(0, index, x.double())
    assert torch.allclose(sums, expected, atol=1e-9)
    order = torch.randperm(300, generator=g)  # integer sums: any order, the same bits
    assert torch.equal(segment_sum(x[order], index[order], 17), sums)


def _official_density(distances: np.ndarray, im2cluster: list[int], k: int, temperature: float):
    """main_pcl.py run_kmeans, lines 441-460, on faiss' squared distances ``D``."""
    Dcluster = [[] for _ in range(k)]
    for im, i in enumerate(im2cluster):
        Dcluster[i].append(distances[im])
    density = np.zeros(k)
    for i, dist in enumerate(Dcluster):
        if len(dist) > 1:
            density[i] = (np.asarray(dist) ** 0.5).mean() / np.log(len(dist) + 10)
    dmax = density.max()
    for i, dist in enumerate(Dcluster):
        if len(dist) <= 1:
            density[i] = dmax
    density = density.clip(np.percentile(density, 10), np.percentile(density, 90))
    return temperature * density / density.mean()


def test_concentration_is_the_official_estimate():
    g = torch.Generator().manual_seed(0)
    k = 20
    assignments = torch.randint(0, k - 3, (400,), generator=g)  # 3 empty clusters
    assignments[0] = k - 2  # and one of a single image
    distances = torch.rand(400, generator=g) * 0.5
    phi = concentration(distances, assignments, k, temperature=0.2, alpha=10.0)
    official = _official_density(distances.double().numpy(), assignments.tolist(), k, 0.2)
    assert phi.dtype == torch.float32
    assert np.allclose(phi.double().numpy(), official, rtol=1e-6)


def test_cluster_features_seeds_each_granularity_and_normalises_the_prototypes():
    x, truth = _blobs(num=3, per=30)
    levels = cluster_features(x, [3, 6], temperature=0.2, seed=4, restarts=10)
    assert [tuple(level.centroids.shape) for level in levels] == [(3, 16), (6, 16)]
    assert torch.allclose(levels[1].centroids.norm(dim=1), torch.ones(6))
    assert torch.equal(levels[1].assignments, kmeans(x, 6, restarts=10, seed=5).assignments)
    assert _same_partition(levels[0].assignments, truth)
    assert float(levels[0].concentration.mean()) == pytest.approx(0.2)


def test_sample_candidates_are_the_batch_clusters_then_distinct_others():
    positives = torch.tensor([5, 2, 5, 9])
    draw = sample_candidates(positives, 100, 10, torch.Generator().manual_seed(3))
    assert draw[:3].tolist() == [2, 5, 9] and len(draw) == 13
    assert len(set(draw.tolist())) == 13  # no prototype twice
    again = sample_candidates(positives, 100, 10, torch.Generator().manual_seed(3))
    assert torch.equal(draw, again)
    everything = sample_candidates(positives, 12, 100, torch.Generator().manual_seed(3))
    assert sorted(everything.tolist()) == list(range(12))  # fewer than r: all of them


def test_prototype_buffers_take_the_shapes_of_a_checkpoint():
    x, _ = _blobs(num=2, per=10)
    saved = Prototypes(num_levels=2)
    saved.store(cluster_features(x, [2, 4], temperature=0.2, restarts=1), epoch=3)
    fresh = Prototypes(num_levels=2)
    assert not fresh.ready
    fresh.load_state_dict(saved.state_dict())
    assert fresh.ready and int(fresh.epoch) == 3
    for a, b in zip(fresh.clusterings(), saved.clusterings(), strict=True):
        assert torch.equal(a.centroids, b.centroids) and torch.equal(a.assignments, b.assignments)
        assert torch.equal(a.concentration, b.concentration)
