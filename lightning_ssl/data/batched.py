"""Multi-crop augmentation of a whole ``uint8`` batch at once, on the batch's device.

:class:`BatchedMultiCrop` is the batched counterpart of
:class:`~lightning_ssl.data.transforms.MultiCropTransform`: the same :class:`ViewGroup` keys,
the same operations in the same order (random resized crop, flip, colour jitter, grayscale,
Gaussian blur, solarisation, normalisation) with the same parameter distributions, but every
parameter is drawn per sample as a tensor and every operation runs once on all the views of a
group. Data loaders then only deliver ``uint8`` images; on a GPU the augmentation costs a few
kernels per batch instead of a Python pipeline per image in the loader workers.

The image operations themselves, each tested against torchvision, are in
:mod:`lightning_ssl.data.crops` and :mod:`lightning_ssl.data.colour`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_ssl.data.colour import (
    apply_to,
    color_jitter,
    draw,
    random_gaussian_blur,
    random_grayscale,
    solarize,
)
from lightning_ssl.data.crops import (
    flip_horizontal,
    replicate_edges,
    resized_crops,
    sample_crop_boxes,
)
from lightning_ssl.data.per_view import views_per_view
from lightning_ssl.data.transforms import ViewGroup


# -- the module ------------------------------------------------------------------------------
class BatchedMultiCrop(torch.nn.Module):
    """All the views of a ``uint8`` batch, drawn per sample, on the batch's device.

    A drop-in for :class:`~lightning_ssl.data.transforms.MultiCropTransform` followed by
    collation: the same groups give the same list of normalised ``(B, 3, size, size)`` views,
    global groups first, with statistically the same crops and colours. Random numbers come
    from torch's generator of the batch's device.

    Args:
        groups: The view groups (global groups first), e.g. from
            :func:`~lightning_ssl.data.presets.preset`.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        channels_last: Return the views in ``channels_last`` memory format.
        dtype: Floating dtype of the returned views (``float32``; ``bfloat16``/``float16``
            halve the memory of large multi-crop batches; the ops run in ``float32``).
        cpu_chunk_pixels: On CPU, views are augmented in chunks of about this many output
            pixels: few enough to keep the intermediates in the L3 cache, enough to spread
            the per-op Python and dispatch cost over several views (2**18 beat 2**16 by
            10-40% on DINO and SimCLR views, one core).
        cpu_per_view_size: On CPU, views of at least this side are resized one at a time
            (:mod:`lightning_ssl.data.per_view`) from ``uint8`` (exactly torchvision's
            resize), then get only the operations each view drew (the colour ops once per run
            of views that drew the same ops), with no gathers of chosen samples; smaller
            ones, and all views on an accelerator, in chunks with
            one ``roi_align`` each (:func:`resized_crops`) and batched operations, where a
            Python call per view would cost more.

    Examples:
        >>> from lightning_ssl.data.presets import preset
        >>> from lightning_ssl.data.transforms import CIFAR_MEAN, CIFAR_STD
        >>> augment = BatchedMultiCrop(preset("simclr", 32), CIFAR_MEAN, CIFAR_STD)
        >>> views = augment(torch.zeros(8, 3, 32, 32, dtype=torch.uint8))
        >>> [tuple(v.shape) for v in views]
        [(8, 3, 32, 32), (8, 3, 32, 32)]
    """

    scale: Tensor  # buffers: 1 / std and -mean / std
    shift: Tensor

    def __init__(
        self,
        groups: Sequence[ViewGroup],
        mean: Sequence[float],
        std: Sequence[float],
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        cpu_chunk_pixels: int = 2**18,
        cpu_per_view_size: int = 64,
    ) -> None:
        super().__init__()
        groups = [g for g in groups if g.num > 0]
        if not groups:
            raise ValueError("BatchedMultiCrop needs at least one view group with num > 0")
        for before, after in itertools.pairwise(groups):
            if before.local and not after.local:
                raise ValueError(
                    "a global view group comes after a local one: list every global group "
                    "(local=False) before the local ones"
                )
        self.groups = groups
        self.channels_last, self.dtype = channels_last, dtype
        mean_, std_ = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        # normalise(x) = (x - mean) / std = x * scale + shift.
        self.register_buffer("scale", 1.0 / std_, persistent=False)
        self.register_buffer("shift", -mean_ / std_, persistent=False)
        self.cpu_chunk_pixels, self.cpu_per_view_size = cpu_chunk_pixels, cpu_per_view_size

    @property
    def num_views(self) -> int:
        """Total number of views per image."""
        return sum(g.num for g in self.groups)

    @torch.no_grad()
    def forward(
        self, images: Tensor, sizes: Tensor | None = None, generator: torch.Generator | None = None
    ) -> list[Tensor]:
        """The views of ``images``.

        Args:
            images: ``uint8`` ``(B, 3, H, W)`` (or ``(B, 1, H, W)``, replicated to RGB).
            sizes: Optional ``(B, 2)`` valid ``(height, width)`` of each image in a
                zero-padded batch of different-sized images (top-left aligned); crops are drawn
                inside the valid area only.
            generator: Random generator on the batch's device (default: torch's), e.g. one
                seeded per step and process (what the DataModules pass).

        Returns:
            ``sum(g.num for g in groups)`` tensors ``(B, 3, size, size)``, global groups first.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise TypeError(
                "BatchedMultiCrop expects a uint8 (B, 3, H, W) batch, got "
                f"{images.dtype} of shape {tuple(images.shape)}"
            )
        batch, _, height, width = images.shape
        device = images.device
        if sizes is None:
            heights = torch.full((batch,), height, device=device)
            widths = torch.full((batch,), width, device=device)
        else:
            sizes = sizes.to(device=device, dtype=torch.long)
            heights, widths = sizes[:, 0], sizes[:, 1]
        images = images.expand(-1, 3, -1, -1)
        sources: dict[bool, Tensor] = {}
        views: list[Tensor] = []
        for group in self.groups:
            # On CPU, large crops are resized one by one from uint8 with PyTorch's SIMD kernel;
            # small ones (and all on an accelerator) with one roi_align per chunk on float.
            per_view = device.type == "cpu" and group.size >= self.cpu_per_view_size
            if per_view not in sources:
                sources[per_view] = self._source(images, sizes, per_view)
            source = sources[per_view]
            views += self._group_views(source, heights, widths, group, generator).chunk(group.num)
        return views

    @staticmethod
    def _source(images: Tensor, sizes: Tensor | None, per_view: bool) -> Tensor:
        if per_view:
            return images.contiguous(memory_format=torch.channels_last)
        source = images.mul(1 / 255)  # float in [0, 1], the scale of torchvision's float ops
        return source if sizes is None else replicate_edges(source, sizes)

    def _group_views(
        self,
        source: Tensor,
        heights: Tensor,
        widths: Tensor,
        group: ViewGroup,
        generator: torch.Generator | None,
    ) -> Tensor:
        """All ``group.num`` views of the batch as one ``(num * B, 3, size, size)`` tensor."""
        batch, device = len(source), source.device
        index = torch.arange(batch, device=device).repeat(group.num)
        boxes = sample_crop_boxes(
            heights[index], widths[index], group.scale, group.ratio, generator=generator
        )
        out = torch.empty((len(index), 3, group.size, group.size), device=device, dtype=self.dtype)
        if source.dtype == torch.uint8:  # the CPU path for large crops: one view at a time
            views_per_view(source, boxes, index, group, out, self._normalise, generator)
            return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out
        # On CPU a chunk of views small enough to stay in the cache goes through every op
        # before the next (faster than whole-batch passes through memory); on
        # an accelerator the whole group is one chunk (fewest kernel launches).
        step = len(index)
        if device.type == "cpu":
            step = max(1, self.cpu_chunk_pixels // (group.size * group.size))
        for first in range(0, len(index), step):
            chunk = slice(first, first + step)
            crops = resized_crops(source, boxes[chunk], index[chunk], group.size)
            views = self._augment(crops, group, generator)
            self._normalise(views, out[chunk])
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def _normalise(self, views: Tensor, out: Tensor) -> None:
        """Normalise ``views`` straight into ``out`` (mul + add: addcmul broadcasts slower)."""
        if out.dtype == torch.float32:
            torch.mul(views, self.scale, out=out).add_(self.shift)
        else:
            out.copy_(views.mul(self.scale).add_(self.shift))


    def _augment(
        self, views: Tensor, group: ViewGroup, generator: torch.Generator | None
    ) -> Tensor:
        """Flip, colour, blur and solarise crops in [0, 1] (the CPU path's order)."""
        n, device = len(views), views.device
        if group.flip_prob > 0:
            views = apply_to(views, draw(n, group.flip_prob, device, generator), flip_horizontal)
        jitter = (group.brightness, group.contrast, group.saturation, group.hue)
        if group.jitter_prob > 0 and any(jitter):
            views = color_jitter(views, group, generator)
        if group.grayscale_prob > 0:
            views = random_grayscale(views, group.grayscale_prob, generator)
        if group.blur_prob > 0:
            views = random_gaussian_blur(views, group, generator)
        if group.solarize_prob > 0:
            chosen = torch.rand(n, device=device, generator=generator) < group.solarize_prob
            views = solarize(views, chosen)
        return views
