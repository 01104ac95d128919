"""Multi-crop augmentation on the CPU: view groups, their pipelines and the evaluation transform.

A training sample becomes a list of views. Views come in *groups* (:class:`ViewGroup`): every view
of a group is drawn with the same crop size and augmentation strengths, but with its own random
parameters. Global groups always come before local groups, so ``views[:num_global_crops]`` are the
global crops every method expects first.

All transforms are ``torchvision.transforms.v2`` pipelines that accept a PIL image or a ``uint8``
``(C, H, W)`` tensor and return normalised ``float32`` tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from lightning_ssl.data.datasets import pil_to_rgb

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
STL10_MEAN = (0.4467, 0.4398, 0.4066)
STL10_STD = (0.2603, 0.2566, 0.2713)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Fashion-MNIST training set statistics, the grey channel replicated to RGB.
FASHION_MNIST_MEAN = (0.2860, 0.2860, 0.2860)
FASHION_MNIST_STD = (0.3530, 0.3530, 0.3530)

_PROBABILITIES = ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")


@dataclass
class ViewGroup:
    """``num`` views drawn with the same crop size and augmentation strengths.

    Each view is a random resized crop (area fraction in ``scale``, aspect ratio in ``ratio``)
    resized to ``size`` x ``size``, then a horizontal flip, colour jitter, grayscale, Gaussian blur
    (kernel ~10% of the crop, sigma drawn per image in ``blur_sigma``) and solarisation
    (threshold 128 of 255), each applied with its own probability.

    Args:
        num: Number of views in the group (0 disables the group).
        size: Side of the square output crop in pixels.
        scale: Range of the crop's area as a fraction of the image area.
        ratio: Range of the crop's aspect ratio (width / height).
        flip_prob: Probability of a horizontal flip.
        jitter_prob: Probability of applying colour jitter.
        brightness: Colour jitter brightness strength.
        contrast: Colour jitter contrast strength.
        saturation: Colour jitter saturation strength.
        hue: Colour jitter hue strength, in [0, 0.5].
        grayscale_prob: Probability of converting to grayscale (kept 3 channels).
        blur_prob: Probability of a Gaussian blur.
        blur_sigma: Range of the blur's standard deviation in pixels.
        solarize_prob: Probability of solarising (inverting pixels >= 128).
        local: Whether these are local crops (they must come after every global group).

    Examples:
        >>> ViewGroup(num=2, size=32, blur_prob=0.0)  # doctest: +ELLIPSIS
        ViewGroup(num=2, size=32, scale=(0.08, 1.0), ...)
    """

    num: int = 1
    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0
    local: bool = False

    def __post_init__(self) -> None:
        self.scale = _ordered_pair("scale", self.scale, low=0.0, high=1.0)
        self.ratio = _ordered_pair("ratio", self.ratio, low=0.0, high=math.inf)
        self.blur_sigma = _ordered_pair("blur_sigma", self.blur_sigma, low=0.0, high=math.inf)
        if self.num < 0:
            raise ValueError(f"ViewGroup.num must be >= 0, got {self.num}")
        if self.size < 1:
            raise ValueError(f"ViewGroup.size must be >= 1 pixel, got {self.size}")
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ViewGroup.{name} is a probability in [0, 1], got {value}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"ViewGroup.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"ViewGroup.hue must be in [0, 0.5], got {self.hue}")


def _ordered_pair(
    name: str, value: Sequence[float], low: float, high: float
) -> tuple[float, float]:
    """Validate ``low < value[0] <= value[1] <= high`` (a zero scale/ratio/sigma is invalid)."""
    pair = tuple(float(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"ViewGroup.{name} must be a pair (min, max), got {value!r}")
    if not low < pair[0] <= pair[1] <= high:
        raise ValueError(
            f"ViewGroup.{name} must satisfy {low} < min <= max <= {high}, got {value!r}"
        )
    return pair


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel side of about 10% of the crop (SimCLR), at least 3.

    Examples:
        >>> blur_kernel_size(224), blur_kernel_size(96)
        (23, 9)
    """
    return max(3, int(0.1 * size) // 2 * 2 + 1)


class RandomGaussianBlur:
    """Gaussian blur of a ``uint8`` (or float) ``(C, H, W)`` tensor with probability ``p``.

    Sigma is drawn uniformly in ``sigma`` per call, as in ``v2.GaussianBlur``, with reflect
    padding; the kernel is applied as two 1-D passes, which gives the same image (within one
    grey level) about 7x faster than torchvision's 2-D convolution on CPU.

    Args:
        kernel_size: Odd kernel side in pixels.
        sigma: Range of the standard deviation in pixels.
        p: Probability of blurring.

    Examples:
        >>> blur = RandomGaussianBlur(9, (0.1, 2.0), p=1.0)
        >>> tuple(blur(torch.zeros(3, 96, 96, dtype=torch.uint8)).shape)
        (3, 96, 96)
    """

    def __init__(self, kernel_size: int, sigma: tuple[float, float], p: float = 1.0):
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.kernel_size, self.sigma, self.p = kernel_size, sigma, p

    def __call__(self, image: Tensor) -> Tensor:
        if self.p < 1.0 and torch.rand(1).item() >= self.p:
            return image
        sigma = torch.empty(1).uniform_(*self.sigma).item()
        half = self.kernel_size // 2
        offsets = torch.arange(-half, half + 1, dtype=torch.float32)
        weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
        taps: list[float] = (weights / weights.sum()).tolist()
        height, width = image.shape[-2:]
        padded = torch.nn.functional.pad(image.float()[None], (half,) * 4, mode="reflect")[0]
        rows = torch.zeros(*padded.shape[:-1], width)
        for i, weight in enumerate(taps):
            rows.add_(padded[..., i : i + width], alpha=weight)
        out = torch.zeros(*image.shape[:-2], height, width)
        for i, weight in enumerate(taps):
            out.add_(rows[..., i : i + height, :], alpha=weight)
        return out.round_().clamp_(0, 255).to(torch.uint8) if image.dtype == torch.uint8 else out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kernel_size={self.kernel_size}, sigma={self.sigma}, p={self.p})"
        )


def _group_pipeline(group: ViewGroup, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """One view of ``group``: geometry and colour on PIL (or uint8), then blur, solarise, float.

    Colour jitter runs before the conversion to a tensor since PIL's is ~2x faster on CPU.
    """
    steps: list[Callable] = [
        v2.RandomResizedCrop(group.size, scale=group.scale, ratio=group.ratio, antialias=True)
    ]
    if group.flip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(group.flip_prob))
    jitter = (group.brightness, group.contrast, group.saturation, group.hue)
    if group.jitter_prob > 0 and any(jitter):
        steps.append(v2.RandomApply([v2.ColorJitter(*jitter)], p=group.jitter_prob))
    if group.grayscale_prob > 0:
        steps.append(v2.RandomGrayscale(group.grayscale_prob))
    steps.append(v2.ToImage())  # uint8 tensor from here on
    if group.blur_prob > 0:
        size = blur_kernel_size(group.size)
        steps.append(RandomGaussianBlur(size, group.blur_sigma, group.blur_prob))
    if group.solarize_prob > 0:  # on uint8: threshold 128 of 255
        steps.append(v2.RandomSolarize(threshold=128, p=group.solarize_prob))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def _as_uint8_image(image: Image.Image | Tensor) -> Image.Image | Tensor:
    """Accept a PIL image (any mode) or a uint8 (C, H, W) tensor with 1 or 3 channels."""
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if not isinstance(image, Tensor):
        raise TypeError(f"expected a PIL image or a uint8 tensor, got {type(image).__name__}")
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise TypeError(
            f"expected a uint8 (C, H, W) tensor with 1 or 3 channels, "
            f"got {image.dtype} of shape {tuple(image.shape)}"
        )
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


class MultiCropTransform:
    """Turn one image into the list of views of ``groups`` (global groups first).

    Each view gets its own random parameters, drawn from torch's generator (the DataModules
    seed it per image by ``(seed, epoch, index)``, see
    :class:`~lightning_ssl.data.sampling.PositionSeededDataset`). Crop, flip and colour
    operations run on a PIL image (a tensor input is converted once), blur, solarisation and
    normalisation on the tensor.

    Args:
        groups: The view groups, e.g. from :func:`~lightning_ssl.data.presets.preset`. Global
            groups must precede local ones.
        mean: Per-channel mean used for normalisation.
        std: Per-channel standard deviation used for normalisation.

    Examples:
        >>> from lightning_ssl.data.presets import preset
        >>> transform = MultiCropTransform(preset("simclr", 32), CIFAR_MEAN, CIFAR_STD)
        >>> views = transform(torch.zeros(3, 32, 32, dtype=torch.uint8))
        >>> [tuple(v.shape) for v in views]
        [(3, 32, 32), (3, 32, 32)]
    """

    def __init__(self, groups: Sequence[ViewGroup], mean: Sequence[float], std: Sequence[float]):
        groups = [g for g in groups if g.num > 0]
        if not groups:
            raise ValueError("MultiCropTransform needs at least one view group with num > 0")
        seen_local = False
        for index, group in enumerate(groups):
            if seen_local and not group.local:
                raise ValueError(
                    f"global view group {index} comes after a local group: "
                    "list every global group (local=False) before the local ones"
                )
            seen_local = seen_local or group.local
        self.groups = list(groups)
        self.pipelines = [_group_pipeline(g, mean, std) for g in self.groups]

    @property
    def num_views(self) -> int:
        """Total number of views per image."""
        return sum(g.num for g in self.groups)

    def __call__(self, image: Image.Image | Tensor) -> list[Tensor]:
        image = _as_uint8_image(image)
        if isinstance(image, Tensor):  # PIL's crops and colour ops are faster on small images
            image = Image.fromarray(image.permute(1, 2, 0).numpy())
        return [
            pipeline(image)
            for group, pipeline in zip(self.groups, self.pipelines, strict=True)
            for _ in range(group.num)
        ]

    def __repr__(self) -> str:
        groups = "\n".join(f"  {g}" for g in self.groups)
        return f"{type(self).__name__}(\n{groups}\n)"


def eval_transform(
    size: int, mean: Sequence[float], std: Sequence[float], resize: bool
) -> v2.Compose:
    """Deterministic evaluation transform to a normalised float ``(3, size, size)`` tensor.

    With ``resize=True`` (ImageNet protocol) the short side is resized to ``size / 0.875``
    (256 for 224) and the centre ``size`` x ``size`` is cropped. With ``resize=False`` (CIFAR,
    STL-10, Fashion-MNIST) images are only resized and centre-cropped to ``size`` when they
    are not already that size.

    Args:
        size: Output side in pixels.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        resize: Whether to use the ImageNet resize-then-centre-crop protocol.

    Examples:
        >>> t = eval_transform(224, IMAGENET_MEAN, IMAGENET_STD, resize=True)
        >>> tuple(t(torch.zeros(3, 160, 240, dtype=torch.uint8)).shape)
        (3, 224, 224)
    """
    short_side = round(size / 0.875) if resize else size
    return v2.Compose(
        [
            v2.Lambda(_as_uint8_image),
            v2.Resize(short_side, antialias=True),
            v2.CenterCrop(size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )
