"""The probe's and kNN monitor's torchmetrics accuracies against counts made by hand."""

import torch

from lightning_ssl.callbacks.accuracy import EpochAccuracy, batch_top1
from lightning_ssl.callbacks.online_probe import topk_correct
from tests.ddp_utils import run_distributed

CPU = torch.device("cpu")


def _hand_count(scores: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    """Samples whose label is among the k highest scores, one sample at a time."""
    hits = 0
    for row, label in zip(scores.tolist(), labels.tolist(), strict=True):
        ranked = sorted(range(len(row)), key=lambda c: -row[c])
        hits += label in ranked[:k]
    return hits


def _rate(hits: int, seen: int) -> float:
    """``hits / seen`` as torchmetrics and the old counts divide: in float32."""
    return float(torch.tensor(float(hits)) / seen)


def _batch(seed: int, n: int, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, num_classes, generator=g)
    return scores, torch.randint(0, num_classes, (n,), generator=g)


def test_epoch_accuracy_equals_a_hand_count_on_a_fixed_batch():
    scores, labels = _batch(seed=0, n=97)
    accuracy = EpochAccuracy(10, CPU)
    accuracy.update(scores[:40], labels[:40])  # two batches of an epoch
    accuracy.update(scores[40:], labels[40:])
    top1, top5 = accuracy.compute()
    # Random scores: ties have probability 0, so the ranking by hand is the ranking.
    assert float(top1) == _rate(_hand_count(scores, labels, 1), 97)
    assert float(top5) == _rate(_hand_count(scores, labels, 5), 97)
    assert 0 < _hand_count(scores, labels, 1) < _hand_count(scores, labels, 5) < 97
    # ... and the counts the callbacks made before torchmetrics, divided the same way.
    assert torch.equal(torch.stack([top1, top5]), topk_correct(scores, labels) / 97)
    assert float(batch_top1(scores, labels)) == float(top1)


def test_fewer_classes_than_five_make_top5_always_right_and_empty_batches_count_zero():
    scores, labels = _batch(seed=1, n=12, num_classes=3)
    accuracy = EpochAccuracy(3, CPU)
    accuracy.update(scores, labels)
    accuracy.update(scores[:0], labels[:0])  # a batch whose samples were all unlabelled
    top1, top5 = accuracy.compute()
    assert float(top1) == _rate(_hand_count(scores, labels, 1), 12)
    assert float(top5) == 1.0
    assert float(batch_top1(scores[:0], labels[:0])) == 0.0  # as the old count / max(seen, 1)


def _shard(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Uneven shards (30 and 70 samples): the union's accuracy is not the mean of the ranks'.
    scores, labels = _batch(seed=2, n=100)
    return (scores[:30], labels[:30]) if rank == 0 else (scores[30:], labels[30:])


def _epoch_worker(rank: int, world_size: int) -> tuple[float, float]:
    scores, labels = _shard(rank)
    accuracy = EpochAccuracy(10, CPU)
    for start in range(0, len(labels), 16):
        accuracy.update(scores[start : start + 16], labels[start : start + 16])
    top1, top5 = accuracy.compute()
    return float(top1), float(top5)


def test_two_processes_report_the_accuracy_of_the_union_of_their_samples():
    results = run_distributed(_epoch_worker, 2)
    scores, labels = _batch(seed=2, n=100)
    union = (_rate(_hand_count(scores, labels, 1), 100), _rate(_hand_count(scores, labels, 5), 100))
    assert results == [union, union]
    per_rank_top1 = [_hand_count(*_shard(r), 1) / len(_shard(r)[1]) for r in (0, 1)]
    assert abs(sum(per_rank_top1) / 2 - union[0]) > 0.01  # the test tells the two apart
