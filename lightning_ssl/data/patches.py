"""Grids of overlapping patches (CPC) and their per-patch augmentation, on any device.

An image of side ``S`` becomes a ``G x G`` grid of ``P x P`` patches at stride ``s`` with
``G = (S - P) / s + 1``: CPC's 7 x 7 grid of 64 px patches at stride 32 from 256 px crops
(van den Oord et al., 2018, sec. 3.2), or 8 px patches at stride 4 from 32 px CIFAR images.
:func:`augment_patches` is CPC v2's patch-based augmentation (Hénaff et al., 2020, sec. 4.1):
every patch is cut at a small random offset, flipped and colour-dropped on its own, with draws
from a ``torch.Generator`` (a resumed run repeats them).

Examples:
    >>> grid = PatchGrid.for_image(32)
    >>> grid.patch, grid.stride, grid.size
    (8, 4, 7)
    >>> extract_patches(torch.zeros(2, 3, 32, 32), grid).shape
    torch.Size([2, 7, 7, 3, 8, 8])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PatchGrid:
    """Where the patches of an image lie: side ``patch``, step ``stride``, ``size`` per side."""

    patch: int
    stride: int
    size: int

    @classmethod
    def for_image(
        cls, image_size: int, patch: int | None = None, stride: int | None = None
    ) -> PatchGrid:
        """The grid of ``image_size`` images; by default patches of a quarter of the image at
        half-patch stride (7 x 7 at any size divisible by 8, as 64/32 px on 256 px crops).

        Raises:
            ValueError: the patches do not tile the image exactly.
        """
        patch = patch or image_size // 4
        stride = stride or max(1, patch // 2)
        if not 0 < patch <= image_size or (image_size - patch) % stride:
            raise ValueError(
                f"patches of {patch} px at stride {stride} do not tile {image_size} px images "
                "exactly: choose patch_size and patch_stride with (image - patch) divisible by "
                "the stride (e.g. image_size/4 and image_size/8)"
            )
        return cls(patch, stride, (image_size - patch) // stride + 1)


def extract_patches(images: Tensor, grid: PatchGrid) -> Tensor:
    """The grid's patches of each image, row by row.

    Shape: (B, C, S, S) -> (B, G, G, C, P, P). Images larger than the grid's extent give the
    grid of as many patches as fit.
    """
    p, s = grid.patch, grid.stride
    patches = images.unfold(2, p, s).unfold(3, p, s)  # (B, C, G, G, P, P)
    return patches.permute(0, 2, 3, 1, 4, 5)


@dataclass(frozen=True)
class PatchAugmentation:
    """CPC v2's per-patch augmentation (each patch draws its own).

    Args:
        jitter: each patch is cut at a random offset of up to this many pixels in each direction
            (clamped to the image): a random crop around its grid position.
        flip_prob: probability of a horizontal flip of each patch.
        colour_drop_prob: probability that a patch keeps one random colour channel and the two
            others become 0 (the dataset mean, after normalisation): "colour dropping".
    """

    jitter: int = 0
    flip_prob: float = 0.5
    colour_drop_prob: float = 1.0

    def __post_init__(self) -> None:
        if self.jitter < 0 or not 0 <= self.flip_prob <= 1 or not 0 <= self.colour_drop_prob <= 1:
            raise ValueError(f"jitter must be >= 0 and probabilities in [0, 1]: {self}")


def augment_patches(
    images: Tensor, grid: PatchGrid, augmentation: PatchAugmentation, generator: torch.Generator
) -> Tensor:
    """The grid's patches, each randomly shifted, flipped and colour-dropped.

    All draws come from ``generator`` (on the images' device), so the same generator state gives
    the same patches. Shape: (B, C, S, S) -> (B, G, G, C, P, P).
    """
    batch, channels, device = images.shape[0], images.shape[1], images.device
    cells = (batch, grid.size, grid.size)

    def uniform() -> Tensor:
        return torch.rand(cells, generator=generator, device=device)

    patches = _shifted_patches(images, grid, augmentation.jitter, generator)
    flip = uniform() < augmentation.flip_prob
    patches = torch.where(flip[..., None, None, None], patches.flip(-1), patches)
    drop = uniform() < augmentation.colour_drop_prob
    kept = torch.randint(channels, cells, generator=generator, device=device)
    channel = torch.arange(channels, device=device)
    zeroed = drop[..., None] & (channel != kept[..., None])  # (B, G, G, C)
    return patches.masked_fill(zeroed[..., None, None], 0.0)


def _shifted_patches(
    images: Tensor, grid: PatchGrid, jitter: int, generator: torch.Generator
) -> Tensor:
    """Patches whose corners move by up to ``jitter`` px, kept inside the image."""
    if jitter == 0:
        return extract_patches(images, grid)
    batch, _, height, width = images.shape
    device = images.device
    start = torch.arange(grid.size, device=device) * grid.stride
    shifts = torch.randint(
        -jitter, jitter + 1, (2, batch, grid.size, grid.size), generator=generator, device=device
    )
    top = (start[None, :, None] + shifts[0]).clamp(0, height - grid.patch)  # (B, G, G)
    left = (start[None, None, :] + shifts[1]).clamp(0, width - grid.patch)
    offsets = torch.arange(grid.patch, device=device)
    rows = (top[..., None] + offsets)[..., :, None]  # (B, G, G, P, 1)
    cols = (left[..., None] + offsets)[..., None, :]  # (B, G, G, 1, P)
    index = torch.arange(batch, device=device).view(batch, 1, 1, 1, 1)
    # Advanced indices around a slice: the result is (B, G, G, P, P, C).
    return images[index, :, rows, cols].permute(0, 1, 2, 5, 3, 4)
