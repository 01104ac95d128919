"""Datamodules on the real shared data (CIFAR-10 JPEG, Fashion-MNIST, Imagewoof), and errors."""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningModule, Trainer

from lightning_ssl.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    STL10DataModule,
    ViewGroup,
)
from lightning_ssl.data.readers import read_image_folder


@pytest.fixture(scope="session")
def cifar_cache(cifar10_dir: Path, decoded_image_cache: Path) -> Path:
    """The session's cache with the CIFAR-10 JPEG tree decoded (~9 s on one core, once)."""
    cache = decoded_image_cache
    for split in ("train", "test"):
        read_image_folder(cifar10_dir / split, cache)
    return cache


@pytest.fixture
def cifar(cifar10_dir: Path, cifar_cache: Path):
    def make(**kwargs) -> CIFAR10DataModule:
        kwargs = {"batch_size": 8, "num_workers": 0, "cache_dir": str(cifar_cache)} | kwargs
        return CIFAR10DataModule(str(cifar10_dir), **kwargs)

    return make


def test_cifar10_counts_labels_and_cache_hit(cifar, cifar10_dir, cifar_cache):
    dm = cifar()
    dm.setup("fit")
    train, val = dm.dataset("train"), dm.dataset("val")
    assert (len(train), len(val), len(dm.dataset("train_eval"))) == (50_000, 10_000, 50_000)
    assert train.images.shape == (50_000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert torch.bincount(val.labels).tolist() == [1000] * 10
    assert dm.dataset("train_eval").images is train.images  # one copy for both transforms
    dm.setup("fit")
    assert dm.dataset("train") is train  # idempotent
    start = time.perf_counter()
    images, labels, classes = read_image_folder(cifar10_dir / "test", cifar_cache)
    assert time.perf_counter() - start < 3.0  # cache hit, no decoding
    assert torch.equal(images, val.images) and torch.equal(labels, val.labels)
    assert classes[:3] == ["airplane", "automobile", "bird"]


def test_cifar10_simclr_batches(cifar):
    dm = cifar(train_subset=64, val_subset=32)
    assert (dm.num_classes, dm.image_size, dm.num_global_crops, dm.num_local_crops) == (
        10,
        32,
        2,
        0,
    )
    views, labels = next(iter(dm.train_dataloader()))
    assert [tuple(v.shape) for v in views] == [(8, 3, 32, 32)] * 2
    assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 9
    assert not torch.allclose(views[0], views[1])
    images, val_labels = next(iter(dm.val_dataloader()))
    assert images.shape == (8, 3, 32, 32) and val_labels.shape == (8,)
    loader = dm.train_eval_dataloader()
    assert len(loader.dataset) == 64 and not loader.drop_last
    first = torch.tensor([loader.dataset[i][1] for i in range(8)])
    assert torch.equal(next(iter(loader))[1], first)  # in order, not shuffled
    assert torch.equal(next(iter(dm.test_dataloader()))[0], images)


def test_multi_crop_puts_global_crops_first(cifar):
    dm = cifar(augmentation="dino", num_local_crops=6, train_subset=16)
    assert (dm.num_global_crops, dm.num_local_crops) == (2, 6)
    views, _ = next(iter(dm.train_dataloader()))
    assert [v.shape[-1] for v in views] == [32, 32] + [14] * 6
    custom = [ViewGroup(2, 24), ViewGroup(3, 12, (0.05, 0.3), local=True)]
    dm = cifar(views=custom, train_subset=16)
    assert dm.image_size == 24 and dm.views == custom
    assert [v.shape[-1] for v in next(iter(dm.train_dataloader()))[0]] == [24, 24, 12, 12, 12]
    with pytest.raises(ValueError, match="image_size=32 differs"):
        cifar(views=custom, image_size=32)


def test_subsets_are_deterministic(cifar):
    def indices(**kwargs) -> list[int]:
        return cifar(train_subset=100, **kwargs).dataset("train").indices

    first = indices()
    assert first == indices() and len(set(first)) == 100
    assert first != indices(seed=1)
    dm = cifar(train_subset=100, val_subset=50)
    assert dm.dataset("train_eval").indices == first
    assert len(dm.dataset("val")) == 50


def test_batch_larger_than_the_data_is_rejected(cifar):
    with pytest.raises(ValueError, match=r"batch_size=16 is larger than the 10 training images"):
        cifar(batch_size=16, train_subset=10).train_dataloader()


def test_loader_workers_are_persistent(cifar):
    dm = cifar(num_workers=1, train_subset=16)
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.drop_last
    views, labels = next(iter(loader))
    assert len(views) == 2 and labels.shape == (8,)


def test_properties_need_no_data(tmp_path):
    nowhere = str(tmp_path / "missing")
    assert (CIFAR10DataModule(nowhere).num_classes, CIFAR100DataModule(nowhere).num_classes) == (
        10,
        100,
    )
    stl = STL10DataModule(nowhere, augmentation="swav", num_local_crops=6)
    assert (stl.num_classes, stl.image_size, stl.num_global_crops, stl.num_local_crops) == (
        10,
        96,
        2,
        6,
    )
    fmnist = FashionMNISTDataModule(nowhere)
    assert (fmnist.num_classes, fmnist.image_size, len(fmnist.mean), len(fmnist.std)) == (
        10,
        28,
        3,
        3,
    )
    assert CIFAR10DataModule(nowhere, augmentation="dino", num_local_crops=2).views[2].size == 14


def test_hparams_hold_base_and_subclass_arguments(tmp_path):
    dm = CIFAR10DataModule(str(tmp_path), download=False, batch_size=32, train_subset=5)
    assert dm.hparams.batch_size == 32 and dm.hparams.train_subset == 5
    assert dm.hparams.download is False and dm.hparams.augmentation == "simclr"


def test_datamodule_arguments_in_jsonargparse(tmp_path):
    parser = ArgumentParser()
    parser.add_class_arguments(ImageFolderDataModule, "data")
    config = parser.parse_args(
        [
            f"--data.data_dir={tmp_path}",
            "--data.num_classes=7",
            "--data.batch_size=4",
            '--data.views=[{"num": 2, "size": 64}]',
        ]
    )
    dm = parser.instantiate_classes(config).data
    assert (dm.num_classes, dm.batch_size, dm.image_size) == (7, 4, 64)
    assert "Training batch size per process" in parser.format_help()


def test_cifar_missing_dir_says_what_and_how(tmp_path):
    missing = tmp_path / "cifar"
    with pytest.raises(FileNotFoundError) as err:
        CIFAR10DataModule(str(missing)).setup()
    message = str(err.value)
    assert str(missing) in message and "cifar-10-batches-py" in message
    assert "download=True" in message and "train/" in message


def test_zip_only_dirs_say_unzip(tmp_path):
    for name in ("train.zip", "test.zip", "val.zip"):
        (tmp_path / name).write_bytes(b"PK")
    with pytest.raises(FileNotFoundError, match=r"train\.zip is not extracted yet: unzip it"):
        CIFAR10DataModule(str(tmp_path)).setup()
    with pytest.raises(FileNotFoundError, match=r"unzip train\.zip"):
        ImageFolderDataModule(str(tmp_path)).num_classes  # noqa: B018
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"unzip val\.zip"):
        ImageFolderDataModule(str(tmp_path)).dataset("val")


def test_fashion_mnist_counts_and_layouts(fashion_mnist_dir, tmp_path):
    dm = FashionMNISTDataModule(str(fashion_mnist_dir), batch_size=16, num_workers=0)
    train, val = dm.dataset("train"), dm.dataset("val")
    assert train.images.shape == (60_000, 3, 28, 28) and len(val) == 10_000
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey replicated
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(val.labels).tolist() == [1000] * 10
    views, _ = next(iter(dm.train_dataloader()))
    assert [tuple(v.shape) for v in views] == [(16, 3, 28, 28)] * 2
    raw = tmp_path / "FashionMNIST" / "raw"  # torchvision's layout, uncompressed
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(fashion_mnist_dir / f"{name}.gz") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    other = FashionMNISTDataModule(str(tmp_path)).dataset("val")
    assert torch.equal(other.images, val.images)
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*download=True"):
        FashionMNISTDataModule(str(tmp_path)).dataset("train")


def test_imagewoof_counts_and_dino_views(imagewoof_dir):
    dm = ImageFolderDataModule(
        str(imagewoof_dir), batch_size=2, num_workers=0, augmentation="dino", num_local_crops=8
    )
    assert (dm.num_classes, dm.image_size, dm.num_global_crops, dm.num_local_crops) == (
        10,
        224,
        2,
        8,
    )
    dm.setup("fit")
    train, val = dm.dataset("train"), dm.dataset("val")
    assert (len(train), len(val), len(dm.dataset("train_eval"))) == (9025, 3929, 9025)
    assert sorted({label for _, label in train.samples}) == list(range(10))
    views, labels = next(iter(dm.train_dataloader()))
    assert [tuple(v.shape) for v in views] == [(2, 3, 224, 224)] * 2 + [(2, 3, 96, 96)] * 8
    assert labels.shape == (2,)
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 224, 224)


def test_image_folder_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'woof'}.*<split>/<class>/<image>"):
        ImageFolderDataModule(str(tmp_path / "woof")).num_classes  # noqa: B018


class _TinyModel(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3 * 32 * 32, 10)

    def training_step(self, batch, batch_idx):
        views, labels = batch
        assert len(views) == 2
        return torch.nn.functional.cross_entropy(self.layer(views[0].flatten(1)), labels)

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        loss = torch.nn.functional.cross_entropy(self.layer(images.flatten(1)), labels)
        self.log("val/loss", loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_runs_the_datamodule_hooks(cifar):
    dm = cifar(train_subset=32, val_subset=16)
    trainer = Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(_TinyModel(), datamodule=dm)
    assert trainer.global_step == 2


def test_training_order_depends_on_seed_and_epoch_only(fashion_mnist_dir):
    """A resumed run sees the same batches: the order ignores the global RNG."""

    def first_labels(epoch: int, seed: int = 0) -> list[int]:
        dm = FashionMNISTDataModule(
            str(fashion_mnist_dir), batch_size=16, num_workers=0, train_subset=128, seed=seed
        )
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        torch.manual_seed(epoch + 1000)  # the global RNG must not matter
        return next(iter(loader))[1].tolist()

    assert first_labels(1) == first_labels(1)
    assert first_labels(1) != first_labels(2)
    assert first_labels(1) != first_labels(1, seed=3)


def test_explicit_views_refuse_num_local_crops_instead_of_ignoring_them(cifar10_dir):
    """A config with ``views`` (e.g. simclr/cifar10.yaml) given ``--num_local_crops 2`` used to
    train without local crops, silently."""
    from lightning_ssl.data import CIFAR10DataModule

    views = [{"num": 2, "size": 32}]
    with pytest.raises(ValueError, match="add a local group to views"):
        CIFAR10DataModule(str(cifar10_dir), views=views, num_local_crops=2)
    with pytest.raises(ValueError, match="num_local_crops/local_size would be ignored"):
        CIFAR10DataModule(str(cifar10_dir), views=views, local_size=16)
    assert CIFAR10DataModule(str(cifar10_dir), views=views).num_local_crops == 0
