"""Random resized crops of whole batches, drawn per image as torchvision draws them.

Building blocks of :class:`~lightning_ssl.data.batched.BatchedMultiCrop`, public so that tests
check each against torchvision: :func:`sample_crop_boxes` (``RandomResizedCrop.get_params``),
:func:`resized_crops` (``roi_align``, any device) and :func:`resized_crops_uint8` (exactly
torchvision's antialiased resize, per view, on CPU).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import roi_align


# -- geometry ----------------------------------------------------------------------------------
def _first_fitting_sides(
    height: Tensor,
    width: Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    trials: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Crop sides ``(w, h)`` of each image's first fitting trial, and whether one fitted."""
    n, device = len(height), height.device
    height, width = height[:, None], width[:, None]
    target = height * width * torch.empty(n, trials, device=device, dtype=torch.float64).uniform_(
        *scale, generator=generator
    )
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.empty(n, trials, device=device, dtype=torch.float64).uniform_(
        *log_ratio, generator=generator
    )
    aspect = aspect.exp()
    # torch.round rounds half to even, as Python's round() in torchvision.
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting trial
    return w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(dim=1)


def sample_crop_boxes(
    heights: Tensor,
    widths: Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    trials: int = 10,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random-resized-crop boxes drawn per image as ``RandomResizedCrop.get_params`` does.

    Each image tries ``trials`` times an area fraction uniform in ``scale`` and a log-uniform
    aspect ratio in ``ratio``, with integer (rounded) sides; the first box that fits is placed
    uniformly. Images where none fits get the central crop of the whole image clamped to
    ``ratio``.

    Args:
        heights: Image heights ``(N,)`` (integer-valued, any dtype), on the target device.
        widths: Image widths ``(N,)``.
        scale: Range of the crop area as a fraction of the image area.
        ratio: Range of the aspect ratio (width / height).
        trials: Number of tries before the fallback.
        generator: Random generator on the device of ``heights`` (default: torch's).

    Returns:
        ``float32`` boxes ``(N, 4)`` as ``(x0, y0, x1, y1)`` in pixel-edge coordinates, with
        integer values (``x1 - x0`` is the crop width).

    Examples:
        >>> sides = torch.full((3,), 32)
        >>> boxes = sample_crop_boxes(sides, sides, (0.08, 1.0), (3 / 4, 4 / 3))
        >>> bool(((boxes[:, 2:] <= 32) & (boxes[:, :2] >= 0)).all())
        True
    """
    device, n = heights.device, len(heights)
    height, width = heights.double(), widths.double()
    w, h, found = _first_fitting_sides(height, width, scale, ratio, trials, generator)
    # Fallback: the whole image, clamped to the ratio range, centred.
    in_ratio = width / height
    fw = torch.where(in_ratio > ratio[1], (height * ratio[1]).round(), width)
    fh = torch.where(in_ratio < ratio[0], (width / ratio[0]).round(), height)
    w, h = torch.where(found, w, fw), torch.where(found, h, fh)
    u = torch.rand(2, n, device=device, dtype=torch.float64, generator=generator)
    # randint(0, height - h + 1) drawn as floor(u * (height - h + 1)); the fallback is centred.
    y0 = torch.where(found, (u[0] * (height - h + 1)).floor(), ((height - h) / 2).floor())
    x0 = torch.where(found, (u[1] * (width - w + 1)).floor(), ((width - w) / 2).floor())
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1).float()


def resized_crops(images: Tensor, boxes: Tensor, index: Tensor, size: int) -> Tensor:
    """Crop ``boxes`` out of ``images[index]`` and resize them to ``size`` x ``size``.

    ``roi_align`` with ``aligned=True`` puts pixel centres where ``resize(align_corners=False)``
    puts them, so an upscaled crop is exactly torchvision's bilinear resize of the cropped
    pixels. When downscaling, the adaptive sampling ratio averages ``ceil(box / size)`` samples
    per output pixel along each axis: a box filter, antialiasing like ``antialias=True``'s
    triangle filter though not identical to it. Samples of the outermost output ring may read
    up to half a pixel beyond the box (torchvision clamps at the crop's edge): a subpixel
    difference for crops, and :class:`BatchedMultiCrop` replicates the edges of padded images
    so that padding is never read.

    Args:
        images: Float images ``(B, C, H, W)``.
        boxes: ``(N, 4)`` boxes ``(x0, y0, x1, y1)`` in pixel-edge coordinates.
        index: ``(N,)`` image index of each box.
        size: Output side.

    Returns:
        ``(N, C, size, size)`` crops, in the dtype of ``images``.

    Examples:
        >>> image = torch.arange(16.0).view(1, 1, 4, 4)
        >>> box = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
        >>> torch.equal(resized_crops(image, box, torch.zeros(1, dtype=torch.long), 4), image)
        True
    """
    rois = torch.cat([index[:, None].to(boxes.dtype), boxes], dim=1).to(images.dtype)
    return roi_align(images, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def resized_crops_uint8(images: Tensor, boxes: Tensor, index: Tensor, size: int) -> Tensor:
    """Crop and resize each box of ``uint8`` ``images``, one call per view (the CPU path).

    Each crop goes through ``F.interpolate(..., mode="bilinear", antialias=True)`` exactly as
    torchvision's ``resized_crop`` on a tensor; on a ``channels_last`` ``uint8`` input PyTorch
    runs its SIMD (Pillow-SIMD derived) kernel, several times faster on CPU than ``roi_align``.
    Crops read only pixels inside their box, so padding is never sampled.

    Args:
        images: ``uint8`` images ``(B, 3, H, W)``, ideally ``channels_last``.
        boxes: ``(N, 4)`` integer-valued boxes ``(x0, y0, x1, y1)``.
        index: ``(N,)`` image index of each box.
        size: Output side.

    Returns:
        ``uint8`` crops ``(N, 3, size, size)``.

    Examples:
        >>> image = torch.arange(48, dtype=torch.uint8).view(1, 3, 4, 4)
        >>> box = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
        >>> torch.equal(resized_crops_uint8(image, box, torch.zeros(1, dtype=torch.long), 4), image)
        True
    """
    corners = boxes.long().tolist()
    crops = [
        resized_crop_uint8(images, b, box, size)
        for b, box in zip(index.tolist(), corners, strict=True)
    ]
    return torch.cat(crops)


def resized_crop_uint8(images: Tensor, b: int, box: list[int], size: int) -> Tensor:
    """The ``(1, 3, size, size)`` crop ``box = [x0, y0, x1, y1]`` of ``images[b]`` (see
    :func:`resized_crops_uint8`)."""
    x0, y0, x1, y1 = box
    return torch.nn.functional.interpolate(
        images[b : b + 1, :, y0:y1, x0:x1],
        size=(size, size),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )


def replicate_edges(images: Tensor, sizes: Tensor) -> Tensor:
    """Copy each image's last valid row and column onto the first padding row and column.

    ``roi_align`` clamps bilinear samples at the tensor's border only: a sample near the
    bottom/right edge of a smaller image reads one pixel into the padding. With that pixel
    equal to the edge, the crop is as if clamped at the image's own border and the padding
    never leaks into a view. Modifies ``images`` (a float copy) in place.
    """
    _, _, height, width = images.shape
    batch = torch.arange(len(images), device=images.device)
    rows, cols = sizes[:, 0], sizes[:, 1]
    # Images that fill the batch assign their last row/column to itself.
    images[batch, :, rows.clamp(max=height - 1)] = images[batch, :, rows - 1]
    images[batch, :, :, cols.clamp(max=width - 1)] = images[batch, :, :, cols - 1]
    return images


def flip_horizontal(images: Tensor) -> Tensor:
    return images.flip(-1)
