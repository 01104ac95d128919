"""JPEG decoding on the training device (``decode_on_device``) against decoding in the workers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from PIL import Image

from lightning_ssl.data import ImageFolderDataModule
from lightning_ssl.data.datasets import ImageFolderDataset, pad_collate, scan_image_folder
from lightning_ssl.data.encoded import (
    EncodedBatch,
    EncodedImage,
    EncodedImageFolderDataset,
    collate_images,
    decode_batch,
)

MAX_SIDE = 150  # Imagewoof 160 px: every image has a side over it, so each one is shrunk


@pytest.fixture(scope="module")
def mixed_tree(imagewoof_dir: Path, tmp_path_factory) -> Path:
    """A 2-class tree of 10 Imagewoof images per class: colour and grey JPEGs, a CMYK JPEG and
    PNGs (decoded in the workers), in train/ and val/."""
    root = tmp_path_factory.mktemp("mixed")
    _, samples = scan_image_folder(imagewoof_dir / "train")
    paths = random.Random(0).sample([path for path, _ in samples], 24)
    for k, path in enumerate(paths):
        split, label = ("train", k % 2) if k < 20 else ("val", k % 2)
        folder = root / split / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.open(path)
        if k % 5 == 1:
            image.save(folder / f"{k}.png")
        elif k % 5 == 2:
            image.convert("L").save(folder / f"{k}.jpg", quality=90)
        elif k == 3:
            image.convert("CMYK").save(folder / f"{k}.jpg", quality=90)
        else:
            image.save(folder / f"{k}.jpg", quality=90)
    return root


def test_device_decoding_equals_worker_decoding_on_cpu(mixed_tree):
    """On a CPU device decode_jpeg is libjpeg-turbo, the workers' decoder: bitwise equal."""
    root = mixed_tree / "train"
    workers = ImageFolderDataset(root, as_tensor=True, max_image_side=MAX_SIDE)
    encoded = EncodedImageFolderDataset(root, max_image_side=MAX_SIDE)
    items = [encoded[k] for k in range(len(encoded))]
    kinds = [isinstance(item, EncodedImage) for item, _ in items]
    assert sum(kinds) == 15 and not all(kinds)  # PNGs and the CMYK JPEG decoded in the worker
    batch, labels = collate_images(items)
    assert isinstance(batch, EncodedBatch)
    images, sizes = decode_batch(batch, torch.device("cpu"))
    expected, expected_sizes, expected_labels = pad_collate([workers[k] for k in range(20)])
    assert torch.equal(sizes, expected_sizes) and int(sizes.max()) == MAX_SIDE
    assert torch.equal(images, expected) and torch.equal(labels, expected_labels)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvjpeg decoding needs a CUDA device")
def test_nvjpeg_decoding_is_within_rounding_of_the_cpu_decoder(mixed_tree):
    """nvjpeg rounds its IDCT and chroma upsampling differently from libjpeg-turbo: a few grey
    levels at some pixels, well under one level on average."""
    encoded = EncodedImageFolderDataset(mixed_tree / "train", max_image_side=None)
    batch, _ = collate_images([encoded[k] for k in range(len(encoded))])
    on_gpu, gpu_sizes = decode_batch(batch, torch.device("cuda"))
    on_cpu, cpu_sizes = decode_batch(batch, torch.device("cpu"))
    assert torch.equal(gpu_sizes.cpu(), cpu_sizes)
    difference = (on_gpu.cpu().float() - on_cpu.float()).abs()
    assert float(difference.mean()) < 1.0 and float(difference.quantile(0.999)) <= 8


class _ViewRecorder(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)
        self.batches: list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        views, labels, indices = batch
        self.batches.append((views, labels, indices))
        return torch.nn.functional.cross_entropy(self.layer(views[0].mean(dim=(2, 3))), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _training_views(root: Path, decode_on_device: bool) -> _ViewRecorder:
    dm = ImageFolderDataModule(
        str(root), batch_size=5, num_workers=2, augmentation="dino", image_size=64,
        num_local_crops=2, local_size=32, sample_indices=True, max_image_side=MAX_SIDE,
        batched_augmentation=True, decode_on_device=decode_on_device, seed=3,
    )  # fmt: skip
    model = _ViewRecorder()
    trainer = Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=0, accelerator="cpu",
        logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return model


def test_trainer_gets_the_same_views_with_decode_on_device(mixed_tree):
    """Through the Trainer, with worker processes and sample indices, the views made from
    device-decoded batches are the worker-decoded path's, bit for bit (CPU device)."""
    on_device = _training_views(mixed_tree, decode_on_device=True).batches
    in_workers = _training_views(mixed_tree, decode_on_device=False).batches
    assert len(on_device) == len(in_workers) == 2
    for (views, labels, indices), (expected, expected_labels, expected_indices) in zip(
        on_device, in_workers, strict=True
    ):
        assert torch.equal(indices, expected_indices) and torch.equal(labels, expected_labels)
        assert [tuple(v.shape) for v in views] == [(5, 3, 64, 64)] * 2 + [(5, 3, 32, 32)] * 2
        assert all(torch.equal(a, b) for a, b in zip(views, expected, strict=True))


def test_decode_on_device_needs_batched_augmentation(mixed_tree):
    with pytest.raises(ValueError, match="decode_on_device=True needs batched_augmentation"):
        ImageFolderDataModule(str(mixed_tree), decode_on_device=True)
