"""Multi-crop augmentation of a whole ``uint8`` batch at once, on the batch's device.

:class:`BatchedMultiCrop` is the batched counterpart of
:class:`~lightning_ssl.data.transforms.MultiCropTransform`: the same :class:`ViewGroup` keys,
the same operations in the same order (random resized crop, flip, colour jitter, grayscale,
Gaussian blur, solarisation, normalisation) with the same parameter distributions, but every
parameter is drawn per sample as a tensor and every operation runs once on all the views of a
group. Data loaders then only deliver ``uint8`` images; on a GPU the augmentation costs a few
kernels per batch instead of a Python pipeline per image in the loader workers.

The building blocks are public functions so that tests can check each against torchvision:
:func:`sample_crop_boxes` (``RandomResizedCrop.get_params``), :func:`resized_crops`,
:func:`adjust_brightness`, :func:`adjust_contrast`, :func:`adjust_saturation`,
:func:`adjust_hue`, :func:`rgb_to_grayscale`, :func:`gaussian_blur` and :func:`solarize`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align

from lightning_ssl.data.transforms import ViewGroup, blur_kernel_size

#: ITU-R 601-2 luma weights, as torchvision's ``rgb_to_grayscale`` and PIL's ``convert("L")``.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: Solarisation threshold of the uint8 CPU path (128 of 255) on the [0, 1] scale.
SOLARIZE_THRESHOLD = 128 / 255


# -- geometry ----------------------------------------------------------------------------------
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
    device = heights.device
    height, width = heights.double()[:, None], widths.double()[:, None]
    n = len(heights)
    area = height * width
    target = area * torch.empty(n, trials, device=device, dtype=torch.float64).uniform_(
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
    found = fits.any(dim=1)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    height, width = height[:, 0], width[:, 0]
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
    crops = [
        torch.nn.functional.interpolate(
            images[b : b + 1, :, y0:y1, x0:x1],
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        for b, (x0, y0, x1, y1) in zip(index.tolist(), boxes.long().tolist(), strict=True)
    ]
    return torch.cat(crops)


def _replicate_edges(images: Tensor, sizes: Tensor) -> Tensor:
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


# -- colour (float images in [0, 1], per-sample factors of shape (N,)) ------------------------
def rgb_to_grayscale(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma ``(N, 1, H, W)`` of RGB ``(N, 3, H, W)`` images.

    Examples:
        >>> rgb_to_grayscale(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 1, 2, 2])
    """
    r, g, b = images.unbind(dim=1)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(1)


def _per_sample(factor: Tensor) -> Tensor:
    return factor.view(-1, 1, 1, 1)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``factor * images + (1 - factor) * other`` clamped to [0, 1], as torchvision's blend.

    Computed as ``lerp(other, images, factor)`` in one pass (equal up to float rounding).
    """
    return torch.lerp(other.expand_as(images), images, _per_sample(factor)).clamp_(0, 1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Multiply by a per-sample factor, clamped to [0, 1] (torchvision's adjust_brightness).

    Examples:
        >>> adjust_brightness(torch.full((2, 3, 1, 1), 0.6), torch.tensor([0.5, 2.0])).flatten()
        tensor([0.3000, 0.3000, 0.3000, 1.0000, 1.0000, 1.0000])
    """
    return (images * _per_sample(factor)).clamp_(0, 1)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with each image's mean grey level (torchvision's adjust_contrast).

    Examples:
        >>> x = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
        >>> adjust_contrast(x, torch.tensor([0.0]))[0, 0, 0]
        tensor([0.5000, 0.5000])
    """
    mean = rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image (torchvision's adjust_saturation).

    Examples:
        >>> x = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        >>> adjust_saturation(x, torch.tensor([0.0])).flatten()
        tensor([0.2989, 0.2989, 0.2989])
    """
    return _blend(images, rgb_to_grayscale(images), factor)


def adjust_hue(images: Tensor, factor: Tensor) -> Tensor:
    """Rotate the HSV hue by a per-sample ``factor`` in [-0.5, 0.5] (torchvision's adjust_hue).

    Same result as torchvision's RGB -> HSV -> RGB round trip, in fewer passes: a hue rotation
    keeps each pixel's max (V) and min channel, so with the hue ``H`` in sixths of a turn the
    way back is the closed form ``c_n = max - (max - min) * clamp(2 - |k_n - 2|, 0, 1)``,
    ``k_n = (n + H) mod 6``, ``n = 5, 3, 1`` for R, G, B (torchvision's sector table).

    Examples:
        >>> red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        >>> adjust_hue(red, torch.tensor([1 / 3])).flatten()  # red -> green
        tensor([0., 1., 0.])
    """
    r, g, b = images.unbind(dim=1)
    minc, maxc = torch.aminmax(images, dim=1)
    spread = maxc - minc
    is_r, is_g = maxc == r, maxc == g
    # Hue in sixths as torchvision's _rgb_to_hsv: (g - b) / spread if max is r, else
    # 2 + (b - r) / spread if max is g, else 4 + (r - g) / spread; grey pixels (spread 0) get 0.
    hue = torch.where(is_g, b - r + 2 * spread, r - g + 4 * spread)
    hue = torch.where(is_r, g - b, hue).div_(spread.clamp(min=1e-12))
    # + 6 keeps it positive; the "- 2 + 3" of |k - 2| in (-3, 3] is folded into the offset.
    hue.add_(6.0 * factor.view(-1, 1, 1) + 7.0)
    offsets = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype)
    weight = (hue.unsqueeze(1) + offsets.view(1, 3, 1, 1)).remainder_(6.0).sub_(3.0).abs_()
    weight = weight.neg_().add_(2.0).clamp_(0.0, 1.0)  # clamp(2 - |k - 2|, 0, 1)
    return torch.addcmul(maxc.unsqueeze(1), spread.unsqueeze(1), weight, value=-1.0)


_JITTER_OPS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_hue,
)


def _jitter_factors(
    group: ViewGroup, n: int, device: torch.device, generator: torch.Generator | None
) -> list[Tensor | None]:
    """Per-sample factors as ``ColorJitter``: uniform in [max(0, 1 - s), 1 + s], hue in [-h, h].

    A zero strength gives ``None`` (the op is skipped, as ColorJitter skips it).
    """
    factors: list[Tensor | None] = []
    for strength in (group.brightness, group.contrast, group.saturation):
        low, high = max(0.0, 1.0 - strength), 1.0 + strength
        factor = torch.empty(n, device=device).uniform_(low, high, generator=generator)
        factors.append(factor if strength else None)
    hue = torch.empty(n, device=device).uniform_(-group.hue, group.hue, generator=generator)
    factors.append(hue if group.hue else None)
    return factors


def _apply_to(images: Tensor, chosen: list[int], op: Callable[..., Tensor], *args: Tensor):
    """``op`` on the samples listed in ``chosen`` (per-sample ``args`` indexed alike).

    The choice is a Python list (one host copy per decision table, not one per op); all or
    none chosen (the usual case for the small chunks of the CPU path) skips the indexing.
    A subset is written back into ``images`` in place (the pipeline's own temporaries).
    """
    if not chosen:
        return images
    if len(chosen) == len(images):
        return op(images, *args)
    index = torch.tensor(chosen, device=images.device)
    images[index] = op(images[index], *(a[index] for a in args))
    return images


def color_jitter(
    images: Tensor, group: ViewGroup, generator: torch.Generator | None = None
) -> Tensor:
    """Colour jitter with probability ``jitter_prob``, ops in a random order per sample.

    As ``RandomApply([ColorJitter(...)], p)``: each sample draws whether it is jittered, its
    four factors and a random permutation of (brightness, contrast, saturation, hue). Slot by
    slot, each op runs on the samples whose permutation puts it in that slot.
    ``images`` may be modified in place.
    """
    n, device = len(images), images.device
    apply = torch.rand(n, device=device, generator=generator) < group.jitter_prob
    factors = _jitter_factors(group, n, device, generator)
    order = torch.rand(n, 4, device=device, generator=generator).argsort(
        dim=1
    )  # a uniform permutation per sample
    # The op of each (sample, slot), -1 for samples left alone: one host copy for all choices.
    table = torch.where(apply[:, None], order, -1).T.tolist()
    for slot_ops in table:
        for op_index, op in enumerate(_JITTER_OPS):
            factor = factors[op_index]
            if factor is not None:
                chosen = [i for i, o in enumerate(slot_ops) if o == op_index]
                images = _apply_to(images, chosen, op, factor)
    return images


def _draw(
    n: int, p: float, device: torch.device, generator: torch.Generator | None = None
) -> list[int]:
    """The samples (of ``n``) for which an event of probability ``p`` happens."""
    return (torch.rand(n, device=device, generator=generator) < p).nonzero()[:, 0].tolist()


def _flip(images: Tensor) -> Tensor:
    return images.flip(-1)


def _to_grayscale(images: Tensor) -> Tensor:
    return rgb_to_grayscale(images).expand(-1, 3, -1, -1)


def random_grayscale(images: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Replace each sample by its grey level (kept 3 channels) with probability ``p``.

    ``images`` may be modified in place.
    """
    return _apply_to(images, _draw(len(images), p, images.device, generator), _to_grayscale)


# -- filters ---------------------------------------------------------------------------------
def gaussian_blur(images: Tensor, kernel_size: int, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with a per-sample ``sigma``, reflect padding (as torchvision).

    The kernel is torchvision's: ``exp(-x^2 / (2 sigma^2))`` on ``x = -k//2 .. k//2``,
    normalised; each sample's 1-D kernels run as one grouped convolution per axis.

    Args:
        images: Float images ``(N, C, H, W)``.
        kernel_size: Odd kernel side.
        sigma: ``(N,)`` standard deviations in pixels.

    Examples:
        >>> out = gaussian_blur(torch.rand(2, 3, 16, 16), 5, torch.tensor([0.5, 1.5]))
        >>> tuple(out.shape)
        (2, 3, 16, 16)
    """
    n, channels, height, width = images.shape
    half = kernel_size // 2
    x = torch.arange(-half, half + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x[None] / sigma[:, None].to(images.dtype)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    if images.device.type == "cpu":
        # Taps below 1e-7 of every kernel change no pixel by more than ~1e-6: dropping them
        # halves the work for the usual sigmas (a host sync, hence only on CPU).
        needed = int((kernel.amax(dim=0) >= 1e-7).nonzero().min())
        half -= needed
        kernel = kernel[:, needed : kernel_size - needed]
    kernel = kernel.repeat_interleave(channels, dim=0)
    flat = images.reshape(1, n * channels, height, width)
    flat = torch.nn.functional.pad(flat, (half, half, half, half), mode="reflect")
    flat = torch.nn.functional.conv2d(flat, kernel[:, None, None, :], groups=n * channels)
    flat = torch.nn.functional.conv2d(flat, kernel[:, None, :, None], groups=n * channels)
    return flat.view(n, channels, height, width)


def random_gaussian_blur(
    images: Tensor, group: ViewGroup, generator: torch.Generator | None = None
) -> Tensor:
    """Blur each sample with probability ``blur_prob``, sigma uniform in ``blur_sigma``.

    ``images`` may be modified in place.
    """
    n = len(images)
    chosen = _draw(n, group.blur_prob, images.device, generator)
    sigma = torch.empty(n, device=images.device).uniform_(*group.blur_sigma, generator=generator)
    kernel = blur_kernel_size(group.size)
    return _apply_to(images, chosen, lambda x, s: gaussian_blur(x, kernel, s), sigma)


def solarize(images: Tensor, chosen: Tensor | None = None) -> Tensor:
    """Invert pixels ``>= 128 / 255`` (the uint8 path's threshold 128) of the chosen samples.

    Args:
        images: Float images in [0, 1] ``(N, C, H, W)``.
        chosen: Boolean ``(N,)`` mask of the samples to solarise (default: all).

    Examples:
        >>> solarize(torch.tensor([0.2, 0.6]).view(1, 1, 1, 2)).flatten()
        tensor([0.2000, 0.4000])
    """
    invert = images >= SOLARIZE_THRESHOLD
    if chosen is not None:
        invert &= chosen.view(-1, 1, 1, 1)
    return torch.where(invert, 1.0 - images, images)


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
            pixels, which keeps the intermediate images in the L2 cache.
        cpu_per_view_size: On CPU, crops of at least this side are resized one view at a time
            from ``uint8`` (:func:`resized_crops_uint8`, exactly torchvision's resize); smaller
            ones, and all crops on an accelerator, with one ``roi_align`` per chunk
            (:func:`resized_crops`), where a Python call per view would cost more.

    Examples:
        >>> from lightning_ssl.data.presets import preset
        >>> from lightning_ssl.data.transforms import CIFAR_MEAN, CIFAR_STD
        >>> augment = BatchedMultiCrop(preset("simclr", 32), CIFAR_MEAN, CIFAR_STD)
        >>> views = augment(torch.zeros(8, 3, 32, 32, dtype=torch.uint8))
        >>> [tuple(v.shape) for v in views]
        [(8, 3, 32, 32), (8, 3, 32, 32)]
    """

    def __init__(
        self,
        groups: Sequence[ViewGroup],
        mean: Sequence[float],
        std: Sequence[float],
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        cpu_chunk_pixels: int = 2**16,
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
        return source if sizes is None else _replicate_edges(source, sizes)

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
        # On CPU a chunk of views small enough to stay in the L2 cache goes through every op
        # before the next (faster than whole-batch passes through memory); on
        # an accelerator the whole group is one chunk (fewest kernel launches).
        step = len(index)
        if device.type == "cpu":
            step = max(1, self.cpu_chunk_pixels // (group.size * group.size))
        for first in range(0, len(index), step):
            chunk = slice(first, first + step)
            crops = self._crops(source, boxes[chunk], index[chunk], group.size)
            views = self._augment(crops, group, generator)
            # Normalise straight into the output (mul + add: addcmul is slower at broadcasting).
            if out.dtype == torch.float32:
                torch.mul(views, self.scale, out=out[chunk]).add_(self.shift)
            else:
                out[chunk] = views.mul_(self.scale).add_(self.shift)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    @staticmethod
    def _crops(source: Tensor, boxes: Tensor, index: Tensor, size: int) -> Tensor:
        """Float crops in [0, 1]: per view from a uint8 source (CPU), else one roi_align."""
        if source.dtype == torch.uint8:
            crops = resized_crops_uint8(source, boxes, index, size)
            return crops.to(torch.float32, memory_format=torch.contiguous_format).mul_(1 / 255)
        return resized_crops(source, boxes, index, size)

    def _augment(
        self, views: Tensor, group: ViewGroup, generator: torch.Generator | None
    ) -> Tensor:
        """Flip, colour, blur and solarise crops in [0, 1] (the CPU path's order)."""
        n, device = len(views), views.device
        if group.flip_prob > 0:
            views = _apply_to(views, _draw(n, group.flip_prob, device, generator), _flip)
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
