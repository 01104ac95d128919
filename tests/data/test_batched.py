"""Batched multi-crop augmentation against torchvision, on real CIFAR-10 and Imagewoof images."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch
import torchvision.transforms.v2.functional as F
from lightning.pytorch import LightningModule, Trainer
from PIL import Image
from torch.utils.data import ConcatDataset
from torchvision.transforms import v2

from lightning_ssl.data import CIFAR10DataModule, ImageFolderDataModule, ViewGroup, preset
from lightning_ssl.data.batched import BatchedMultiCrop
from lightning_ssl.data.colour import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    gaussian_blur_taps,
    rgb_to_grayscale,
    solarize,
)
from lightning_ssl.data.crops import resized_crops, resized_crops_uint8, sample_crop_boxes
from lightning_ssl.data.datamodule import InMemoryDataModule
from lightning_ssl.data.datasets import (
    TensorImageDataset,
    load_image_tensor,
    pad_collate,
    scan_image_folder,
)
from lightning_ssl.data.transforms import CIFAR_MEAN, CIFAR_STD, MultiCropTransform

PLAIN = {"flip_prob": 0.0, "jitter_prob": 0.0, "grayscale_prob": 0.0}  # crop only


@pytest.fixture(scope="module")
def cifar_images(cifar10_dir: Path) -> torch.Tensor:
    """300 real CIFAR-10 test images, uint8 (300, 3, 32, 32)."""
    _, samples = scan_image_folder(cifar10_dir / "test")
    paths = random.Random(0).sample([path for path, _ in samples], 300)
    return torch.stack([load_image_tensor(path) for path in paths])


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between empirical CDFs."""
    points = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values, points, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values, points, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def unnormalize(view: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    return view * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)


# -- structure -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("groups", "image_side", "expected"),
    [
        (preset("simclr", 32), 32, [32, 32]),
        (preset("dino", 64, 28, num_local=4), 48, [64, 64, 28, 28, 28, 28]),
        (preset("byol", 32), 40, [32, 32]),
    ],
)
def test_views_have_the_cpu_paths_structure(groups, image_side, expected):
    images = torch.randint(0, 256, (5, 3, image_side, image_side), dtype=torch.uint8)
    views = BatchedMultiCrop(groups, CIFAR_MEAN, CIFAR_STD)(images)
    cpu = MultiCropTransform(groups, CIFAR_MEAN, CIFAR_STD)(images[0])
    assert [tuple(v.shape) for v in views] == [(5, 3, s, s) for s in expected]
    assert [tuple(v.shape[-3:]) for v in views] == [tuple(v.shape) for v in cpu]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    assert not torch.allclose(views[0], views[1])  # independent parameters per view
    half = BatchedMultiCrop(groups, CIFAR_MEAN, CIFAR_STD, channels_last=True, dtype=torch.bfloat16)
    out = half(images)[0]
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    # The accelerator's configuration (one chunk per group, roi_align crops), here on CPU.
    whole = BatchedMultiCrop(
        groups, CIFAR_MEAN, CIFAR_STD, cpu_chunk_pixels=2**40, cpu_per_view_size=2**20
    )
    assert [tuple(v.shape) for v in whole(images)] == [(5, 3, s, s) for s in expected]


def test_global_groups_must_come_first():
    with pytest.raises(ValueError, match="global view group comes after a local"):
        BatchedMultiCrop([ViewGroup(1, 16, local=True), ViewGroup(1, 32)], CIFAR_MEAN, CIFAR_STD)
    with pytest.raises(TypeError, match="uint8"):
        BatchedMultiCrop(preset("simclr", 32), CIFAR_MEAN, CIFAR_STD)(torch.zeros(2, 3, 8, 8))


@pytest.mark.parametrize("per_view_size", [1, 10**6], ids=["uint8-per-view", "roi-align"])
def test_padded_batches_never_sample_the_padding(per_view_size):
    """Flat grey images padded with white: any padding read by a crop would show as > grey."""
    sizes = torch.tensor([[37, 23], [9, 50], [50, 50], [12, 7]])
    images = [torch.full((3, int(h), int(w)), 100, dtype=torch.uint8) for h, w in sizes]
    batch, collated_sizes, _ = pad_collate([(image, 0) for image in images])
    batch[batch == 0] = 255  # sentinel padding
    assert torch.equal(collated_sizes, sizes)
    groups = [
        ViewGroup(8, 31, scale=(0.01, 1.0), ratio=(0.2, 5.0), **{**PLAIN, "flip_prob": 0.5}),
        ViewGroup(8, 5, scale=(0.01, 0.2), local=True, **PLAIN),
    ]
    augment = BatchedMultiCrop(
        groups, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), cpu_per_view_size=per_view_size
    )
    for _ in range(20):
        for view in augment(batch, collated_sizes):
            torch.testing.assert_close(view, torch.full_like(view, 100 / 255))


# -- crop geometry ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio"),
    [
        (32, 32, (0.08, 1.0), (3 / 4, 4 / 3)),  # SimCLR on CIFAR
        (160, 240, (0.05, 0.4), (3 / 4, 4 / 3)),  # DINO locals on Imagewoof 160 px
        (40, 40, (0.9, 1.0), (2.0, 3.0)),  # mostly the fallback: central crop clamped by ratio
    ],
)
def test_crop_boxes_follow_torchvision(height, width, scale, ratio):
    n = 4000
    torch.manual_seed(0)
    ours = sample_crop_boxes(torch.full((n,), height), torch.full((n,), width), scale, ratio)
    assert torch.equal(ours, ours.round()) and (ours[:, :2] >= 0).all()
    assert (ours[:, 2] <= width).all() and (ours[:, 3] <= height).all()
    image = torch.empty(3, height, width)
    reference = torch.tensor(
        [v2.RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)]
    ).float()  # (top, left, h, w)
    ours_w, ours_h = ours[:, 2] - ours[:, 0], ours[:, 3] - ours[:, 1]
    ref_h, ref_w = reference[:, 2], reference[:, 3]
    area = (ours_w * ours_h / (height * width), ref_w * ref_h / (height * width))
    log_ratio = ((ours_w / ours_h).log(), (ref_w / ref_h).log())
    # Box centres relative to the free space: uniform placement as randint.
    centre = (ours[:, 0] + ours_w / 2) / width, (reference[:, 1] + ref_w / 2) / width
    for statistic in (area, log_ratio, centre):
        assert ks_statistic(*statistic) < 0.05  # 5% level critical value: 0.030


def test_upscaled_crops_are_torchvisions_resized_crop(cifar_images):
    """Inside, exactly F.resized_crop; on the outer ring roi_align reads up to half a pixel
    beyond the box where torchvision clamps at the crop's edge (a subpixel difference)."""
    images = cifar_images[:6].float() / 255
    boxes = torch.tensor([[0, 0, 32, 32], [3, 5, 20, 30], [10, 0, 31, 12]] * 2).float()
    ours = resized_crops(images, boxes, torch.arange(6), 32)
    for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        reference = F.resized_crop(images[k], y0, x0, y1 - y0, x1 - x0, [32, 32], antialias=True)
        torch.testing.assert_close(ours[k, :, 1:-1, 1:-1], reference[:, 1:-1, 1:-1])
        assert (ours[k] - reference).abs().mean() < 0.01
    torch.testing.assert_close(ours[0], images[0])  # whole image at its size: a copy


def test_uint8_crops_are_torchvisions_resized_crop(cifar_images):
    """The CPU path for large crops: exactly v2's RandomResizedCrop on a uint8 tensor."""
    images = cifar_images[:4].contiguous(memory_format=torch.channels_last)
    boxes = torch.tensor([[0, 0, 32, 32], [3, 5, 20, 30], [2, 1, 31, 27], [10, 0, 31, 12]])
    for size in (8, 48):  # down- and upscaling
        ours = resized_crops_uint8(images, boxes.float(), torch.arange(4), size)
        for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            expected = F.resized_crop(
                cifar_images[k], y0, x0, y1 - y0, x1 - x0, [size, size], antialias=True
            )
            assert torch.equal(ours[k], expected)


def test_downscaled_crops_are_antialiased():
    """A 1-pixel checkerboard shrunk 3x is near-flat grey with antialiasing, 0/1 without."""
    board = ((torch.arange(48)[:, None] + torch.arange(48)[None]) % 2).float()
    board = board.expand(1, 3, 48, 48).contiguous()
    box = torch.tensor([[0.0, 0.0, 48.0, 48.0]])
    ours = resized_crops(board, box, torch.zeros(1, dtype=torch.long), 16)
    antialiased = F.resize(board, [16, 16], antialias=True)
    aliased = F.resize(board, [16, 16], antialias=False)
    assert (ours - 0.5).abs().max() < 0.06 and (antialiased - 0.5).abs().max() < 0.06
    assert (aliased - 0.5).abs().min() == 0.5  # every pixel black or white


# -- colour and filters, op by op --------------------------------------------------------------
def test_colour_ops_equal_torchvisions(cifar_images):
    images = cifar_images[:16].float() / 255
    factors = torch.linspace(0.2, 1.8, 16)
    hues = torch.linspace(-0.5, 0.5, 16)
    for ours, reference, values in (
        (adjust_brightness, F.adjust_brightness, factors),
        (adjust_contrast, F.adjust_contrast, factors),
        (adjust_saturation, F.adjust_saturation, factors),
        (adjust_hue, F.adjust_hue, hues),
    ):
        out = ours(images, values)
        expected = torch.stack(
            [reference(x, float(v)) for x, v in zip(images, values, strict=True)]
        )
        torch.testing.assert_close(out, expected, atol=2e-6, rtol=0)
    torch.testing.assert_close(rgb_to_grayscale(images), F.rgb_to_grayscale(images))


def test_blur_solarize_and_flip_equal_torchvisions(cifar_images):
    images = cifar_images[:8].float() / 255
    sigma = torch.linspace(0.1, 2.0, 8)
    blurred = gaussian_blur(images, 9, sigma)
    for x, s, out in zip(images, sigma.tolist(), blurred, strict=True):
        expected = F.gaussian_blur(x, [9, 9], [s, s])
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
        taps = gaussian_blur_taps(x[None], 9, s)[0]  # the per-view path's blur
        torch.testing.assert_close(taps, expected, atol=1e-5, rtol=0)
    chosen = torch.arange(8) % 2 == 0
    expected = torch.where(chosen.view(-1, 1, 1, 1), F.solarize(images, 128 / 255), images)
    assert torch.equal(solarize(images, chosen), expected)
    # Flip alone on identity crops: each view is the image or its exact mirror image.
    group = ViewGroup(1, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0), **{**PLAIN, "flip_prob": 0.5})
    original = cifar_images.float() / 255
    for per_view_size in (64, 1):  # batched ops, per view
        torch.manual_seed(0)
        augment = BatchedMultiCrop([group], CIFAR_MEAN, CIFAR_STD, cpu_per_view_size=per_view_size)
        view = unnormalize(augment(cifar_images)[0])
        same = (view - original).abs().amax(dim=(1, 2, 3)) < 1e-5
        mirrored = (view - original.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
        assert (same | mirrored).all() and 0.4 < mirrored.float().mean() < 0.6


# -- distributions against the CPU (PIL) path ---------------------------------------------------
@pytest.mark.parametrize("per_view_size", [64, 1])  # 32 px views: batched ops, or per view
def test_jitter_statistics_match_the_cpu_path(cifar_images, per_view_size):
    """Jitter only (identity crop), SimCLR's CIFAR strengths: same colour distributions."""
    group = ViewGroup(
        4, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=0.0, grayscale_prob=0.0,
        jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
    )  # fmt: skip
    torch.manual_seed(0)
    augment = BatchedMultiCrop([group], CIFAR_MEAN, CIFAR_STD, cpu_per_view_size=per_view_size)
    ours = unnormalize(torch.cat(augment(cifar_images)))
    cpu = MultiCropTransform([group], CIFAR_MEAN, CIFAR_STD)
    reference = unnormalize(torch.cat([torch.stack(cpu(image)) for image in cifar_images]))
    for channel in range(3):
        a, b = ours[:, channel], reference[:, channel]
        assert abs(a.mean() - b.mean()) < 0.01 and abs(a.std() - b.std()) < 0.01
        # Per-view means and contrasts: the distribution of the random factors shows there.
        assert ks_statistic(a.mean(dim=(1, 2)), b.mean(dim=(1, 2))) < 0.08
        assert ks_statistic(a.std(dim=(1, 2)), b.std(dim=(1, 2))) < 0.08
    # Jitter off for 20% of the views: exactly the input there, in both paths.
    unchanged = (ours - cifar_images.float().repeat(4, 1, 1, 1) / 255).abs().amax((1, 2, 3))
    assert abs(float((unchanged < 1e-5).float().mean()) - 0.2) < 0.04


@pytest.mark.parametrize("per_view_size", [64, 1])
def test_grayscale_probability(cifar_images, per_view_size):
    group = ViewGroup(8, 16, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.2)
    torch.manual_seed(0)
    augment = BatchedMultiCrop([group], CIFAR_MEAN, CIFAR_STD, cpu_per_view_size=per_view_size)
    views = unnormalize(torch.cat(augment(cifar_images)))
    grey = (views.amax(dim=1) - views.amin(dim=1)).amax(dim=(1, 2)) < 1e-5
    assert abs(float(grey.float().mean()) - 0.2) < 0.03  # 2400 views: 3.7 standard errors


# -- datamodule integration --------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_cifar(cifar10_dir: Path, tmp_path_factory) -> Path:
    """A 10-class CIFAR-10 JPEG tree of 8 training and 4 test images per class."""
    root = tmp_path_factory.mktemp("small_cifar")
    for split, count in (("train", 8), ("test", 4)):
        for folder in sorted((cifar10_dir / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:count]:
                shutil.copy(image, root / split / folder.name / image.name)
    return root


class _Recorder(LightningModule):
    """Records the shapes of the training views and the validation batches it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 10)
        self.train_shapes: list[list[tuple[int, ...]]] = []
        self.val_batches: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        views, labels = batch
        self.train_shapes.append([tuple(v.shape) for v in views])
        return torch.nn.functional.cross_entropy(self.layer(views[0].mean(dim=(2, 3))), labels)

    def validation_step(self, batch, batch_idx):
        images, _ = batch
        self.val_batches.append(images)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(dm) -> _Recorder:
    model = _Recorder()
    trainer = Trainer(
        fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return model


@pytest.mark.parametrize("on_device", [False, True])
def test_trainer_gets_the_cpu_paths_views(small_cifar, tmp_path, on_device):
    kwargs = {"batch_size": 8, "num_workers": 0, "cache_dir": str(tmp_path)}
    cpu = CIFAR10DataModule(str(small_cifar), **kwargs)
    dm = CIFAR10DataModule(
        str(small_cifar), batched_augmentation=True, images_on_device=on_device, **kwargs
    )
    cpu_views, _ = next(iter(cpu.train_dataloader()))
    model = _fit(dm)
    assert model.train_shapes == [[tuple(v.shape) for v in cpu_views]] * 2
    # Validation batches are the evaluation images, untouched by the batched augmentation.
    expected, _ = next(iter(cpu.val_dataloader()))
    assert torch.equal(model.val_batches[0], expected)


def test_images_on_device_indices_address_the_images(small_cifar, tmp_path):
    dm = CIFAR10DataModule(
        str(small_cifar), batch_size=8, num_workers=0, cache_dir=str(tmp_path), train_subset=40,
        batched_augmentation=True, images_on_device=True,
    )  # fmt: skip
    indices, labels = next(iter(dm.train_dataloader()))
    images = dm.device_images(torch.device("cpu"))
    train = dm.dataset("train")
    assert len(images) == len(train) == 40
    for index, label in zip(indices.tolist(), labels.tolist(), strict=True):
        image, expected_label = train[index]
        assert torch.equal(images[index], image) and label == expected_label
    with pytest.raises(ValueError, match="needs batched_augmentation=True"):
        CIFAR10DataModule(str(small_cifar), images_on_device=True)


def test_image_folder_batches_are_padded_with_sizes(imagewoof_dir):
    dm = ImageFolderDataModule(
        str(imagewoof_dir), batch_size=4, num_workers=0, augmentation="dino",
        num_local_crops=2, train_subset=16, batched_augmentation=True,
    )  # fmt: skip
    images, sizes, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and sizes.shape == (4, 2) and labels.shape == (4,)
    assert min(sizes.min(dim=1).values.tolist()) == 160  # Imagewoof 160 px: short side 160
    assert images.shape[-2:] == tuple(sizes.max(dim=0).values.tolist())
    for image, (height, width) in zip(images, sizes.tolist(), strict=True):
        assert not image[:, height:].any() and not image[:, :, width:].any()
    views, out_labels = dm.augment_batch((images, sizes, labels))
    assert [tuple(v.shape) for v in views] == [(4, 3, 224, 224)] * 2 + [(4, 3, 96, 96)] * 2
    assert torch.equal(out_labels, labels)
    with pytest.raises(ValueError, match="in-memory dataset"):
        ImageFolderDataModule(str(imagewoof_dir), batched_augmentation=True, images_on_device=True)


def test_decoding_falls_back_to_pil_for_cmyk(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(path)  # red in CMYK
    image = load_image_tensor(path)
    assert image.shape == (3, 4, 6) and image.dtype == torch.uint8
    assert image[0].float().mean() > 200 and image[1:].float().mean() < 60
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(RuntimeError, match=r"broken\.jpg"):
        load_image_tensor(tmp_path / "broken.jpg")


def test_batched_parameters_depend_on_seed_rank_and_batch(cifar_images):
    """Each process draws its own parameters; a resumed run (same batch count) the same ones."""
    dm = CIFAR10DataModule("unused", batched_augmentation=True)
    batch = (cifar_images[:8], torch.zeros(8, dtype=torch.int64))

    def first_view(rank: int, ready: int) -> torch.Tensor:
        total = SimpleNamespace(ready=ready)
        loop = SimpleNamespace(
            epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(total=total))
        )
        dm.trainer = SimpleNamespace(global_rank=rank, fit_loop=loop)
        torch.manual_seed(0)  # the global RNG, seeded alike on every rank, must not matter
        return dm.augment_batch(batch)[0][0]

    assert torch.equal(first_view(0, 5), first_view(0, 5))
    assert not torch.equal(first_view(0, 5), first_view(1, 5))
    assert not torch.equal(first_view(0, 5), first_view(0, 6))


class _TwoPartData(InMemoryDataModule):
    """Like STL-10: the training split is a labelled and an unlabelled tensor, concatenated.

    Image ``i`` of the labelled part is filled with ``i`` (label ``i % 3``), image ``i`` of the
    unlabelled part with ``100 + i`` (label -1), so each image names itself.
    """

    default_image_size: ClassVar[int] = 8
    fixed_num_classes: ClassVar[int | None] = 3

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        values = torch.arange(12)
        return values.view(-1, 1, 1, 1).expand(-1, 3, 8, 8).to(torch.uint8), values % 3

    def build_dataset(self, split, transform):
        labelled = super().build_dataset(split, transform)
        if split != "train":
            return labelled
        values = 100 + torch.arange(8)
        images = values.view(-1, 1, 1, 1).expand(-1, 3, 8, 8).to(torch.uint8)
        unlabelled = TensorImageDataset(images, torch.full((8,), -1), transform)
        return ConcatDataset([labelled, unlabelled])


@pytest.mark.parametrize("subset", [None, 11])
def test_images_on_device_handles_concatenated_and_subset_data(subset):
    dm = _TwoPartData(
        "unused", batch_size=4, num_workers=0, train_subset=subset, batched_augmentation=True,
        images_on_device=True,
    )  # fmt: skip
    loader = dm.train_dataloader()
    positions, labels = loader.dataset.tensors
    values = dm.device_images(torch.device("cpu"))[positions, 0, 0, 0].long()
    expected = [int(dm.dataset("train")[i][0][0, 0, 0]) for i in range(len(dm.dataset("train")))]
    assert sorted(values.tolist()) == sorted(expected) and len(values) == (subset or 20)
    assert torch.equal(labels, torch.where(values < 100, values % 3, -1))
