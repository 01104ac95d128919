"""The CPU path of :class:`~lightning_ssl.data.batched.BatchedMultiCrop` for large views.

On a CPU core the batched operations of :mod:`lightning_ssl.data.colour` pay for their
per-sample choices with gathers and scatters of the chosen samples (about a fifth of the
time of DINO's multi-crop, measured). Here every random parameter of a group is still drawn
at once, as tensors from the batch's generator, exactly as the batched path draws them; each
view is resized from its ``uint8`` crop; the views are then sorted by the colour ops they
drew, so that each run of views with the same ops (in the same order) goes through them as
one small batch, a slice of the sorted views, with no gathers; blur and solarisation run per
view, on tensors small enough to stay in the cache, straight into the normalised output.
The operations are the same tested functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_ssl.data.colour import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur_taps,
    rgb_to_grayscale,
    solarize,
)
from lightning_ssl.data.crops import resized_crop_uint8
from lightning_ssl.data.transforms import ViewGroup, blur_kernel_size

_JITTER_OPS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_hue,
)


@dataclass
class ViewPlan:
    """The random parameters of ``n`` views of one group, drawn at once.

    Per view: ``flip``, ``gray``, ``blur`` and ``solarize`` decisions, the jitter ``ops`` in
    order (indices into brightness, contrast, saturation, hue; empty when not jittered), the
    jitter ``factors`` ``(4, n)`` and the blur ``sigma`` ``(n,)``.
    """

    flip: list[bool]
    ops: list[list[int]]
    factors: Tensor
    gray: list[bool]
    blur: list[bool]
    sigma: list[float]
    solarize: list[bool]

    @staticmethod
    def draw(group: ViewGroup, n: int, generator: torch.Generator | None = None) -> ViewPlan:
        """Draw in the batched path's order and with its distributions (see ``_augment``)."""

        def chosen(p: float) -> list[bool]:
            return (torch.rand(n, generator=generator) < p).tolist() if p > 0 else [False] * n

        flip = chosen(group.flip_prob)
        strengths = (group.brightness, group.contrast, group.saturation, group.hue)
        ops: list[list[int]] = [[] for _ in range(n)]
        factors = torch.ones(4, n)
        if group.jitter_prob > 0 and any(strengths):
            apply = chosen(group.jitter_prob)
            for k, strength in enumerate(strengths[:3]):  # uniform in [max(0, 1 - s), 1 + s]
                factors[k].uniform_(max(0.0, 1.0 - strength), 1.0 + strength, generator=generator)
            factors[3].uniform_(-group.hue, group.hue, generator=generator)
            order = torch.rand(n, 4, generator=generator).argsort(dim=1).tolist()
            # A zero strength skips its op, as ColorJitter does.
            ops = [
                [op for op in perm if strengths[op]] if on else []
                for perm, on in zip(order, apply, strict=True)
            ]
        gray = chosen(group.grayscale_prob)
        blur, sigma = chosen(group.blur_prob), torch.zeros(n)
        if group.blur_prob > 0:
            sigma.uniform_(*group.blur_sigma, generator=generator)
        solarize = chosen(group.solarize_prob)
        return ViewPlan(flip, ops, factors, gray, blur, sigma.tolist(), solarize)


def _finish_view(view: Tensor, plan: ViewPlan, i: int, kernel_size: int) -> Tensor:
    """Blur and solarise view ``i`` (float in [0, 1]) as it drew (the per-view tail)."""
    if plan.blur[i]:  # one sigma per view: plain float taps, no per-sample kernels
        view = gaussian_blur_taps(view, kernel_size, plan.sigma[i])
    if plan.solarize[i]:
        view = solarize(view)
    return view


def _segments(plan: ViewPlan) -> tuple[list[int], list[tuple[int, int]]]:
    """The views sorted by their colour ops (jitter order, grayscale), and the runs of equal ops.

    Views in one run go through the same colour ops, so each op runs once on the run's slice
    of a sorted batch with per-view factors: a few views per call instead of one (the per-call
    cost dominates on 96 px views), with no gathers.
    """
    keys = [(tuple(ops), gray) for ops, gray in zip(plan.ops, plan.gray, strict=True)]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    runs, first = [], 0
    for pos in range(1, len(order) + 1):
        if pos == len(order) or keys[order[pos]] != keys[order[first]]:
            runs.append((first, pos))
            first = pos
    return order, runs


def views_per_view(
    source: Tensor,
    boxes: Tensor,
    index: Tensor,
    group: ViewGroup,
    out: Tensor,
    normalise: Callable[[Tensor, Tensor], None],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fill ``out`` ``(n, 3, s, s)`` with the views of ``boxes`` of ``uint8`` ``source``.

    Each view is cropped and resized from ``uint8`` (torchvision's antialiased resize,
    :func:`~lightning_ssl.data.crops.resized_crop_uint8`) and flipped as it drew; the colour
    ops run on runs of views that drew the same ops (:func:`_segments`); blur and
    solarisation per view; each view is handed to ``normalise(view, out[j])``.
    """
    plan = ViewPlan.draw(group, len(index), generator)
    kernel_size = blur_kernel_size(group.size)
    corners, images = boxes.long().tolist(), index.tolist()
    order, runs = _segments(plan)
    factors = plan.factors[:, order]  # per-view factors in sorted order
    crops = torch.empty((len(order), 3, group.size, group.size), dtype=torch.uint8)
    for pos, j in enumerate(order):
        crop = resized_crop_uint8(source, images[j], corners[j], group.size)
        crops[pos] = crop[0].flip(-1) if plan.flip[j] else crop[0]
    for first, last in runs:
        j = order[first]
        views = crops[first:last].float().mul_(1 / 255)
        for op in plan.ops[j]:
            views = _JITTER_OPS[op](views, factors[op, first:last])
        if plan.gray[j]:
            views = rgb_to_grayscale(views).expand(-1, 3, -1, -1)
        for pos in range(first, last):
            j = order[pos]
            view = _finish_view(views[pos - first : pos - first + 1], plan, j, kernel_size)
            normalise(view, out[j : j + 1])
    return out
