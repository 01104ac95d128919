"""Multi-crop transforms: view groups, presets, per-view randomness and the eval transform."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as F
from jsonargparse import ArgumentParser
from PIL import Image

from lightning_ssl.data import MultiCropTransform, ViewGroup, eval_transform, preset
from lightning_ssl.data.presets import PRESETS
from lightning_ssl.data.transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomGaussianBlur,
    blur_kernel_size,
)


def _image(size: int = 32, seed: int = 0) -> torch.Tensor:
    """A smooth random uint8 image (varied enough that crops differ)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8)
    return F.resize(small, [size, size], antialias=True)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num": -1}, "num"),
        ({"size": 0}, "size"),
        ({"scale": (0.5, 0.2)}, "scale"),
        ({"scale": (0.0, 1.0)}, "scale"),
        ({"scale": (0.1, 1.5)}, "scale"),
        ({"ratio": (1.0,)}, "ratio"),
        ({"flip_prob": 1.5}, "flip_prob"),
        ({"jitter_prob": -0.1}, "jitter_prob"),
        ({"grayscale_prob": 2.0}, "grayscale_prob"),
        ({"blur_prob": -1.0}, "blur_prob"),
        ({"solarize_prob": 1.01}, "solarize_prob"),
        ({"brightness": -0.4}, "brightness"),
        ({"hue": 0.6}, "hue"),
        ({"blur_sigma": (2.0, 0.1)}, "blur_sigma"),
    ],
)
def test_view_group_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"ViewGroup\.{field}\b"):
        ViewGroup(**kwargs)


def test_view_group_coerces_lists_to_tuples():
    group = ViewGroup(scale=[0.2, 1.0], ratio=[1, 1])  # type: ignore[arg-type]
    assert group.scale == (0.2, 1.0) and group.ratio == (1.0, 1.0)


def test_view_groups_parse_as_jsonargparse_dataclasses():
    parser = ArgumentParser()
    parser.add_argument("--views", type=list[ViewGroup])
    config = parser.parse_args(
        ['--views=[{"num": 2, "size": 32}, {"num": 6, "size": 16, "local": true}]']
    )
    views = parser.instantiate_classes(config).views
    assert [(v.num, v.size, v.local) for v in views] == [(2, 32, False), (6, 16, True)]
    with pytest.raises(Exception, match="flip_prob"):
        parser.instantiate_classes(parser.parse_args(['--views=[{"flip_prob": 3}]']))


def test_unknown_preset_lists_the_valid_names():
    names = "simclr, moco, byol, dino, swav, mae, instdisc, ijepa, ibot, cpc, none"
    with pytest.raises(ValueError, match=names):
        preset("simsiam", 32)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_put_global_crops_first_and_drop_blur_on_small_images(name):
    groups = preset(name, 32, 16, num_local=4)
    assert all(g.blur_prob == 0.0 for g in groups)
    locals_ = [g.local for g in groups]
    assert locals_ == sorted(locals_)
    one_view = ("instdisc", "mae", "ijepa", "cpc")
    assert sum(g.num for g in groups if not g.local) == (1 if name in one_view else 2)
    assert sum(g.num for g in groups if g.local) == (0 if name == "none" else 4)


def test_simclr_jitter_strength_depends_on_resolution():
    cifar, imagenet = preset("simclr", 32)[0], preset("simclr", 224)[0]
    assert (cifar.brightness, cifar.hue, cifar.blur_prob) == (0.4, 0.1, 0.0)
    assert (imagenet.brightness, imagenet.saturation, imagenet.hue) == (0.8, 0.8, 0.2)
    assert imagenet.blur_prob == 0.5 and imagenet.scale == (0.08, 1.0)
    assert preset("simclr", 224, num_local=0) == [imagenet]


def test_byol_views_are_asymmetric():
    first, second = preset("byol", 224)
    assert (first.num, first.blur_prob, first.solarize_prob) == (1, 1.0, 0.0)
    assert (second.num, second.blur_prob, second.solarize_prob) == (1, 0.1, 0.2)
    for g in (first, second):
        assert (g.brightness, g.contrast, g.saturation, g.hue, g.jitter_prob) == (
            0.4,
            0.4,
            0.2,
            0.1,
            0.8,
        )
        assert g.grayscale_prob == 0.2


def test_dino_and_swav_multi_crop_scales():
    g1, g2, local = preset("dino", 224, 96, num_local=8)
    assert g1.scale == g2.scale == (0.4, 1.0) and local.scale == (0.05, 0.4)
    assert (g1.blur_prob, g2.blur_prob, g2.solarize_prob) == (1.0, 0.1, 0.2)
    assert (local.num, local.size, local.blur_prob, local.local) == (8, 96, 0.5, True)
    assert preset("dino", 224)[0].scale == (0.14, 1.0)  # DINO's advice without local crops
    glob, local = preset("swav", 224, 96, num_local=6)
    assert glob.scale == (0.14, 1.0) and local.scale == (0.05, 0.14) and glob.num == 2
    assert preset("moco", 224)[0].hue == 0.1


def test_multicrop_output_shapes_order_and_normalisation():
    groups = [ViewGroup(2, 32), ViewGroup(3, 16, (0.05, 0.4), local=True)]
    transform = MultiCropTransform(groups, CIFAR_MEAN, CIFAR_STD)
    views = transform(_image())
    assert transform.num_views == 5
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(v.dtype == torch.float32 for v in views)
    assert min(v.min() for v in views) < 0 < max(v.max() for v in views)


def test_multicrop_rejects_global_after_local_and_bad_inputs():
    with pytest.raises(ValueError, match="global view group 1 comes after a local"):
        MultiCropTransform([ViewGroup(2, 16, local=True), ViewGroup(2, 32)], CIFAR_MEAN, CIFAR_STD)
    transform = MultiCropTransform(preset("simclr", 32), CIFAR_MEAN, CIFAR_STD)
    with pytest.raises(TypeError, match="uint8"):
        transform(torch.rand(3, 32, 32))


def test_multicrop_accepts_pil_of_any_mode_and_grey_tensors():
    transform = MultiCropTransform(preset("simclr", 32), CIFAR_MEAN, CIFAR_STD)
    for image in (
        Image.new("L", (40, 30), 7),
        Image.new("RGBA", (40, 30)),
        Image.new("CMYK", (40, 30)),
        torch.zeros(1, 32, 32, dtype=torch.uint8),
    ):
        assert [tuple(v.shape) for v in transform(image)] == [(3, 32, 32)] * 2


def test_views_of_one_image_differ():
    """Every view draws its own crop/flip/colour parameters (a statistical check)."""
    torch.manual_seed(0)
    transform = MultiCropTransform(preset("simclr", 32), CIFAR_MEAN, CIFAR_STD)
    image = _image()
    pairs = [transform(image) for _ in range(20)]
    different = sum(not torch.allclose(a, b) for a, b in pairs)
    assert different >= 19
    firsts = torch.stack([a for a, _ in pairs])
    assert firsts.std(dim=0).mean() > 0.1  # the first view varies across calls too


def test_none_preset_gives_identical_unaugmented_views():
    transform = MultiCropTransform(preset("none", 32), CIFAR_MEAN, CIFAR_STD)
    image = _image(48)
    a, b = transform(image)
    assert torch.equal(a, b)
    expected = eval_transform(32, CIFAR_MEAN, CIFAR_STD, resize=False)(image)
    assert torch.allclose(a, expected, atol=0.05)


def test_solarize_threshold_is_128_of_255():
    plain = {"flip_prob": 0.0, "jitter_prob": 0.0, "grayscale_prob": 0.0}
    group = ViewGroup(1, 32, (1.0, 1.0), (1.0, 1.0), solarize_prob=1.0, **plain)
    transform = MultiCropTransform([group], (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    image = torch.arange(3 * 32 * 32).remainder(256).to(torch.uint8).view(3, 32, 32)
    (view,) = transform(image)
    assert torch.equal((view * 255).round().to(torch.uint8), F.solarize(image, 128))


def test_separable_blur_matches_torchvision():
    image = _image(96)
    for size, sigma in ((9, 0.5), (23, 2.0)):
        ours = RandomGaussianBlur(size, (sigma, sigma))(image)
        ref = F.gaussian_blur(image, [size, size], [sigma, sigma])
        assert (ours.int() - ref.int()).abs().max() <= 1
    assert blur_kernel_size(224) == 23 and blur_kernel_size(96) == 9
    assert torch.equal(RandomGaussianBlur(9, (1.0, 1.0), p=0.0)(image), image)


def test_eval_transform_resize_and_native():
    wide = torch.randint(0, 256, (3, 160, 240), dtype=torch.uint8)
    out = eval_transform(224, IMAGENET_MEAN, IMAGENET_STD, resize=True)(wide)
    assert tuple(out.shape) == (3, 224, 224)
    image = _image()
    native = eval_transform(32, CIFAR_MEAN, CIFAR_STD, resize=False)(image)
    mean, std = torch.tensor(CIFAR_MEAN)[:, None, None], torch.tensor(CIFAR_STD)[:, None, None]
    assert torch.allclose(native, (image / 255 - mean) / std, atol=1e-6)
    pil = Image.new("I;16", (50, 40), 65535)
    assert tuple(eval_transform(32, CIFAR_MEAN, CIFAR_STD, False)(pil).shape) == (3, 32, 32)
