"""Colour operations and filters on whole batches, with per-sample random parameters.

Building blocks of :class:`~lightning_ssl.data.batched.BatchedMultiCrop`, public so that tests
check each against torchvision: :func:`adjust_brightness`, :func:`adjust_contrast`,
:func:`adjust_saturation`, :func:`adjust_hue`, :func:`rgb_to_grayscale`, :func:`color_jitter`
(ops in a random order per sample), :func:`gaussian_blur` and :func:`solarize`. Images are
float in ``[0, 1]``; per-sample factors have shape ``(N,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lightning_ssl.data.transforms import ViewGroup, blur_kernel_size

#: ITU-R 601-2 luma weights, as torchvision's ``rgb_to_grayscale`` and PIL's ``convert("L")``.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: Solarisation threshold of the uint8 CPU path (128 of 255) on the [0, 1] scale.
SOLARIZE_THRESHOLD = 128 / 255


# -- colour (float images in [0, 1], per-sample factors of shape (N,)) ------------------------
def rgb_to_grayscale(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma ``(N, 1, H, W)`` of RGB ``(N, 3, H, W)`` images.

    Examples:
        >>> rgb_to_grayscale(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 1, 2, 2])
    """
    r, g, b = images.unbind(dim=1)
    # One temporary, three passes (the sum of three products would take five).
    gray = torch.mul(r, GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1])
    return gray.add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


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
    # The mean grey level is the luma of the channel means: one reduction, no grey image.
    means = images.mean(dim=(2, 3))
    mean = rgb_to_grayscale(means.view(-1, 3, 1, 1))
    # torchvision's blend with per-sample scalars: two broadcast passes (lerp with two
    # broadcast operands takes a slow path on CPU, about 2x slower).
    factor = _per_sample(factor)
    return (images * factor).add_(mean * (1 - factor)).clamp_(0, 1)


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
    keeps each pixel's max (V) and min channel, so with the rotated hue ``h`` in sixths of a
    turn, in [0, 6), the way back is the closed form ``c = max - (max - min) * w_c(h)`` with
    torchvision's sector table written as ``w_R = clamp(2 - |h - 3|, 0, 1)``,
    ``w_G = clamp(|h - 2| - 1, 0, 1)`` and ``w_B = clamp(|h - 4| - 1, 0, 1)``: one remainder
    on the hue plane, four passes over the three channels.

    Examples:
        >>> red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        >>> adjust_hue(red, torch.tensor([1 / 3])).flatten()  # red -> green
        tensor([0., 1., 0.])
    """
    r, g, b = images.unbind(dim=1)
    # Elementwise max/min of the planes: the same values as aminmax over dim 1, which reduces
    # across a strided dimension about 10x slower on CPU.
    maxc, minc = torch.maximum(r, g), torch.minimum(r, g)
    maxc, minc = torch.maximum(maxc, b, out=maxc), torch.minimum(minc, b, out=minc)
    spread = maxc - minc
    is_r, is_g = maxc == r, maxc == g
    # Hue in sixths as torchvision's _rgb_to_hsv: (g - b) / spread if max is r, else
    # 2 + (b - r) / spread if max is g, else 4 + (r - g) / spread; grey pixels (spread 0) get 0.
    # (Built in place: adding 2 or 4 times spread is exact, so the values are the same.)
    hue = torch.sub(b, r).add_(spread, alpha=2)
    hue = torch.where(is_g, hue, torch.sub(r, g).add_(spread, alpha=4), out=hue)
    hue = torch.where(is_r, g - b, hue, out=hue).div_(spread.clamp(min=1e-12))
    hue.add_(6.0 * factor.view(-1, 1, 1)).remainder_(6.0)
    centres, signs, offsets = _HUE_TABLE.to(images.device, images.dtype).view(3, 1, 3, 1, 1)
    weight = (hue.unsqueeze(1) - centres).abs_()
    weight = torch.addcmul(offsets, weight, signs).clamp_(0.0, 1.0)
    return torch.addcmul(maxc.unsqueeze(1), spread.unsqueeze(1), weight, value=-1.0)


#: Per channel (R, G, B): the centre, sign and offset of ``w_c = clamp(sign |h - centre| +
#: offset, 0, 1)`` in :func:`adjust_hue`.
_HUE_TABLE = torch.tensor([[3.0, 2.0, 4.0], [-1.0, 1.0, 1.0], [2.0, -1.0, -1.0]])


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


def apply_to(
    images: Tensor, chosen: list[int], op: Callable[..., Tensor], *args: Tensor
) -> Tensor:
    """``op`` on the samples listed in ``chosen`` (per-sample ``args`` indexed alike).

    The choice is a Python list (one host copy per decision table, not one per op); all or
    none chosen (frequent for small chunks of the CPU path) skips the indexing.
    A subset is written back into ``images`` in place (the pipeline's own temporaries).
    """
    if not chosen:
        return images
    if len(chosen) == len(images):
        return op(images, *args)
    index = torch.tensor(chosen, device=images.device)
    if not images.is_contiguous():  # e.g. a grey batch expanded to 3 channels: no aliasing
        images = images.contiguous()
    # index_select / index_copy_: a plain copy per sample (advanced indexing's generic
    # gather and scatter kernels cost several times more on CPU).
    subset = op(images.index_select(0, index), *(a.index_select(0, index) for a in args))
    return images.index_copy_(0, index, subset.to(images.dtype))


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
                images = apply_to(images, chosen, op, factor)
    return images


def draw(
    n: int, p: float, device: torch.device, generator: torch.Generator | None = None
) -> list[int]:
    """The samples (of ``n``) for which an event of probability ``p`` happens."""
    return (torch.rand(n, device=device, generator=generator) < p).nonzero()[:, 0].tolist()


def _to_grayscale(images: Tensor) -> Tensor:
    return rgb_to_grayscale(images).expand(-1, 3, -1, -1)


def random_grayscale(images: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Replace each sample by its grey level (kept 3 channels) with probability ``p``.

    ``images`` may be modified in place.
    """
    return apply_to(images, draw(len(images), p, images.device, generator), _to_grayscale)


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
    half = kernel_size // 2
    x = torch.arange(-half, half + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x[None] / sigma[:, None].to(images.dtype)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    if images.device.type != "cpu":
        return _separable_blur(images, kernel)
    # Taps below 1e-7 of a kernel change no pixel by more than ~1e-6: dropping them halves
    # the work for the usual sigmas. Samples needing the same width share one convolution
    # (a host sync, hence only on CPU).
    needed = ((kernel >= 1e-7).int().argmax(dim=1)).tolist()  # first kept tap per sample
    if len(set(needed)) == 1:
        return _separable_blur(images, kernel[:, needed[0] : kernel_size - needed[0]])
    out = torch.empty_like(images)
    for first in set(needed):
        index = torch.tensor([i for i, f in enumerate(needed) if f == first])
        out[index] = _separable_blur(images[index], kernel[index, first : kernel_size - first])
    return out


def _separable_blur(images: Tensor, kernel: Tensor) -> Tensor:
    """Blur ``(N, C, H, W)`` images by per-sample odd 1-D kernels ``(N, k)``, reflect padding."""
    n, channels, height, width = images.shape
    half = kernel.shape[1] // 2
    kernel = kernel.repeat_interleave(channels, dim=0)
    flat = images.reshape(1, n * channels, height, width)
    flat = torch.nn.functional.pad(flat, (half, half, half, half), mode="reflect")
    flat = torch.nn.functional.conv2d(flat, kernel[:, None, None, :], groups=n * channels)
    flat = torch.nn.functional.conv2d(flat, kernel[:, None, :, None], groups=n * channels)
    return flat.view(n, channels, height, width)


def gaussian_blur_taps(view: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """:func:`gaussian_blur` of one or a few images with one ``sigma``, as shifted sums.

    With the same kernel for every channel the taps are plain Python floats, and each is one
    multiply-add of a shifted slice of the padded image: about 4x faster on a CPU core than
    a depthwise convolution of one image (1.75 vs 7.3 ms for a 224 px view, 17 taps).

    Examples:
        >>> image = torch.rand(1, 3, 16, 16)
        >>> out = gaussian_blur_taps(image, 5, 1.0)
        >>> bool(torch.allclose(out, gaussian_blur(image, 5, torch.ones(1)), atol=1e-6))
        True
    """
    half = kernel_size // 2
    kernel = [math.exp(-0.5 * (x / sigma) ** 2) for x in range(-half, half + 1)]
    total = math.fsum(kernel)
    taps = [tap / total for tap in kernel]  # in Python: no tensor ops for 23 numbers
    first = next(i for i, tap in enumerate(taps) if tap >= 1e-7)  # as gaussian_blur trims
    taps, half = taps[first : kernel_size - first], half - first
    height, width = view.shape[-2:]
    padded = torch.nn.functional.pad(view, (half, half, half, half), mode="reflect")
    rows = torch.mul(padded[..., 0:width], taps[0])
    for i, tap in enumerate(taps[1:], start=1):
        rows.add_(padded[..., i : i + width], alpha=tap)
    out = torch.mul(rows[..., 0:height, :], taps[0])
    for i, tap in enumerate(taps[1:], start=1):
        out.add_(rows[..., i : i + height, :], alpha=tap)
    return out


def random_gaussian_blur(
    images: Tensor, group: ViewGroup, generator: torch.Generator | None = None
) -> Tensor:
    """Blur each sample with probability ``blur_prob``, sigma uniform in ``blur_sigma``.

    ``images`` may be modified in place.
    """
    n = len(images)
    chosen = draw(n, group.blur_prob, images.device, generator)
    sigma = torch.empty(n, device=images.device).uniform_(*group.blur_sigma, generator=generator)
    kernel = blur_kernel_size(group.size)
    return apply_to(images, chosen, lambda x, s: gaussian_blur(x, kernel, s), sigma)


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
