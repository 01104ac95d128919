"""Bad input the other test files do not cover: images smaller than the crop, and a checkpoint
of another method.

Covered elsewhere: corrupt JPEG, image modes (grey, RGBA, CMYK, 16-bit) and empty class folders
(``tests/data/test_datasets.py``), a batch larger than the data (``tests/data/
test_datamodules.py``), ViT patch size (``tests/nn/test_backbones.py``), fewer probe classes than
labels (``tests/callbacks/test_online_probe_knn.py``), a queue smaller than the global batch
(``tests/nn/test_queue.py``, ``tests/callbacks/test_queue.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_ssl.checkpoint import check_checkpoint_method, checkpoint_method
from lightning_ssl.data import ImageFolderDataModule
from lightning_ssl.methods import BYOL, SimCLR
from tests.methods.helpers import SyntheticViews, quick_trainer

SMALL = 20  # pixels: smaller than every crop below


@pytest.fixture(scope="module")
def small_images(tmp_path_factory) -> Path:
    """``train`` and ``val`` ImageFolder trees of 20x20 RGB images, 2 classes x 4 images."""
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 256, (SMALL, SMALL, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


@pytest.mark.parametrize(("augmentation", "local_crops"), [("simclr", 0), ("dino", 2)])
def test_images_smaller_than_the_crop_are_upsampled_to_the_crop_size(
    small_images, augmentation, local_crops
):
    """RandomResizedCrop picks an area of the (small) image and resizes it up to the crop size,
    and evaluation resizes the short side up before centre-cropping: views have the crop size."""
    data = ImageFolderDataModule(
        str(small_images),
        augmentation=augmentation,
        image_size=64,
        num_local_crops=local_crops,
        local_size=32,
        batch_size=4,
        num_workers=0,
    )
    data.setup("fit")
    views, labels = next(iter(data.train_dataloader()))
    sizes = [64, 64] + [32] * local_crops
    assert [tuple(v.shape) for v in views] == [(4, 3, s, s) for s in sizes]
    assert all(torch.isfinite(v).all() for v in views) and labels.shape == (4,)
    images, _ = next(iter(data.val_dataloader()))
    assert images.shape[1:] == (3, 64, 64)


def _byol_checkpoint(path: Path) -> Path:
    data = SyntheticViews(n=8, batch_size=4)
    model = BYOL(
        backbone="timm:test_resnet",
        proj_hidden_dim=32,
        proj_dim=16,
        pred_hidden_dim=32,
        **data.link(),
    )
    trainer = quick_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, data)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def byol_ckpt(tmp_path_factory) -> Path:
    return _byol_checkpoint(tmp_path_factory.mktemp("ckpt") / "byol.ckpt")


def test_checkpoint_records_the_method(byol_ckpt):
    assert torch.load(byol_ckpt, weights_only=False)["lightning_ssl_method"] == "BYOL"


@pytest.mark.parametrize("stage", ["fit", "validate"])
def test_checkpoint_of_another_method_names_both(byol_ckpt, stage):
    data = SyntheticViews(n=8, batch_size=4)
    model = SimCLR(backbone="timm:test_resnet", proj_hidden_dim=32, proj_dim=16, **data.link())
    trainer = quick_trainer(max_steps=2)
    with pytest.raises(ValueError, match="written by BYOL, not SimCLR"):
        getattr(trainer, stage)(model, data, ckpt_path=byol_ckpt)


def test_checkpoint_method_falls_back_to_the_cli_class_path():
    """Checkpoints written by LightningCLI record ``_class_path`` in the hyperparameters."""
    cli_written = {"hyper_parameters": {"_class_path": "lightning_ssl.methods.BYOL"}}
    assert checkpoint_method(cli_written) == "BYOL"
    assert checkpoint_method({"hyper_parameters": {}}) is None
    check_checkpoint_method({}, "SimCLR")  # unknown writer: Lightning's own checks apply
    with pytest.raises(ValueError, match="written by BYOL, not SimCLR: load it with --model BYOL"):
        check_checkpoint_method(cli_written, "SimCLR")


def test_cli_refuses_a_checkpoint_of_another_method(byol_ckpt, cifar10_dir, tmp_path, monkeypatch):
    """LightningCLI would otherwise rebuild the checkpoint's own class and run BYOL silently."""
    from lightning_ssl.cli import run_cli

    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "configs/simclr/cifar10.yaml"
    with pytest.raises(ValueError, match="written by BYOL, not SimCLR"):
        run_cli(
            [
                "validate",
                f"--config={config}",
                f"--data.init_args.data_dir={cifar10_dir}",
                f"--ckpt_path={byol_ckpt}",
            ]
        )
