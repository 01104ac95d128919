"""Patch masks of masked-image models, per sample and vectorised, drawn from a given generator.

* :func:`random_masking`: MAE's per-sample shuffle (argsort of uniform noise), the first
  ``(1 - ratio) * N`` shuffled patches visible (He et al. 2022, ``models_mae.random_masking``);
* :func:`block_masking`: BEiT/iBOT's block-wise masks, rectangles of random area and aspect ratio
  added until a target count of patches is masked;
* :func:`multiblock_masks`: I-JEPA's context and target blocks (Assran et al. 2023, Sec. 3).

Every function takes a ``torch.Generator`` and draws nothing else, so a caller that seeds it by
(seed, rank, batch number) (as :func:`lightning_ssl.data.device.seeded_generator`) gets the same
masks again after a resume. Masks are ``(B, N)`` booleans over the patch grid in row-major
order, ``True`` where a patch is masked (MAE's ``mask == 1``).

Examples:
    >>> g = torch.Generator().manual_seed(0)
    >>> m = random_masking(4, 64, 0.75, g)
    >>> m.ids_keep.shape, m.mask.sum(1).tolist()
    (torch.Size([4, 16]), [48, 48, 48, 48])
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import Tensor


class RandomMask(NamedTuple):
    """MAE's mask: ``ids_keep`` ``(B, N_visible)`` indices of the visible patches (in shuffled
    order), ``ids_restore`` ``(B, N)`` the inverse permutation (visible tokens followed by mask
    tokens, gathered with it, are back in grid order) and ``mask`` ``(B, N)``, ``True`` masked."""

    ids_keep: Tensor
    ids_restore: Tensor
    mask: Tensor


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> RandomMask:
    """Per-sample random masks keeping exactly ``int(num_patches * (1 - mask_ratio))`` patches.

    As the official ``random_masking``: uniform noise per patch, ascending argsort; the patches
    with the smallest noise stay visible.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    num_keep = int(num_patches * (1 - mask_ratio))
    device = device or generator.device
    noise = torch.rand(batch, num_patches, generator=generator, device=device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    shuffled_mask = torch.arange(num_patches, device=device).expand(batch, -1) >= num_keep
    mask = shuffled_mask.gather(1, ids_restore)
    return RandomMask(ids_shuffle[:, :num_keep], ids_restore, mask)


def gather_tokens(tokens: Tensor, ids: Tensor) -> Tensor:
    """``tokens[b, ids[b]]`` for ``(B, N, D)`` tokens and ``(B, K)`` indices: ``(B, K, D)``."""
    return tokens.gather(1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def _log_uniform(low: float, high: float, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    u = torch.rand(shape, generator=g, device=g.device)
    return (math.log(low) + (math.log(high) - math.log(low)) * u).exp()


def _rectangles(
    heights: Tensor,
    widths: Tensor,
    grid: tuple[int, int],
    g: torch.Generator,
    reach_edge: bool = True,
) -> Tensor:
    """``(B, H*W)`` masks of one ``heights[b] x widths[b]`` rectangle each, placed uniformly;
    ``reach_edge=False``: the top-left corner is drawn from ``[0, H - h)`` (I-JEPA's
    ``torch.randint(0, H - h)``), so a block never covers the last row or column."""
    rows, cols = grid
    edge = int(reach_edge)
    top = (torch.rand(heights.shape, generator=g, device=g.device) * (rows - heights + edge)).long()
    left = (torch.rand(widths.shape, generator=g, device=g.device) * (cols - widths + edge)).long()
    r = torch.arange(rows, device=g.device).view(1, rows, 1)
    c = torch.arange(cols, device=g.device).view(1, 1, cols)
    inside_r = (r >= top.view(-1, 1, 1)) & (r < (top + heights).view(-1, 1, 1))
    inside_c = (c >= left.view(-1, 1, 1)) & (c < (left + widths).view(-1, 1, 1))
    return (inside_r & inside_c).flatten(1)


def block_masking(
    batch: int,
    grid: tuple[int, int],
    num_masked: int | Tensor,
    generator: torch.Generator,
    min_block: int = 4,
    max_block: int | None = None,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    max_rounds: int = 100,
) -> Tensor:
    """BEiT's block-wise masks (``MaskingGenerator``; iBOT's ``pred_shape='block'``), vectorised.

    Each round proposes one rectangle per sample: area uniform in ``[min_block, max_block]``
    (capped by what is still to mask), aspect ratio log-uniform in ``aspect``, position
    uniform; a sample accepts it when it adds at least one and at most the remaining number of
    patches (BEiT's rule), so a mask never exceeds ``num_masked`` and is a union of rectangles.
    Rounds stop when every sample reached ``num_masked`` or after ``max_rounds`` (BEiT also
    stops short when its attempts fail: a mask may then hold fewer patches).

    ``num_masked`` is one count for the batch or a ``(B,)`` tensor of per-sample counts
    (iBOT draws a prediction ratio per image).

    Returns:
        ``(B, H*W)`` booleans, ``True`` masked.
    """
    rows, cols = grid
    device = generator.device
    target = torch.as_tensor(num_masked, device=device).expand(batch)
    if ((target < 0) | (target > rows * cols)).any():
        raise ValueError(f"num_masked must be in [0, {rows * cols}], got {num_masked}")
    cap = target if max_block is None else torch.full_like(target, max_block)
    mask = torch.zeros(batch, rows * cols, dtype=torch.bool, device=device)
    for _ in range(max_rounds):
        remaining = target - mask.sum(1)
        if not (remaining > 0).any():
            break
        high = remaining.minimum(cap).float()
        low = torch.full_like(high, float(min_block)).minimum(high)
        area = low + (high - low) * torch.rand(batch, generator=generator, device=device)
        ratio = _log_uniform(aspect[0], aspect[1], (batch,), generator)
        heights = (area * ratio).sqrt().round().long().clamp(1, rows)
        widths = (area / ratio).sqrt().round().long().clamp(1, cols)
        block = _rectangles(heights, widths, grid, generator)
        added = (block & ~mask).sum(1)
        accept = (added > 0) & (added <= remaining)
        mask |= block & accept[:, None]
    return mask


#: Placements of the context block per relaxation step (the official ``timeout``).
_CONTEXT_TRIES = 20


class MultiBlockMasks(NamedTuple):
    """I-JEPA's masks: ``context`` ``(B, N)`` (``True``: seen by the context encoder) and
    ``targets`` ``(B, num_targets, N)`` (``True``: a patch of that target block)."""

    context: Tensor
    targets: Tensor


def _block_size(
    scale: tuple[float, float],
    aspect: tuple[float, float],
    grid: tuple[int, int],
    g: torch.Generator,
) -> tuple[int, int]:
    """I-JEPA's ``_sample_block_size``: one (h, w) for the whole batch, scale and aspect from the
    same uniform draw (as the official code), each side below the grid's."""
    rows, cols = grid
    u = float(torch.rand(1, generator=g, device=g.device))
    area = int(rows * cols * (scale[0] + u * (scale[1] - scale[0])))
    ratio = aspect[0] + u * (aspect[1] - aspect[0])
    h = min(max(round(math.sqrt(area * ratio)), 1), max(rows - 1, 1))
    w = min(max(round(math.sqrt(area / ratio)), 1), max(cols - 1, 1))
    return h, w


def multiblock_masks(
    batch: int,
    grid: tuple[int, int],
    generator: torch.Generator,
    num_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    context_aspect: tuple[float, float] = (1.0, 1.0),
    min_keep: int = 4,
) -> MultiBlockMasks:
    """I-JEPA's multi-block masks (``MaskCollator`` of facebookresearch/ijepa).

    One target block size and one context block size are drawn per batch (so every sample's
    targets have equal token counts, as the official collator does); positions are drawn per
    sample, as the official ``torch.randint(0, H - h)`` (a block never touches the last row or
    column); the context block loses every target patch (no overlap). A context left with at
    most ``min_keep`` patches is redrawn (20 tries), then allowed to overlap the last target,
    the last two ... (the official ``constrain_mask`` after each 20 failed tries).
    """
    device = generator.device
    th, tw = _block_size(target_scale, target_aspect, grid, generator)
    ch, cw = _block_size(context_scale, context_aspect, grid, generator)

    def blocks(h: int, w: int) -> Tensor:
        side = functools.partial(torch.full, (batch,), device=device)
        return _rectangles(side(h), side(w), grid, generator, reach_edge=False)

    targets = torch.stack([blocks(th, tw) for _ in range(num_targets)], dim=1)
    context = torch.zeros_like(targets[:, 0])
    pending = torch.ones(batch, dtype=torch.bool, device=device)
    for relaxed in range(num_targets + 1):
        allowed = ~targets[:, : num_targets - relaxed].any(1)
        for _ in range(_CONTEXT_TRIES):
            block = blocks(ch, cw) & allowed
            context = torch.where(pending[:, None], block, context)
            pending &= context.sum(1) <= min_keep
            if not bool(pending.any()):
                return MultiBlockMasks(context, targets)
    return MultiBlockMasks(context, targets)


def equal_length_indices(mask: Tensor) -> Tensor:
    """``(B, K)`` indices of the ``True`` patches of each row, ``K`` the smallest count in the
    batch (I-JEPA keeps the first ``min_keep`` indices of every sample so they stack)."""
    keep = int(mask.sum(1).min())
    order = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    # True patches first, each group in grid order (a stable sort on the negated mask).
    ranked = torch.where(mask, order, order + mask.shape[1])
    return ranked.sort(dim=1).values[:, :keep] % mask.shape[1]
