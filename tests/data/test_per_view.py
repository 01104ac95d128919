"""The per-view CPU path's runs of equal colour ops give each view exactly its own plan."""

from __future__ import annotations

import torch

from lightning_ssl.data import ViewGroup
from lightning_ssl.data.colour import gaussian_blur_taps, rgb_to_grayscale, solarize
from lightning_ssl.data.crops import resized_crop_uint8, sample_crop_boxes
from lightning_ssl.data.per_view import _JITTER_OPS, ViewPlan, views_per_view
from lightning_ssl.data.transforms import blur_kernel_size


def one_view(source, b, box, plan: ViewPlan, j: int, group: ViewGroup) -> torch.Tensor:
    """View ``j`` made alone, op by op in the order it drew (the reference)."""
    crop = resized_crop_uint8(source, b, box, group.size)
    view = (crop.flip(-1) if plan.flip[j] else crop).float().mul_(1 / 255)
    for op in plan.ops[j]:
        view = _JITTER_OPS[op](view, plan.factors[op, j : j + 1])
    if plan.gray[j]:
        view = rgb_to_grayscale(view).expand(-1, 3, -1, -1)
    if plan.blur[j]:
        view = gaussian_blur_taps(view, blur_kernel_size(group.size), plan.sigma[j])
    return solarize(view) if plan.solarize[j] else view


def test_runs_of_equal_ops_equal_one_view_at_a_time():
    group = ViewGroup(
        12, 24, jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
        grayscale_prob=0.2, blur_prob=0.5, solarize_prob=0.2,
    )  # fmt: skip
    torch.manual_seed(0)
    source = torch.randint(0, 256, (4, 3, 40, 48), dtype=torch.uint8)
    source = source.contiguous(memory_format=torch.channels_last)
    index = torch.arange(4).repeat(group.num)
    n = len(index)
    boxes = sample_crop_boxes(torch.full((n,), 40), torch.full((n,), 48), group.scale, group.ratio)
    out = torch.empty(n, 3, group.size, group.size)
    views_per_view(
        source, boxes, index, group, out, lambda v, o: o.copy_(v), torch.Generator().manual_seed(3)
    )
    plan = ViewPlan.draw(group, n, torch.Generator().manual_seed(3))  # the same draws
    runs = {(tuple(ops), gray) for ops, gray in zip(plan.ops, plan.gray, strict=True)}
    assert len(runs) > 10 and len(runs) < n  # many runs, some of several views
    corners = boxes.long().tolist()
    contrast = 1  # index of adjust_contrast in the jitter ops
    for j, b in enumerate(index.tolist()):
        expected = one_view(source, b, corners[j], plan, j, group)[0]
        if contrast in plan.ops[j]:
            # The image mean's summation order depends on how many views share the reduction:
            # a few float32 ulps (<= 4e-7 seen); every other op is elementwise, hence exact.
            torch.testing.assert_close(out[j], expected, atol=1e-6, rtol=0)
        else:
            assert torch.equal(out[j], expected), j
