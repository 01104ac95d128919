import pytest
import torch

from lightning_ssl.nn.queue import FeatureQueue


def rows(start: int, n: int, dim: int = 2) -> torch.Tensor:
    """Rows whose entries are their global index: row i == [i, i, ...]."""
    return torch.arange(start, start + n, dtype=torch.float)[:, None].expand(n, dim).clone()


def reference_fifo(size: int, pushed: list[int]) -> list[int]:
    """Queue contents after pushing rows one at a time (slot order)."""
    slots = [-1] * size
    for i, value in enumerate(pushed):
        slots[i % size] = value
    return slots


def test_empty_queue_has_no_valid_rows():
    queue = FeatureQueue(size=10, dim=2)
    assert queue.valid().shape == (0, 2)
    assert int(queue.filled) == 0 and int(queue.ptr) == 0


@pytest.mark.parametrize("batch", [4, 3, 10, 12, 25])
def test_push_equals_row_by_row_fifo(batch):
    size, pushed = 10, []
    queue = FeatureQueue(size=size, dim=2, with_labels=True)
    for step in range(4):
        keys = rows(step * batch, batch)
        queue.push(keys, labels=keys[:, 0].long())
        pushed += list(range(step * batch, (step + 1) * batch))
        filled = min(len(pushed), size)
        expected = reference_fifo(size, pushed)
        assert int(queue.filled) == filled
        assert int(queue.ptr) == len(pushed) % size
        assert queue.valid().shape == (filled, 2)
        assert queue.valid()[:, 0].long().tolist() == expected[:filled]
        assert queue.valid_labels().tolist() == expected[:filled]
        assert queue.labels.tolist() == expected  # empty rows keep label -1


def test_wrap_around_with_batch_not_dividing_size():
    queue = FeatureQueue(size=10, dim=2)
    for step in range(3):  # 12 rows: the last two overwrite slots 0 and 1
        queue.push(rows(4 * step, 4))
    assert queue.features[:, 0].tolist() == [10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    assert int(queue.ptr) == 2 and int(queue.filled) == 10


def test_batch_larger_than_queue_keeps_last_rows():
    queue = FeatureQueue(size=10, dim=2)
    queue.push(rows(0, 3))
    queue.push(rows(100, 12))  # rows 102..111 survive, written from slot 3 + 2 on
    assert sorted(queue.valid()[:, 0].tolist()) == list(range(102, 112))
    assert queue.features[:, 0].tolist() == [107, 108, 109, 110, 111, 102, 103, 104, 105, 106]
    assert int(queue.ptr) == 5 and int(queue.filled) == 10


def test_random_init_is_valid_and_normalized():
    queue = FeatureQueue(size=6, dim=4, random_init=True)
    assert queue.valid().shape == (6, 4)
    torch.testing.assert_close(queue.valid().norm(dim=1), torch.ones(6))
    queue.push(rows(0, 2, dim=4))
    assert queue.valid().shape == (6, 4) and int(queue.ptr) == 2


def test_push_validates_inputs():
    queue = FeatureQueue(size=4, dim=2)
    with pytest.raises(ValueError, match="shape"):
        queue.push(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="with_labels"):
        queue.push(torch.zeros(3, 2), labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(RuntimeError, match="with_labels"):
        queue.valid_labels()


def test_push_casts_and_detaches():
    queue = FeatureQueue(size=4, dim=2)
    keys = torch.ones(2, 2, requires_grad=True)
    queue.push(keys.bfloat16())
    assert queue.features.dtype == torch.float32 and not queue.features.requires_grad


def test_state_dict_round_trip():
    queue = FeatureQueue(size=10, dim=3, with_labels=True)
    queue.push(torch.randn(7, 3), labels=torch.arange(7))
    state = queue.state_dict()
    assert set(state) == {"features", "labels", "ptr", "filled"}

    restored = FeatureQueue(size=10, dim=3, with_labels=True)
    restored.load_state_dict(state)
    for name in state:
        assert torch.equal(getattr(restored, name), getattr(queue, name)), name
    assert torch.equal(restored.valid(), queue.valid()) and restored.valid().shape == (7, 3)

    restored.push(torch.randn(5, 3), labels=torch.arange(5))  # continues from ptr 7
    assert int(restored.ptr) == 2 and restored.valid().shape == (10, 3)


def test_state_loaded_through_a_parent_module():
    parent, other = torch.nn.Module(), torch.nn.Module()
    parent.queue, other.queue = FeatureQueue(8, 2), FeatureQueue(8, 2)
    parent.queue.push(torch.randn(3, 2))
    other.queue.valid()  # caches "0 valid rows"; loading must invalidate it
    other.load_state_dict(parent.state_dict())
    assert torch.equal(other.queue.valid(), parent.queue.valid())
