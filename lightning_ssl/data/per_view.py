"""The CPU path of :class:`~lightning_ssl.data.batched.BatchedMultiCrop`: one view at a time.

On a CPU core the batched operations of :mod:`lightning_ssl.data.colour` pay for their
per-sample choices with gathers and scatters of the chosen samples (about a fifth of the
time of DINO's multi-crop, measured). Here every random parameter of a group is still drawn
at once, as tensors from the batch's generator, exactly as the batched path draws them; then
each view runs only the operations it drew, in its own order, on a tensor small enough to
stay in the cache, straight from its ``uint8`` crop into the normalised output. The
operations are the same tested functions, called on one sample.
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
    jitter ``factors`` (4 lists of ``n``) and the blur ``sigma`` ``(n,)``.
    """

    flip: list[bool]
    ops: list[list[int]]
    factors: list[list[float]]
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
        return ViewPlan(flip, ops, factors.tolist(), gray, blur, sigma.tolist(), solarize)


def augment_view(crop: Tensor, plan: ViewPlan, i: int, kernel_size: int) -> Tensor:
    """View ``i`` of ``plan`` from its ``uint8`` ``(1, 3, s, s)`` crop, float in [0, 1]."""
    if plan.flip[i]:
        crop = crop.flip(-1)  # on uint8: a quarter of the bytes of the float image
    view = crop.to(torch.float32, memory_format=torch.contiguous_format).mul_(1 / 255)
    for op in plan.ops[i]:  # Python float factors: no tensor ops on one-element tensors
        view = _JITTER_OPS[op](view, plan.factors[op][i])
    if plan.gray[i]:
        view = rgb_to_grayscale(view).expand(-1, 3, -1, -1)
    if plan.blur[i]:
        view = gaussian_blur_taps(view, kernel_size, plan.sigma[i])
    if plan.solarize[i]:
        view = solarize(view)
    return view


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
    :func:`~lightning_ssl.data.crops.resized_crop_uint8`), augmented by
    :func:`augment_view` and handed to ``normalise(view, out[j])``.
    """
    plan = ViewPlan.draw(group, len(index), generator)
    kernel_size = blur_kernel_size(group.size)
    corners = boxes.long().tolist()
    for j, (b, box) in enumerate(zip(index.tolist(), corners, strict=True)):
        crop = resized_crop_uint8(source, b, box, group.size)
        normalise(augment_view(crop, plan, j, kernel_size), out[j : j + 1])
    return out
