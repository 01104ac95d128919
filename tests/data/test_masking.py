"""Mask generators: exact ratios, per-sample masks, seeds that repeat, blocks of the asked shape."""

from __future__ import annotations

import pytest
import torch

from lightning_ssl.data.masking import (
    block_masking,
    equal_length_indices,
    gather_tokens,
    multiblock_masks,
    random_masking,
)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bounding_box(mask: torch.Tensor, grid: tuple[int, int]) -> tuple[int, int, int]:
    """(height, width, area) of the box around a 1-D mask's True cells on ``grid``."""
    rows, cols = mask.view(grid).nonzero(as_tuple=True)
    h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    return h, w, int(mask.sum())


@pytest.mark.parametrize("ratio, n", [(0.75, 196), (0.75, 64), (0.5, 10), (0.9, 49)])
def test_random_masking_keeps_exactly_the_official_count(ratio, n):
    m = random_masking(16, n, ratio, _g())
    keep = int(n * (1 - ratio))
    assert m.ids_keep.shape == (16, keep)
    assert (m.mask.sum(1) == n - keep).all()
    # the kept indices are exactly the unmasked patches, and ids_restore inverts the shuffle
    assert (~m.mask).gather(1, m.ids_keep).all()
    shuffled = torch.cat([m.ids_keep, torch.full((16, n - keep), -1)], 1)
    restored = shuffled.gather(1, m.ids_restore)
    visible = torch.arange(n).expand(16, -1)
    assert torch.equal(restored[~m.mask], visible[~m.mask])


def test_masks_differ_per_sample_and_repeat_with_the_seed():
    a, b = random_masking(32, 64, 0.75, _g(3)), random_masking(32, 64, 0.75, _g(3))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids_restore, b.ids_restore)
    assert len({tuple(row.tolist()) for row in a.mask}) == 32
    assert not torch.equal(a.mask, random_masking(32, 64, 0.75, _g(4)).mask)
    blocks = block_masking(32, (14, 14), 75, _g(3))
    assert torch.equal(blocks, block_masking(32, (14, 14), 75, _g(3)))
    assert len({tuple(row.tolist()) for row in blocks}) == 32
    jepa = multiblock_masks(8, (14, 14), _g(3))
    assert torch.equal(jepa.targets, multiblock_masks(8, (14, 14), _g(3)).targets)
    assert len({tuple(row.flatten().tolist()) for row in jepa.targets}) == 8


def test_gather_tokens_picks_each_samples_indices():
    tokens = torch.arange(2 * 5 * 3).view(2, 5, 3)
    ids = torch.tensor([[4, 0], [1, 1]])
    expected = torch.stack([tokens[0, [4, 0]], tokens[1, [1, 1]]])
    assert torch.equal(gather_tokens(tokens, ids), expected)


def test_block_masking_reaches_its_count_with_rectangles_of_the_asked_shape():
    masks = block_masking(64, (14, 14), 75, _g())
    assert (masks.sum(1) <= 75).all() and (masks.sum(1) == 75).float().mean() > 0.9
    # One block only (count = a block's area range): each mask is a solid rectangle with
    # area in [16, 30] and aspect ratio within the range (+ rounding of the sides).
    single = block_masking(256, (14, 14), 30, _g(1), min_block=16, max_block=30, max_rounds=1)
    for row in single[single.any(1)]:
        h, w, area = _bounding_box(row, (14, 14))
        assert area == h * w, "a single block is a full rectangle"
        assert 16 - 2 * (h + w) <= area <= 30
        assert 0.3 / 1.6 <= h / w <= 1.6 / 0.3


def test_multiblock_targets_are_equal_blocks_and_the_context_avoids_them():
    grid = (14, 14)
    m = multiblock_masks(16, grid, _g(), num_targets=4)
    assert m.targets.shape == (16, 4, 196)
    sizes = {_bounding_box(t, grid) for t in m.targets.flatten(0, 1)}
    assert len(sizes) == 1, "one block size per batch, as the official collator"
    ((h, w, area),) = sizes
    assert area == h * w and 0.15 * 196 - 2 * (h + w) <= area <= 0.2 * 196 + 2 * (h + w)
    assert not (m.context & m.targets.any(1)).any()
    ids = equal_length_indices(m.context)
    assert ids.shape == (16, int(m.context.sum(1).min()))
    assert m.context.gather(1, ids).all() and (ids.diff(dim=1) > 0).all()
